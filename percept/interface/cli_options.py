"""The options of ``percept train``, ``percept sweep`` and ``percept params``, parsed by jsonargparse
(:func:`parse_options`); :mod:`percept.interface.cli_config` makes the run's configuration of them.

Flags: one per field of :class:`~percept.model.perceptclip.ModelConfig` and :class:`~percept.engine.train_config.TrainConfig` declared
with :func:`percept.core.options.option` (its help, choices and older names; ``lora_r`` -> ``--lora-r``), typed from the
field's annotation and checked by jsonargparse; a model field's value lives under ``model.`` (``--lora-r`` sets
``model.lora_r``), as in a run's ``config.json``. A new field is a new flag and a new config-file key.

Config files (``--config FILE``, YAML or JSON) hold what a run's ``config.json`` holds (every run directory also has
it as ``config.yaml``, which starts the same run again)::

    data:
      - {dataset: koniq10k, root: /data/koniq10k}
    model: {backbone: clip_vit_l14, lora_r: 16, lora_alpha: 8}
    batch_size: 32
    loggers: [csv, tensorboard]
    sweep: {lrs: [5.0e-5, 1.0e-4, 5.0e-4, 1.0e-3], splits: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}

or, for one dataset, the flat form of the flags (``dataset: koniq10k``, ``root: /data/koniq10k``). A file or the
command line may name a preset (``preset: demo``, ``--preset demo``: :mod:`percept.engine.presets`), whose values
come before the file's. jsonargparse reads and type-checks the defaults, the file and the typed flags; the typed
flags win wherever they stand. Errors name
the key and the file. A file holds a run's settings only (not ``run_dir``, ``print_config``, launcher options).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.options import flag_fields

SWEEP_KEYS = ("lrs", "splits", "variants", "out")
DATA_KEYS = ("dataset", "root", "manifest", "task", "classes", "label_range")
WEIGHT_FIELDS = ("pretrained", "weights_path")   # ModelConfig fields that choose the encoder's weights


class OptionsError(ValueError):
    """A flag or a config file that cannot be used; the message names the key (and the file)."""


@dataclass
class Options:
    """What a ``train`` / ``sweep`` / ``params`` command line says."""

    command: str
    values: dict                                   # every option, nested (model.*, sweep.*), defaults filled in
    typed: set[str] = field(default_factory=set)   # the options typed on the command line (dotted names)
    config_file: Path | None = None
    file_values: dict = field(default_factory=dict)   # what the config file set (nested)
    typed_values: dict = field(default_factory=dict)  # what the typed flags set (nested)

    def __getattr__(self, name: str):              # args.lr, args.run_dir, args.partition, ... (flat options)
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


# ----------------------------------------------------------------------------------------- flags from fields
def unwrap_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _flag_kwargs(hint, default) -> dict:
    """argparse keywords of a field of type ``hint``: a bool is ``--x/--no-x``, a list one or more values, a tuple
    its length of values, a mapping a YAML mapping (``{iqa: 1}``; ``KEY=VALUE ...`` is rewritten to it, see
    :func:`_mapping_argv`); scalars and ``X | None`` are jsonargparse's typed values."""
    base = unwrap_optional(hint)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is list and args and args[0] in (int, float, str):
        return {"type": args[0], "nargs": "+", "default": list(default) if default is not None else None}
    if origin is tuple and args and all(a is args[0] for a in args) and args[0] in (int, float, str):
        return {"type": args[0], "nargs": len(args), "metavar": tuple(args[0].__name__.upper() for _ in args),
                "default": list(default) if default is not None else None}   # jsonargparse wants lists
    if origin is dict:
        return {"type": hint, "metavar": "KEY=VALUE"}
    if base in (int, float, str):
        return {"type": hint}
    raise TypeError(f"no command-line flag for a field of type {hint!r}")


def add_field_flags(parser, cls, prefix: str = "", exclude=()) -> None:
    """One flag per :func:`~percept.core.options.option` field of dataclass ``cls`` (but ``exclude``) on ``parser`` (a
    jsonargparse parser or group), its value under ``prefix`` + field name; the other fields of ``cls`` are
    config-file keys only (e.g. ``model.heads``, ``protocol``), so that a run's ``config.yaml`` parses."""
    hints = typing.get_type_hints(cls)
    flagged = {f.name for f in flag_fields(cls)}
    for f in flag_fields(cls, exclude):
        default = f.default if f.default is not MISSING else f.default_factory()
        kwargs = {"default": default, "help": f.metadata["help"], **_flag_kwargs(hints[f.name], default)}
        choices = f.metadata["choices"]
        if choices is not None:
            kwargs["choices"] = list(choices() if callable(choices) else choices)
        parser.add_argument("--" + f.name.replace("_", "-"), *f.metadata["aliases"], dest=prefix + f.name, **kwargs)
    for f in dataclasses.fields(cls):
        if f.name not in flagged and f.name not in exclude and f.name not in ("data", "model"):
            parser.add_argument("--" + prefix + f.name, type=Any, default=None, help=argparse.SUPPRESS)


