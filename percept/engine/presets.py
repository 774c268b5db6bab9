"""Named starting points for a run, registered once (as timm registers its pretrained configurations):
``paper`` (the paper's protocol) and ``demo`` (the embedded demo's budget). Everything that configures a run asks
for a preset by name and overrides fields: ``percept train --preset demo --lr 5e-4``, a config file's ``preset:``
key, the notebooks' ``preset`` and ``overrides`` parameters, ``percept demo``, reproduce.yaml's ``preset``.

A preset holds :class:`~percept.engine.train_config.TrainConfig` values and, under ``model``,
:class:`~percept.model.config.ModelConfig` values; what it leaves out keeps the dataclasses' defaults, which are the
paper's. ``register_preset`` adds one (a lab's own budget, a cluster's batch size).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from ..model.config import ModelConfig
from .train_config import TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    train: Mapping[str, object] = field(default_factory=dict)    # TrainConfig fields
    model: Mapping[str, object] = field(default_factory=dict)    # ModelConfig fields

    def values(self) -> dict:
        """The preset as config-file values: TrainConfig fields, ModelConfig fields under ``model``."""
        return {**self.train, **({"model": dict(self.model)} if self.model else {})}


PRESETS: dict[str, Preset] = {}
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"data", "model"}
MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


def register_preset(name: str, description: str, *, model: Mapping | None = None, **train) -> Preset:
    """Register a preset: TrainConfig values as keywords, ModelConfig values in ``model``; unknown fields refused."""
    preset = Preset(name, description, dict(train), dict(model or {}))
    _check_fields(preset.train, preset.model, f"preset {name!r}")
    PRESETS[name] = preset
    return preset


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def split_overrides(overrides: Mapping) -> tuple[dict, dict]:
    """``(train, model)`` values of ``overrides``: ModelConfig fields may be given flat (``lora_r=8``) or under
    ``model``; an unknown field is refused, naming it."""
    overrides = dict(overrides)
    model = dict(overrides.pop("model", None) or {})
    train = {}
    for key, value in overrides.items():
        (model if key in MODEL_FIELDS and key not in TRAIN_FIELDS else train)[key] = value
    _check_fields(train, model, "overrides")
    return train, model


def preset_config(preset: str, data, **overrides) -> TrainConfig:
    """The run configuration of ``preset`` on ``data`` (DataConfigs or their dicts), with ``overrides`` (TrainConfig
    fields; ModelConfig fields flat or under ``model``) applied last."""
    base = get_preset(preset)
    train, model = split_overrides(overrides)
    return TrainConfig(data=list(data), model=ModelConfig.from_dict({**base.model, **model}), **{**base.train, **train})


def _check_fields(train: Mapping, model: Mapping, where: str) -> None:
    unknown = sorted(set(train) - TRAIN_FIELDS) + sorted(f"model.{k}" for k in set(model) - MODEL_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; a TrainConfig or ModelConfig field "
                         f"(percept params lists them)")


register_preset("paper", "the paper's protocol (§3.1, App. A.1): CLIP ViT-L/14 from its published weights, LoRA "
                "r=16, alpha=8 on q, k, v + the MLP head, AdamW (lr from the grid 5e-5..1e-3, weight decay 1e-4), "
                "batch 32, at most 40 epochs with patience 12, 15 IQA test crops: the dataclasses' defaults")
register_preset("demo", "the embedded demo's budget (CPU, minutes): the shipped tiny image-text prior "
                "(tiny_clip_prior) + LoRA, lr 1e-3, batch 16, at most 8 epochs with the paper's patience 12 (a "
                "demo run trains all 8 and keeps its best validation epoch), 3 IQA test crops",
                model={"backbone": "tiny_clip_prior"}, lr=1e-3, batch_size=16, max_epochs=8, test_crops=3)


def build_model(config: ModelConfig | None = None, *, preset: str | None = None, **overrides):
    """``percept.build_model``: the model of a preset or a config, with ModelConfig fields as ``overrides``.

    ``build_model(preset="paper")`` is the paper's model (CLIP ViT-L/14 from its published weights, LoRA r=16,
    alpha=8 on q, k, v, the MLP head); ``build_model(preset="demo")`` the offline demo's (the shipped
    ``tiny_clip_prior``); ``build_model(preset="paper", heads={"emoset": 8})`` one of its variants. Without a preset
    or config: the dataclass defaults, which are the paper's. A TrainConfig field among ``overrides`` is refused.
    """
    from ..model.perceptclip import build_model as build   # torch only when a model is built: this module stays light
    if preset is not None:
        if config is not None:
            raise ValueError("build_model: give a preset or a config, not both")
        train, model = split_overrides(overrides)
        if train:
            raise ValueError(f"build_model: {', '.join(sorted(train))} configure training, not the model "
                             f"(a TrainConfig field; pass it to the run's config)")
        return build(ModelConfig.from_dict({**get_preset(preset).model, **model}))
    return build(config, **overrides)
