"""Configuration fields that are command-line options: one field, one flag, with the field's own help and choices.

A config field declared with :func:`option` carries its help text (and choices, and any older flag names);
:mod:`percept.interface.cli_options` turns every such field of :class:`~percept.model.perceptclip.ModelConfig` and
:class:`~percept.engine.train_config.TrainConfig` into a flag and a config-file key (jsonargparse), so ``percept train
--help`` is written by the dataclasses themselves and a new field is a new flag. Torch-free.

Renamed fields: configuration fields renamed since run directories were first written, so that old
``config.json`` files still load (read by :meth:`percept.model.perceptclip.ModelConfig.from_dict` and :meth:`percept.engine.runs.RunDir.read_config`).

``head`` became ``head_type`` (``mlp`` / ``linear``, Table 7) so that it is not confused with ``head_name``,
which head of a multi-dataset model a prediction comes from (§3.2).
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from typing import Any, Callable, Iterable

RENAMED_MODEL_FIELDS = {"head": "head_type"}


def upgrade_model_fields(model: dict) -> dict:
    """A copy of the model section ``model`` with renamed fields under their current names."""
    out = dict(model)
    for old, new in RENAMED_MODEL_FIELDS.items():
        if old in out:
            if new in out:
                raise ValueError(f"model configuration has both {old!r} (old name) and {new!r}; keep {new!r}")
            out[new] = out.pop(old)
    return out


def upgrade_run_config(config: dict) -> dict:
    """A run's ``config.json`` contents with its model section upgraded (:func:`upgrade_model_fields`)."""
    if isinstance(config.get("model"), dict):
        return {**config, "model": upgrade_model_fields(config["model"])}
    return config


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
           choices: Iterable[str] | Callable[[], Iterable[str]] | None = None, aliases: Iterable[str] = ()) -> Any:
    """A dataclass field with a help text, optional ``choices`` (or a function that lists them when a flag is
    made: a registry that would be heavy to import with the field) and older flag names ``aliases``
    (e.g. ``("--two-phase",)``)."""
    metadata = {"help": help, "choices": choices if choices is None or callable(choices) else tuple(choices),
                "aliases": tuple(aliases)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_fields(cls, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that become flags: those declared with :func:`option`, minus ``exclude``."""
    exclude = set(exclude)
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.name not in exclude]