_PAIR = re.compile(r"[A-Za-z_][\w.-]*=.*")   # KEY=VALUE, KEY a name (so that a path like runs/lr=1e-3 is not one)


def mapping_flags() -> set[str]:
    """The flags of the mapping fields (``--task-weights``): they take ``KEY=VALUE`` pairs."""
    from ..engine.train_config import TrainConfig
    from ..model.perceptclip import ModelConfig  # torch (see build_parser)
    return {"--" + f.name.replace("_", "-") for cls in (ModelConfig, TrainConfig) for f in flag_fields(cls)
            if typing.get_origin(unwrap_optional(typing.get_type_hints(cls)[f.name])) is dict}


def _mapping_argv(argv: list[str], flags: set[str]) -> list[str]:
    """``--task-weights iqa=1 emotion=0.5`` (or ``--task-weights=iqa=1``; the flags' documented form) as the JSON
    mapping jsonargparse reads, each value a number; a YAML/JSON mapping typed as such is left alone."""
    out, i = [], 0
    while i < len(argv):
        flag, eq, inline = argv[i].partition("=")
        if flag not in flags:
            out.append(argv[i])
            i += 1
            continue
        items, i = ([inline] if eq else []), i + 1
        while i < len(argv) and _PAIR.fullmatch(argv[i]):
            items.append(argv[i])
            i += 1
        if not items:                              # a mapping as YAML/JSON, or nothing (jsonargparse says so)
            out.append(flag)
            continue
        pairs: dict[str, float] = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not _PAIR.fullmatch(item):
                raise OptionsError(f"{flag}: expected KEY=VALUE pairs, got {item!r}")
            if key in pairs:
                raise OptionsError(f"{flag} names {key} more than once")
            try:
                pairs[key] = float(value)
            except ValueError:
                raise OptionsError(f"{flag}: {item!r}: {value!r} is not a number") from None
        out += [flag, json.dumps(pairs)]
    return out


# ----------------------------------------------------------------------------------------- the parsers
def add_data_flags(parser, many: bool = True) -> None:
    """The dataset flags (``--dataset``, ``--root``, ...): repeatable for a run (``many``), one for ``evaluate``."""
    action = "append" if many else "store"
    parser.add_argument("--dataset", action=action, required=not many, default=None, help="dataset name (a card in "
                        "data_manifests/cards, or synthetic_iqa / synthetic_strength / synthetic_distortion), or "
                        "csv:PATH, a CSV of your own (columns image,label[,split1..]) with --task"
                        + ("; repeat for multi-dataset training" if many else ""))
    parser.add_argument("--root", action=action, default=None, help="dataset folder (the official download, where "
                        "`percept prepare` wrote percept_manifest.csv; synthetic sets are generated there; a CSV's "
                        "image paths are under it, default: the CSV's folder)")
    parser.add_argument("--manifest", action=action, default=None, help="manifest CSV (default "
                        "ROOT/percept_manifest.csv)")
    parser.add_argument("--task", choices=["iqa", "memorability", "emotion"], default=None,
                        help="what a csv:PATH dataset's labels are (its protocol, loss and transforms follow)")
    parser.add_argument("--classes", default=None, help="a csv:PATH emotion dataset's class names in order, "
                        "comma-separated (default: the sorted names in its label column)")
    parser.add_argument("--label-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                        help="a csv:PATH regression dataset's valid label range (default: any number for iqa, "
                        "[-1, 1] for memorability)")


DESCRIPTIONS = {
    "train": "Train PerceptCLIP with the paper's protocol (AdamW, early stopping on validation, best epoch kept, "
             "test with the task's test transform) into RUN. Re-running the same command resumes an interrupted "
             "run; `percept train RUN` alone resumes RUN from its config.json. --config FILE: a run file (a run's "
             "config.yaml, or the flags' keys); typed flags override it; --print_config shows the result.",
    "sweep": "Run the grid under --out/<datasets>/<variant>/split<k>/lr<lr>, on every local GPU (one run per GPU at a "
             "time) or in-process on CPU; finished runs are skipped. Then `percept results OUT` selects the LR by "
             "validation.",
    "params": "Build a model with random weights and count LoRA, heads, trainable and total parameters.",
}


