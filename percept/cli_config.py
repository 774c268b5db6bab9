"""The options of ``percept train``, ``percept sweep`` and ``percept params``, parsed by jsonargparse.

Flags: one per field of :class:`~percept.model.ModelConfig` and :class:`~percept.train_config.TrainConfig` declared
with :func:`percept.options.option` (its help, choices and older names; ``lora_r`` -> ``--lora-r``), typed from the
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

or, for one dataset, the flat form of the flags (``dataset: koniq10k``, ``root: /data/koniq10k``). Flags typed on the
command line override the file wherever they stand (it is read first); ``--dataset``/``--root`` replace its data;
relative paths in a file are taken from the file's folder. ``--print_config`` prints the effective configuration
in the file's form and exits. Errors name the key and the file.
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
from jsonargparse import ArgumentError, ArgumentParser

from .options import flag_fields

SWEEP_KEYS = ("lrs", "splits", "variants", "out")
DATA_KEYS = ("dataset", "root", "manifest", "task", "classes", "label_range")
WEIGHT_FIELDS = ("pretrained", "weights_path")   # ModelConfig fields that choose the encoder's weights
COMMANDS = ("train", "sweep", "params")


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

    def __getattr__(self, name: str):              # args.lr, args.run_dir, args.partition, ... (flat options)
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


# ----------------------------------------------------------------------------------------- flags from fields
def _unwrap_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _flag_kwargs(hint, default) -> dict:
    """argparse keywords of a field of type ``hint``: a bool is ``--x/--no-x``, a list one or more values, a tuple
    its length of values, a mapping a YAML mapping (``{iqa: 1}``; ``KEY=VALUE ...`` is rewritten to it, see
    :func:`_mapping_argv`); scalars and ``X | None`` are jsonargparse's typed values."""
    base = _unwrap_optional(hint)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is list and args and args[0] in (int, float, str):
        return {"type": args[0], "nargs": "+", "default": list(default) if default is not None else None}
    if origin is tuple and args and all(a is args[0] for a in args) and args[0] in (int, float, str):
        return {"type": args[0], "nargs": len(args), "metavar": tuple(args[0].__name__.upper() for _ in args),
                "default": list(default) if default is not None else None}   # jsonargparse wants lists
    if origin is dict or base in (int, float, str):
        return {"type": hint}
    raise TypeError(f"no command-line flag for a field of type {hint!r}")


def add_field_flags(parser, cls, prefix: str = "", exclude=()) -> None:
    """One flag per :func:`~percept.options.option` field of dataclass ``cls`` (but ``exclude``) on ``parser`` (a
    jsonargparse parser or group), its value under ``prefix`` + field name; the other fields of ``cls`` are
    config-file keys only (e.g. ``model.heads``, ``protocol``), so that a run's ``config.yaml`` parses."""
    hints = typing.get_type_hints(cls)
    flagged = {f.name for f in flag_fields(cls)}
    for f in flag_fields(cls, exclude):
        default = f.default if f.default is not MISSING else f.default_factory()
        kwargs = {"default": default, "help": f.metadata["help"], **_flag_kwargs(hints[f.name], default)}
        if f.metadata["choices"] is not None:
            kwargs["choices"] = list(f.metadata["choices"])
        parser.add_argument("--" + f.name.replace("_", "-"), *f.metadata["aliases"], dest=prefix + f.name, **kwargs)
    for f in dataclasses.fields(cls):
        if f.name not in flagged and f.name not in exclude and f.name not in ("data", "model"):
            parser.add_argument("--" + prefix + f.name, type=Any, default=None, help=argparse.SUPPRESS)


