"""Configuration fields that are command-line options: one field, one flag, with the field's own help and choices.

A config field declared with :func:`option` carries its help text (and choices, and any older flag names);
:mod:`percept.cli_options` turns every such field of :class:`~percept.model.ModelConfig` and
:class:`~percept.train_config.TrainConfig` into a flag and a config-file key (jsonargparse), so ``percept train
--help`` is written by the dataclasses themselves and a new field is a new flag. Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from typing import Any, Iterable


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
           choices: Iterable[str] | None = None, aliases: Iterable[str] = ()) -> Any:
    """A dataclass field with a help text, optional ``choices`` and older flag names ``aliases``
    (e.g. ``("--two-phase",)``)."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None,
                "aliases": tuple(aliases)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_fields(cls, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that become flags: those declared with :func:`option`, minus ``exclude``."""
    exclude = set(exclude)
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.name not in exclude]