def build_parser(command: str):
    """The jsonargparse parser of ``percept COMMAND`` (train, sweep or params)."""
    from jsonargparse import ArgumentParser  # here: percept bench runs without it (docs/performance.md)

    from ..engine.train_config import EXECUTION_FIELDS, TrainConfig
    from ..model.perceptclip import (
        ModelConfig,  # torch: only when one of these commands runs, not for `percept --help`
    )
    parser = ArgumentParser(prog=f"percept {command}", description=DESCRIPTIONS[command], exit_on_error=False,
                            env_prefix=False, default_env=False, print_config=None)
    if command == "params":
        add_field_flags(parser.add_argument_group("model"), ModelConfig, "model.", exclude=WEIGHT_FIELDS)
        parser.add_argument("--outputs", type=int, default=1, help="head outputs (1 for regression, 8 for EmoSet)")
        return parser
    if command == "train":
        parser.add_argument("run_dir", nargs="?", metavar="RUN", default=None, help="output folder of the run")
        parser.add_argument("--run-dir", dest="run_dir_flag", metavar="RUN", default=None, help="= RUN")
    from ..engine.presets import PRESETS
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), help="start from a registered preset: "
                        + "; ".join(f"{p.name}: {p.description.split(':')[0]}" for p in PRESETS.values())
                        + " (default: the dataclasses' defaults, the paper's); a file's keys and flags override it")
    parser.add_argument("--config", action="config", help="a run file (YAML/JSON: config.json's fields, e.g. a run's "
                        "config.yaml, or the flags' keys, e.g. `dataset: koniq10k`, `root: DIR`)")
    parser.add_argument("--print_config", "--print-config", action="store_true",
                        help="print the effective configuration (a config file) and exit")
    data = parser.add_argument_group("data")
    add_data_flags(data)
    data.add_argument("--data", type=typing.Optional[list[dict]], default=None, help=argparse.SUPPRESS)
    model = parser.add_argument_group("model (ablations: Tables 6, 7, A.7, A.8, A.10, A.11)")
    add_field_flags(model, ModelConfig, "model.")
    model.add_argument("--random-init", dest="model.pretrained", action="store_false", default=True,
                       help="= --no-pretrained")
    add_field_flags(parser.add_argument_group("protocol (paper §3.1)"), TrainConfig, exclude=EXECUTION_FIELDS)
    add_field_flags(parser.add_argument_group("execution (does not change results)"), TrainConfig,
                    exclude=[f.name for f in dataclasses.fields(TrainConfig) if f.name not in EXECUTION_FIELDS])
    sweep = parser.add_argument_group("sweep (a sweep file's `sweep:` section)")
    for key, hint in (("lrs", list[float]), ("splits", list[int]), ("variants", list[dict]), ("out", str)):
        sweep.add_argument(f"--sweep.{key}", type=typing.Optional[hint], default=None, help=argparse.SUPPRESS)
    if command == "sweep":
        sweep.add_argument("--out", default=None, help="root folder of the sweep (or `out` in the file's sweep section)")
        sweep.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates (default: the paper's "
                           "5e-5 1e-4 5e-4 1e-3)")
        sweep.add_argument("--splits", type=int, nargs="+", default=None, help="splits (default: 1)")
        sweep.add_argument("--variant", action="append", default=None, help='model overrides as JSON, e.g. '
                           '\'{"strategy": "frozen"}\' (repeatable)')
        sweep.add_argument("--gpus", type=int, nargs="*", default=None, help="GPU indices (default: all visible)")
        from ..study.launch import (
            add_launcher_args,  # submitit: for `percept sweep` alone
        )
        add_launcher_args(parser)
    return parser


