"""Configuration dataclasses as command-line flags: one field, one flag, with the field's own help and choices.

A config field declared with :func:`option` carries its help text (and choices, and any older flag names);
:func:`add_flags` gives an argparse parser one flag per field (``lora_r`` -> ``--lora-r``), typed from the
field's annotation (``int``, ``float``, ``str``, ``bool`` -> ``--x/--no-x``, ``X | None``,
``tuple[int, int]`` -> two values, ``list[str]`` -> one or more, ``dict[str, float]`` -> ``KEY=VALUE ...``), defaulting to the field's default; :func:`values` reads the parsed
flags back as the dataclass's keyword arguments. So ``percept train --help`` is written by
:class:`~percept.model.ModelConfig` and :class:`~percept.train_config.TrainConfig` themselves, and a new
field is a new flag. Torch-free.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import MISSING
from typing import Any, Iterable

_SCALARS = {"int": int, "float": float, "str": str}


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
           choices: Iterable[str] | None = None, aliases: Iterable[str] = ()) -> Any:
    """A dataclass field with a help text, optional ``choices`` and older flag names ``aliases``
    (e.g. ``("--two-phase",)``)."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None,
                "aliases": tuple(aliases)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag_type(annotation: Any) -> tuple[str, type | None, int]:
    """``("scalar" | "bool" | "tuple" | "list" | "mapping", element (value) type, tuple length)`` of a field annotation
    (a string under ``from __future__ import annotations``)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in text.split("|") if p.strip() != "None"]
    if len(parts) == 1 and parts[0] == "bool":
        return "bool", None, 0
    if len(parts) == 1 and parts[0] in _SCALARS:
        return "scalar", _SCALARS[parts[0]], 0
    match = re.fullmatch(r"tuple\[(\w+)(?:, \1)*\]", parts[0]) if len(parts) == 1 else None
    if match and match.group(1) in _SCALARS:
        return "tuple", _SCALARS[match.group(1)], parts[0].count(",") + 1
    match = re.fullmatch(r"list\[(\w+)\]", parts[0]) if len(parts) == 1 else None
    if match and match.group(1) in _SCALARS:
        return "list", _SCALARS[match.group(1)], 0
    match = re.fullmatch(r"dict\[str, (\w+)\]", parts[0]) if len(parts) == 1 else None
    if match and match.group(1) in _SCALARS:
        return "mapping", _SCALARS[match.group(1)], 0
    raise TypeError(f"no command-line flag for a field of type {text!r}")


def _key_value(element: type):
    """argparse ``type`` of one ``KEY=VALUE`` item of a mapping flag: ``(key, element(value))``."""
    def parse(text: str) -> tuple[str, Any]:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
        try:
            return key.strip(), element(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a {element.__name__}") from None
    return parse


def flag_fields(cls, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that become flags: those declared with :func:`option`, minus ``exclude``."""
    exclude = set(exclude)
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.name not in exclude]


def add_flags(parser, cls, exclude: Iterable[str] = ()) -> None:
    """One flag per :func:`option` field of dataclass ``cls`` (except ``exclude``) on ``parser`` (a parser or
    an argument group)."""
    for f in flag_fields(cls, exclude):
        kind, element, length = _flag_type(f.type)
        default = f.default if f.default is not MISSING else f.default_factory()
        names = ["--" + f.name.replace("_", "-"), *f.metadata["aliases"]]
        help_text = f.metadata["help"] + ("" if "default" in f.metadata["help"] else " (default: %(default)s)")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == "list":
            kwargs.update(type=element, nargs="+")
        elif kind == "mapping":
            kwargs.update(type=_key_value(element), nargs="+", metavar="KEY=VALUE")
        else:
            kwargs["type"] = element
            if kind == "tuple":
                kwargs.update(nargs=length, metavar=tuple(element.__name__.upper() for _ in range(length)))
        if f.metadata["choices"] is not None:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(*names, **kwargs)


def values(cls, args: argparse.Namespace, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that :func:`add_flags` put on ``args``."""
    out = {}
    for f in flag_fields(cls, exclude):
        value = getattr(args, f.name)
        if isinstance(value, list) and _flag_type(f.type)[0] == "mapping":
            keys = [k for k, _ in value]
            twice = sorted({k for k in keys if keys.count(k) > 1})
            if twice:
                raise ValueError(f"--{f.name.replace('_', '-')} names {', '.join(twice)} more than once")
            value = dict(value)
        kind = _flag_type(f.type)[0]
        out[f.name] = list(value) if kind == "list" else tuple(value) if isinstance(value, list) else value
    return out