def _mapping_argv(argv: list[str], flags: set[str]) -> list[str]:
    """``--task-weights iqa=1 emotion=0.5`` (the flag's documented form) as ``--task-weights {iqa: 1, emotion: 0.5}``,
    the YAML mapping jsonargparse reads; a YAML/JSON mapping typed as such is left alone."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in flags:
            pairs = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" in argv[i + 1]:
                i += 1
                key, _, value = argv[i].partition("=")
                if not key.strip():
                    raise OptionsError(f"{out[-1]}: expected KEY=VALUE, got {argv[i]!r}")
                if key.strip() in [k for k, _ in pairs]:
                    raise OptionsError(f"{out[-1]} names {key.strip()} more than once")
                pairs.append((key.strip(), value))
            if pairs:
                out.append("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}")
        i += 1
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
    from .model import ModelConfig            # torch: only when one of these commands runs, not for `percept --help`
    from .train_config import EXECUTION_FIELDS, TrainConfig
    parser = ArgumentParser(prog=f"percept {command}", description=DESCRIPTIONS[command], exit_on_error=False,
                            env_prefix=False, default_env=False, print_config=None)
    if command == "params":
        add_field_flags(parser.add_argument_group("model"), ModelConfig, "model.", exclude=WEIGHT_FIELDS)
        parser.add_argument("--outputs", type=int, default=1, help="head outputs (1 for regression, 8 for EmoSet)")
        return parser
    if command == "train":
        parser.add_argument("run_dir", nargs="?", metavar="RUN", default=None, help="output folder of the run")
        parser.add_argument("--run-dir", dest="run_dir_flag", metavar="RUN", default=None, help="= RUN")
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
        from .launch import add_launcher_args   # submitit: for `percept sweep` alone
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


def _read_config_file(path: Path) -> None:
    """One-line errors for a file that is missing, not YAML/JSON, or not a mapping (before jsonargparse reads it)."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise OptionsError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                           f"{' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise OptionsError(f"{path}: expected a mapping of settings (data, model, lr, ...), got {type(data).__name__}")
    sweep = data.get("sweep")
    if sweep is not None and (not isinstance(sweep, dict) or set(sweep) - set(SWEEP_KEYS)):
        raise OptionsError(f"{path}: `sweep` takes {', '.join(SWEEP_KEYS)}; got {sweep!r}")


def _argument_error(err: Exception, where: str | None) -> OptionsError:
    """jsonargparse's (multi-line) error as one line, naming the key and ``where`` (the file; None: the flags)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(err).__name__
    text = re.sub(r"Option '([^']+)' is not accepted", r"unknown key '\1'", text)
    text = re.sub(r'Parser key "([^"]+)":', r"\1:", text)
    text = re.sub(r"Expected an? <class '(\w+)'>\. Got value: (.*)", r"expected a value of type \1, got \2", text)
    return OptionsError(f"{where}: {text}" if where else text)


def parse_options(command: str, argv: list[str]) -> Options:
    """The options of ``percept COMMAND ARGV``: the config file first, then the typed flags over it."""
    parser = build_parser(command)
    argv = _mapping_argv(list(argv), {"--task-weights"})
    files, rest, i = [], [], 0
    while i < len(argv):                           # the file is read first, wherever it stands
        if argv[i] == "--config" and i + 1 < len(argv):
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
        values = _plain(parser.parse_args((["--config", str(config_file)] if config_file else []) + rest))
    except (ArgumentError, TypeError, ValueError) as err:
        raise _argument_error(err, None) from None
    options = Options(command, values, set(_flat(typed)), config_file, file_values)
    if command == "train":
        run_dir, flag = values.get("run_dir"), values.get("run_dir_flag")
        if run_dir and flag and Path(run_dir) != Path(flag):
            raise OptionsError(f"two run directories given ({run_dir} and {flag}); give one, after the command")
        values["run_dir"] = run_dir or flag
        if values["run_dir"] is None:
            raise OptionsError("no run directory given: percept train RUN ...")
    return options


# ----------------------------------------------------------------------------------------- the configuration
def _absolute(path, folder: Path | None) -> str | None:
    """``path`` made absolute: from ``folder`` (a config file's), else from the working directory (a flag)."""
    if path is None:
        return None
    path = Path(str(path)).expanduser()
    return str(path if path.is_absolute() else ((folder / path) if folder else path.resolve()))


def _entry(raw, folder: Path | None, where: str) -> dict:
    """A ``data`` entry with its paths absolute (a ``csv:PATH`` dataset's too)."""
    if not isinstance(raw, dict):
        raise OptionsError(f"{where}: expected a mapping {{dataset, root, ...}}, got {raw!r}")
    entry = dict(raw)
    if not entry.get("dataset"):
        raise OptionsError(f"{where}: no `dataset`")
    dataset = str(entry["dataset"])
    if entry.get("root") is None and dataset.startswith("csv:"):
        entry["root"] = str(Path(dataset[4:]).parent)           # a CSV's images default to its own folder
    if entry.get("root") is None:
        raise OptionsError(f"{where}: no `root` (the folder of its download or generated images)")
    for key in ("root", "manifest"):
        entry[key] = _absolute(entry.get(key), folder) if entry.get(key) is not None else entry.get(key)
    if dataset.startswith("csv:"):
        entry["dataset"] = "csv:" + _absolute(dataset[4:], folder)
    return entry


def data_entries(values: dict, folder: Path | None, where: str) -> list[dict]:
    """The ``data`` entries of the flags' form (``dataset``, ``root``, ``manifest`` as lists or, in a file, one
    value each; ``task``, ``classes``, ``label_range`` for CSV datasets)."""
    listed = lambda v: None if v is None else v if isinstance(v, list) else [v]   # noqa: E731
    datasets, roots, manifests = listed(values.get("dataset")), listed(values.get("root")), listed(values.get("manifest"))
    roots = roots or [None] * len(datasets)
    if len(roots) != len(datasets):
        raise OptionsError(f"{where}: give one root per dataset ({len(datasets)} datasets, {len(roots)} roots)")
    manifests = manifests or [None] * len(datasets)
    if len(manifests) != len(datasets):
        raise OptionsError(f"{where}: give one manifest per dataset, or none")
    classes = values.get("classes")
    csv = {"task": values.get("task"), "label_range": values.get("label_range"),
           "classes": classes.split(",") if isinstance(classes, str) else classes}
    return [_entry({"dataset": d, "root": r, "manifest": m, **(csv if str(d).startswith("csv:") else {})}, folder,
                   f"{where}: dataset {d}") for d, r, m in zip(datasets, roots, manifests)]


def model_values(options: Options, exclude=()) -> dict:
    """The :class:`~percept.model.ModelConfig` keywords of ``options`` (tuples where the field is one)."""
    from .model import ModelConfig            # torch (see build_parser)
    hints = typing.get_type_hints(ModelConfig)
    out = {}
    for name, value in (options.values.get("model") or {}).items():
        if name in exclude or (value is None and name not in {f.name for f in flag_fields(ModelConfig)}):
            continue
        if typing.get_origin(_unwrap_optional(hints[name])) is tuple and isinstance(value, list):
            length = len(typing.get_args(_unwrap_optional(hints[name])))
            if len(value) != length:
                raise OptionsError(f"{options.config_file or 'percept ' + options.command}: model.{name} takes "
                                   f"{length} values, got {value!r}")
            value = tuple(value)
        out[name] = value
    return out


def train_config(options: Options):
    """The :class:`~percept.train_config.TrainConfig` the options say, or None when they name no data (``percept
    train RUN`` alone resumes RUN)."""
    from .train_config import TrainConfig     # torch (see build_parser)
    values, where = options.values, str(options.config_file or f"percept {options.command}")
    folder = options.config_file.parent if options.config_file else None
    if "dataset" in options.typed:                 # --dataset/--root replace the file's data
        data = data_entries(values, None, f"percept {options.command}")
    elif options.file_values.get("data") is not None:
        if options.file_values.get("dataset") is not None:
            raise OptionsError(f"{where}: give `data` (a list of {{dataset, root}}) or `dataset` and `root`, not both")
        if not isinstance(options.file_values["data"], list) or not options.file_values["data"]:
            raise OptionsError(f"{where}: `data` must be a list of {{dataset, root, ...}}")
        data = [_entry(e, folder, f"{where}: data[{i}]") for i, e in enumerate(options.file_values["data"])]
    elif options.file_values.get("dataset") is not None:
        data = data_entries(options.file_values | {k: values.get(k) for k in DATA_KEYS[3:] if k in options.typed},
                            folder, where)
    elif options.config_file is not None:
        raise OptionsError(f"{where}: no `data` (a list of {{dataset, root}}) and no `dataset`/`root`, and no "
                           f"--dataset/--root given")
    else:
        return None
    kwargs = {f.name: values[f.name] for f in dataclasses.fields(TrainConfig)
              if f.name not in ("data", "model") and values.get(f.name) is not None}
    try:
        return TrainConfig(data=data, model=model_values(options), **kwargs)
    except (TypeError, ValueError) as err:
        raise OptionsError(f"{where}: {err}") from None


def sweep_plan(options: Options) -> dict:
    """The sweep's grid (``lrs``, ``splits``, ``variants``, ``out``): typed flags over the file's ``sweep:``."""
    values = options.values
    plan = {k: v for k, v in (values.get("sweep") or {}).items() if v is not None}
    if values.get("variant"):
        try:
            plan["variants"] = [json.loads(v) for v in values["variant"]]
        except json.JSONDecodeError as err:
            raise OptionsError(f"--variant: not JSON ({err}); e.g. '{{\"strategy\": \"frozen\"}}'") from None
    for key in ("lrs", "splits", "out"):
        if values.get(key) is not None:
            plan[key] = values[key]
    if plan.get("out") is not None and options.config_file and "out" not in options.typed:
        plan["out"] = _absolute(plan["out"], options.config_file.parent)
    return plan


def config_yaml(config) -> str:
    """A run configuration as the config file that starts it (``--print_config``, a run's ``config.yaml``)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, width=110)