# ----------------------------------------------------------------------------------------- parsing
def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key in ("model", "sweep"):
            out.update(_flat(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def _plain(namespace) -> dict:
    """A jsonargparse namespace as plain nested dicts, without its config-file bookkeeping."""
    values = namespace.as_dict()
    values.pop("__path__", None)
    values.pop("config", None)
    return values


def file_keys() -> tuple[set[str], set[str]]:
    """(top-level keys, ``model`` keys) a config file may hold: a run's settings, never the command's own
    (``run_dir``, ``print_config``, a sweep's launcher, ...)."""
    from ..engine.train_config import TrainConfig
    from ..model.perceptclip import ModelConfig  # torch (see build_parser)
    top = {f.name for f in dataclasses.fields(TrainConfig)} | set(DATA_KEYS) | {"sweep", "preset"}
    return top, {f.name for f in dataclasses.fields(ModelConfig)}


def _read_config_file(path: Path) -> None:
    """One-line errors, naming the key, for a file that is missing, not YAML/JSON, not a mapping, or holds a key or
    a section of the wrong kind (before jsonargparse checks the values' types)."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise OptionsError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                           f"{' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise OptionsError(f"{path}: expected a mapping of settings (data, model, lr, ...), got {type(data).__name__}")
    top, model = file_keys()
    for key in data:
        if key not in top:
            hint = " (a model setting: put it under `model:`)" if key in model else ""
            raise OptionsError(f"{path}: unknown key '{key}'{hint}")
    for key in ("model", "sweep"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise OptionsError(f"{path}: `{key}` must be a mapping ({key}: {{...}}), got {data[key]!r}")
    unknown = set(data.get("model") or {}) - model
    if unknown:
        raise OptionsError(f"{path}: unknown key 'model.{sorted(unknown)[0]}'")
    if set(data.get("sweep") or {}) - set(SWEEP_KEYS):
        raise OptionsError(f"{path}: `sweep` takes {', '.join(SWEEP_KEYS)}; got {data['sweep']!r}")
    entries = data.get("data")
    if entries is not None and (not isinstance(entries, list) or not entries
                                or not all(isinstance(e, dict) for e in entries)):
        raise OptionsError(f"{path}: `data` must be a list of {{dataset, root, ...}}, got {entries!r}")
    if entries is not None and data.get("dataset") is not None:
        raise OptionsError(f"{path}: give `data` (a list of {{dataset, root}}) or `dataset` and `root`, not both")


def _argument_error(err: Exception, where: str | None) -> OptionsError:
    """jsonargparse's (multi-line) error as one line, naming the key and ``where`` (the file; None: the flags)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(err).__name__
    text = re.sub(r"Option '([^']+)' is not accepted", r"unknown key '\1'", text)
    text = re.sub(r'Parser key "([^"]+)":', r"\1:", text)
    text = re.sub(r"Expected an? <class '(\w+)'>\. Got value: (.*)", r"expected a value of type \1, got \2", text)
    text = text.replace(f"{where}: ", "") if where else text      # jsonargparse may name the file itself
    return OptionsError(f"{where}: {text}" if where else text)


def _merged(*layers: dict) -> dict:
    """Later layers over earlier ones; the ``model`` and ``sweep`` sections key by key."""
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if key in ("model", "sweep") and isinstance(value, dict):
                out[key] = {**(out.get(key) or {}), **value}
            else:
                out[key] = value
    return out


def parse_options(command: str, argv: list[str]) -> Options:
    """The options of ``percept COMMAND ARGV``: the defaults, the config file over them, the typed flags over both
    (wherever ``--config`` stands). jsonargparse reads and type-checks each of the three."""
    from jsonargparse import ArgumentError  # here: as in build_parser

    parser = build_parser(command)
    argv = _mapping_argv(list(argv), mapping_flags())
    files, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--config":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise OptionsError("--config needs a file (YAML or JSON)")
            files.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--config="):
            files.append(argv[i].partition("=")[2])
        else:
            rest.append(argv[i])
        i += 1
    if len(files) > 1:
        raise OptionsError(f"--config given {len(files)} times; give one file (flags override it)")
    config_file, file_values = None, {}
    if files:
        config_file = Path(files[0]).expanduser().resolve()
        _read_config_file(config_file)
        try:
            file_values = _plain(parser.parse_args(["--config", str(config_file)], defaults=False))
        except (ArgumentError, TypeError, ValueError) as err:
            raise _argument_error(err, str(config_file)) from None
    try:
        typed = _plain(parser.parse_args(rest, defaults=False))
        defaults = _plain(parser.parse_args([]))
    except (ArgumentError, TypeError, ValueError) as err:
        raise _argument_error(err, None) from None
    preset_name = typed.get("preset") or file_values.get("preset")
    if preset_name is not None:
        from ..engine.presets import get_preset
        try:
            preset = get_preset(preset_name).values()
        except ValueError as err:
            raise OptionsError(f"{config_file if 'preset' not in typed else '--preset'}: {err}") from None
    else:
        preset = {}
    # defaults < the preset < the file < the typed flags
    values = _merged(defaults, preset, {k: v for k, v in file_values.items() if k not in DATA_KEYS}, typed)
    options = Options(command, values, set(_flat(typed)), config_file, file_values, typed)
    if command == "train":
        run_dir, flag = values.get("run_dir"), values.get("run_dir_flag")
        if run_dir and flag and Path(run_dir) != Path(flag):
            raise OptionsError(f"two run directories given ({run_dir} and {flag}); give one, after the command")
        values["run_dir"] = run_dir or flag
        if values["run_dir"] is None:
            raise OptionsError("no run directory given: percept train RUN ...")
    return options
