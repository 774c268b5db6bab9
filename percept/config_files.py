"""Run and sweep configuration files: ``percept train --config run.yaml`` and ``percept sweep --config sweep.yaml``.

A file holds what a run's ``config.json`` holds — the :class:`~percept.train_config.TrainConfig` fields, with
``data`` (a list of ``{dataset, root, ...}``) and ``model`` (the :class:`~percept.model.ModelConfig` fields) — in
YAML (or JSON). Every run directory also gets ``config.yaml``, its effective configuration in that form, so a
finished run's file can start the next one. A sweep file adds a ``sweep`` section: ``lrs``, ``splits``,
``variants`` (model overrides) and optionally ``out``. Flags typed on the command line override the file (the
same dataclass fields drive both: no second list of settings); ``--dataset``/``--root`` replace its ``data``.

Example::

    data:
      - {dataset: koniq10k, root: /data/koniq10k}
    model: {backbone: clip_vit_l14, lora_r: 16, lora_alpha: 8}
    batch_size: 32
    max_epochs: 40
    loggers: [csv, tensorboard]
    sweep: {lrs: [5.0e-5, 1.0e-4, 5.0e-4, 1.0e-3], splits: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Iterable

SWEEP_KEYS = ("lrs", "splits", "variants", "out")


def given_flags(parser: argparse.ArgumentParser, argv: Iterable[str]) -> set[str]:
    """The destinations of the flags typed in ``argv`` (not those left at their defaults). ``parser`` (a
    command's parser, after it parsed ``argv``) has its defaults suppressed for this."""
    for action in parser._actions:
        action.default, action.required = argparse.SUPPRESS, False
    return set(vars(parser.parse_known_args(list(argv))[0]))


def _resolved(entry, folder: Path):
    """A ``data`` entry of a config file with its relative ``root``, ``manifest`` and ``csv:PATH`` taken from the
    file's own folder (as paths in a file mean), never from wherever the command runs."""
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    for key in ("root", "manifest", "csv"):
        if isinstance(entry.get(key), str) and not Path(entry[key]).is_absolute():
            entry[key] = str(folder / entry[key])
    dataset = entry.get("dataset")
    if isinstance(dataset, str) and dataset.startswith("csv:") and not Path(dataset[4:]).is_absolute():
        entry["dataset"] = "csv:" + str(folder / dataset[4:])
    return entry


def read_config_file(path: str | os.PathLike) -> dict:
    """A run/sweep configuration file (YAML, or JSON) as a mapping; errors name the file and what to fix."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings (data, model, lr, ...), got {type(data).__name__}")
    return data


def train_config_from_file(path, args: argparse.Namespace, given: set[str], data_from_flags=None):
    """The :class:`~percept.train_config.TrainConfig` of file ``path`` with the flags in ``given`` (typed on the
    command line; values in ``args``) applied over it; ``data_from_flags``: the datasets of ``--dataset``/``--root``
    when typed. Returns (config, the file's ``sweep`` section)."""
    from .model import ModelConfig
    from .options import flag_fields, values
    from .train_config import TrainConfig
    data = read_config_file(path)
    sweep = data.pop("sweep", None) or {}
    if not isinstance(sweep, dict) or set(sweep) - set(SWEEP_KEYS):
        raise ValueError(f"{path}: `sweep` takes {', '.join(SWEEP_KEYS)}; got {sweep!r}")
    if data_from_flags is not None:
        data["data"] = [d.to_dict() for d in data_from_flags]
    elif isinstance(data.get("data"), list):
        data["data"] = [_resolved(entry, Path(path).resolve().parent) for entry in data["data"]]
    if not data.get("data"):
        raise ValueError(f"{path}: no `data` (a list of {{dataset, root}}), and no --dataset/--root given")
    model = dict(data.get("model") or {})
    typed = values(ModelConfig, args)
    model.update({f.name: typed[f.name] for f in flag_fields(ModelConfig) if f.name in given})
    data["model"] = model
    typed = values(TrainConfig, args)
    data.update({f.name: typed[f.name] for f in flag_fields(TrainConfig) if f.name in given})
    try:
        return TrainConfig.from_dict(data), sweep
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
