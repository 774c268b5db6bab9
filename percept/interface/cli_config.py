"""The run's configuration from the parsed options of ``percept train``/``sweep``/``params``
(:mod:`percept.interface.cli_options`): its datasets, model and protocol (:func:`train_config`), a sweep's grid
(:func:`sweep_plan`); ``--print_config`` prints it as a run's ``config.yaml`` (:func:`percept.engine.runs.config_yaml`).

Data: typed ``--dataset`` (with its ``--root``, ...) replaces a file's; a flat file's keys take typed ``--root``,
``--manifest``, ... over them; a file's ``data:`` list stands alone. Paths in a file are taken from the file's folder
(its data roots, manifests, CSVs and a sweep's ``out``), typed ones from the working directory; all are stored
absolute, so that a run never depends on where a command is run.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from ..core.options import flag_fields
from .cli_options import DATA_KEYS, Options, OptionsError, unwrap_optional


def _absolute(path, folder: Path | None) -> str | None:
    """``path`` made absolute: from ``folder`` (a config file's), else from the working directory (a flag)."""
    if path is None:
        return None
    path = Path(str(path)).expanduser()
    return str(path if path.is_absolute() else ((folder / path) if folder else path.resolve()))


def _absolute_dataset(name, folder: Path | None):
    """A ``csv:PATH`` dataset name with its path absolute (other names as they are)."""
    return "csv:" + _absolute(name[4:], folder) if isinstance(name, str) and name.startswith("csv:") else name


def _entry(raw: dict, folder: Path | None, where: str) -> dict:
    """A ``data`` entry with its paths absolute (``root``, ``manifest``, ``csv`` and a ``csv:PATH`` dataset)."""
    entry = dict(raw)
    if not entry.get("dataset"):
        raise OptionsError(f"{where}: no `dataset`")
    dataset = str(entry["dataset"])
    if entry.get("root") is None and dataset.startswith("csv:"):
        entry["root"] = str(Path(_absolute(dataset[4:], folder)).parent)   # a CSV's images default to its folder
    if entry.get("root") is None:
        raise OptionsError(f"{where}: no `root` (the folder of its download or generated images)")
    for key in ("root", "manifest", "csv"):
        if entry.get(key) is not None:
            entry[key] = _absolute(entry[key], folder)
    entry["dataset"] = _absolute_dataset(dataset, folder)
    return entry


def _listed(value) -> list | None:
    return None if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def data_entries(values: dict, folder: Path | None, where: str) -> list[dict]:
    """The ``data`` entries of the flags' form: ``dataset``, ``root``, ``manifest`` (lists, or in a file one value
    each; paths from ``folder``, else the working directory), ``task``, ``classes``, ``label_range`` for CSVs."""
    datasets = _listed(values.get("dataset")) or []
    roots = _listed(values.get("root")) or [None] * len(datasets)
    if len(roots) != len(datasets):
        raise OptionsError(f"{where}: give one root per dataset ({len(datasets)} datasets, {len(roots)} roots)")
    manifests = _listed(values.get("manifest")) or [None] * len(datasets)
    if len(manifests) != len(datasets):
        raise OptionsError(f"{where}: give one manifest per dataset, or none")
    classes = values.get("classes")
    csv = {"task": values.get("task"), "label_range": values.get("label_range"),
           "classes": classes.split(",") if isinstance(classes, str) else classes}
    return [_entry({"dataset": d, "root": r, "manifest": m, **(csv if str(d).startswith("csv:") else {})}, folder,
                   f"{where}: dataset {d}") for d, r, m in zip(datasets, roots, manifests)]


def _data(options: Options) -> list[dict] | None:
    """The run's datasets: typed ``--dataset`` (with its flags) replaces the file's; a flat file's keys take typed
    ``--root``/``--manifest``/... over them; a file's ``data`` list stands alone. None: no data named."""
    where = str(options.config_file or f"percept {options.command}")
    folder = options.config_file.parent if options.config_file else None
    typed = {k: options.typed_values[k] for k in DATA_KEYS if options.typed_values.get(k) is not None}
    flat = {k: options.file_values[k] for k in DATA_KEYS if options.file_values.get(k) is not None}
    if "dataset" in typed:
        return data_entries(typed, None, f"percept {options.command}")
    if options.file_values.get("data") is not None:
        if typed:
            raise OptionsError(f"{where} lists its datasets under `data`: --{sorted(typed)[0].replace('_', '-')} "
                               f"cannot change one; give --dataset with its --root (they replace the file's data)")
        return [_entry(e, folder, f"{where}: data[{i}]") for i, e in enumerate(options.file_values["data"])]
    if "dataset" in flat:
        for key in ("root", "manifest"):          # the file's paths from its folder, the typed ones from the cwd
            if key in flat:
                flat[key] = [_absolute(p, folder) for p in _listed(flat[key])]
            if key in typed:
                typed[key] = [_absolute(p, None) for p in _listed(typed[key])]
        flat["dataset"] = [_absolute_dataset(d, folder) for d in _listed(flat["dataset"])]
        return data_entries({**flat, **typed}, None, where)
    if options.config_file is not None:
        raise OptionsError(f"{where}: no `data` (a list of {{dataset, root}}) and no `dataset`/`root`, and no "
                           f"--dataset/--root given")
    if typed:
        raise OptionsError(f"--{sorted(typed)[0].replace('_', '-')} without --dataset: name the dataset it is for")
    return None


def model_values(options: Options, exclude=()) -> dict:
    """The :class:`~percept.model.perceptclip.ModelConfig` keywords of ``options`` (tuples where the field is one)."""
    from ..model.perceptclip import ModelConfig  # torch (see build_parser)
    hints = typing.get_type_hints(ModelConfig)
    out = {}
    for name, value in (options.values.get("model") or {}).items():
        if name in exclude or (value is None and name not in {f.name for f in flag_fields(ModelConfig)}):
            continue
        if typing.get_origin(unwrap_optional(hints[name])) is tuple and isinstance(value, list):
            length = len(typing.get_args(unwrap_optional(hints[name])))
            if len(value) != length:
                raise OptionsError(f"{options.config_file or 'percept ' + options.command}: model.{name} takes "
                                   f"{length} values, got {value!r}")
            value = tuple(value)
        out[name] = value
    return out


def train_config(options: Options):
    """The :class:`~percept.engine.train_config.TrainConfig` the options say, or None when they name no data (``percept
    train RUN`` alone resumes RUN)."""
    from ..engine.train_config import TrainConfig  # torch (see build_parser)
    data = _data(options)
    if data is None:
        return None
    values = options.values
    kwargs = {f.name: values[f.name] for f in dataclasses.fields(TrainConfig)
              if f.name not in ("data", "model") and values.get(f.name) is not None}
    try:
        return TrainConfig(data=data, model=model_values(options), **kwargs)
    except (TypeError, ValueError) as err:
        raise OptionsError(f"{options.config_file or 'percept ' + options.command}: {err}") from None


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


