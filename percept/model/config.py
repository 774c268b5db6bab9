"""The model's configuration, torch-free: :class:`ModelConfig` (saved in a run's ``config.json`` and a hub folder's),
the paper's model as its defaults (§3.1), and which of its fields make a run's identity (:func:`model_key`).

A field is part of a run's identity — two runs that differ in it are different experiments, in every results table
and paper cell — unless it is listed in :data:`NOT_IN_RUN_KEY` with the reason. So a new field joins the identity
by being declared here, with no other edit.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Mapping

from ..core.options import option, upgrade_model_fields

HEAD_TYPES = ("mlp", "linear")
STRATEGIES = ("lora", "frozen", "full")


def backbone_names() -> tuple[str, ...]:
    """The registered backbones (:mod:`percept.model.backbones`; imported when a flag lists them: torch, timm)."""
    from .backbones import BACKBONES
    return tuple(BACKBONES)


@dataclass
class ModelConfig:
    backbone: str = option("clip_vit_l14", "vision encoder: clip_vit_l14 (paper), clip_vit_b16, clip_vit_b32, "
                           "dinov2_vit_l14, mae_vit_l16 (Tables A.7, A.8), tiny_clip_prior (the demo's shipped "
                           "prior), tiny_clip (tests)", choices=backbone_names)
    strategy: str = option("lora", "what trains: LoRA on q, k, v + head, the head alone, or everything (Table 6)",
                           choices=STRATEGIES)
    head_type: str = option("mlp", "prediction head (Table 7); which head of a multi-dataset model is "
                            "`head_name` elsewhere", choices=HEAD_TYPES)
    heads: dict[str, int] = field(default_factory=lambda: {"main": 1})   # head name -> number of outputs
    lora_r: int = option(16, "LoRA rank (Table A.10)")
    lora_alpha: float = option(8, "LoRA alpha (Table A.10)")
    lora_dropout: float = option(0.1, "LoRA dropout (official release)")
    head_hidden: tuple[int, int] = option((512, 256), "MLP head hidden widths (official release)")
    head_dropout: float = option(0.5, "MLP head dropout (official release)")
    pretrained: bool = option(True, "start from the backbone's pretrained weights (--no-pretrained or "
                              "--random-init: random weights, offline tests only)")
    weights_path: str | None = option(None, "local backbone weights file instead of the HF hub: timm's, OpenAI "
                                            "CLIP's (ViT-L-14.pt) or an open_clip checkpoint",
                                      aliases=("--weights",))
    backbone_kwargs: dict = field(default_factory=dict)   # timm overrides (used for inferred architectures)

    def __post_init__(self):
        from .backbones import (
            get_spec,  # the registry builds timm configurations: torch, at construction only
        )
        get_spec(self.backbone)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"unknown head_type {self.head_type!r}; choose one of {HEAD_TYPES}")
        if not self.heads or any(int(n) < 1 for n in self.heads.values()):
            raise ValueError(f"heads must map each head name to >= 1 outputs; got {self.heads!r}")
        self.head_hidden = tuple(self.head_hidden)
        if self.strategy == "lora" and (self.lora_r < 1 or self.lora_alpha <= 0):
            raise ValueError(f"LoRA needs r >= 1 and alpha > 0; got r={self.lora_r}, alpha={self.lora_alpha}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        data = upgrade_model_fields(data)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        try:
            return cls(**data)
        except (TypeError, AttributeError, KeyError, IndexError) as err:   # a hand-edited value of the wrong kind
            raise ValueError(f"a model configuration field has a value of the wrong kind ({type(err).__name__}: "
                             f"{err})") from None


# ModelConfig fields that are not a run's identity as they are: ``heads`` follows from the run's datasets;
# ``pretrained``, ``weights_path`` and ``backbone_kwargs`` are summed up as ``weights`` (:func:`run_weights`).
NOT_IN_RUN_KEY = ("heads", "pretrained", "weights_path", "backbone_kwargs")


def run_weights(model: Mapping) -> str:
    """``pretrained`` (the backbone's published weights), ``file`` (``weights_path``) or ``random`` (random
    initialisation, or an architecture changed by ``backbone_kwargs``): only the first two fill comparable cells."""
    if model.get("weights_path"):
        return "file"
    return "pretrained" if model.get("pretrained", True) and not model.get("backbone_kwargs") else "random"


def key_value(value):
    """A configuration value as a table cell that compares and groups: sequences as ``512x256``."""
    return "x".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


MODEL_KEY_FIELDS = ("backbone", "weights", *(f.name for f in fields(ModelConfig)
                                             if f.name not in NOT_IN_RUN_KEY and f.name != "backbone"))


def model_key(model: Mapping) -> dict:
    """The identity fields (:data:`MODEL_KEY_FIELDS`) of a model configuration (a ``config.json``'s ``model``
    section, or ``ModelConfig().to_dict()``); a field an older file lacks takes today's default."""
    model = upgrade_model_fields(dict(model))
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(ModelConfig)}
    return {name: run_weights(model) if name == "weights" else key_value(model.get(name, defaults[name]))
            for name in MODEL_KEY_FIELDS}


# The paper's model (§3.1): ModelConfig's defaults, with the published CLIP weights.
PAPER_MODEL = model_key({})
