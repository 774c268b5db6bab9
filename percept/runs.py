"""A run directory: everything one training run writes, atomically, so that nothing is lost and runs resume.

Layout (``percept train`` and :func:`percept.train.train`)::

    RUN_DIR/
      config.json              the TrainConfig (plain JSON), written once; a resume must match it
      environment.json         python/torch/timm/peft versions, git commit, device, start time
      log.csv                  one row per epoch: epoch, stage, lr, train_loss, val metrics, seconds
      checkpoint.safetensors   last finished epoch: trainable weights + AdamW state + loop state (metadata)
      best.safetensors         weights of the best validation epoch (loadable with percept.model.load_model)
      predictions.csv          test predictions per image (multi-dataset: predictions_<dataset>.csv)
      metrics.json             final metrics; ``"status": "complete"`` marks a finished run

Every file is replaced atomically (temp file + ``os.replace``): a crash leaves the previous version.
The checkpoint is a single file, so its weights, optimizer state and loop state always agree.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from .checkpoint import atomic_path, atomic_write_text, load_tensors, save_tensors

CONFIG, ENVIRONMENT, LOG = "config.json", "environment.json", "log.csv"
CHECKPOINT, BEST, METRICS = "checkpoint.safetensors", "best.safetensors", "metrics.json"


class IncompatibleRunError(ValueError):
    """A run directory holds a run with a different configuration."""


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the file was edited or damaged") from err


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment_info(device: torch.device | str) -> dict:
    import peft
    import timm
    info = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "timm": timm.__version__, "peft": peft.__version__, "git_commit": _git_commit(),
            "device": str(device), "argv": sys.argv,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def _differences(old: Mapping, new: Mapping, ignore: tuple[str, ...], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, ignore, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the run, {b!r} now")
    return out


def open_run_dir(run_dir: str | os.PathLike, config: Mapping, ignore: tuple[str, ...] = ()) -> Path:
    """Create ``run_dir`` with ``config.json``, or check that an existing run has the same configuration
    (keys in ``ignore`` — execution settings such as the device — may differ)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG
    config = json.loads(json.dumps(config, default=str))   # normalise tuples -> lists, as stored
    if path.is_file():
        diff = _differences(read_json(path), config, ignore)
        if diff:
            raise IncompatibleRunError(
                f"{run_dir} holds a run with a different configuration ({'; '.join(diff[:6])}"
                f"{'; ...' if len(diff) > 6 else ''}); refusing to resume it. Use a new run directory, or "
                f"delete {run_dir} to start over")
    else:
        write_json(path, config)
    return run_dir


def is_complete(run_dir: str | os.PathLike) -> bool:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return False
    try:
        return read_json(path).get("status") == "complete"
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------- checkpoint
def save_checkpoint(path: str | os.PathLike, trainable: Mapping[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer | None, state: Mapping[str, Any]) -> None:
    """One safetensors file: ``model.*`` trainable weights, ``optim.<i>.<name>`` AdamW tensors, and the loop
    state + optimizer param groups as JSON metadata."""
    tensors = {f"model.{k}": v.detach() for k, v in trainable.items()}
    meta: dict[str, Any] = {"format": "percept-checkpoint", "state": dict(state)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for index, values in sd["state"].items():
            for name, value in values.items():
                value = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{index}.{name}"] = value
        meta["param_groups"] = sd["param_groups"]
    save_tensors(path, {k: v.contiguous().cpu() for k, v in tensors.items()}, meta)


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore :func:`save_checkpoint`'s weights (and optimizer state) in place; returns the loop state."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != "percept-checkpoint":
        raise ValueError(f"{path} is not a percept training checkpoint")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = dict(model.named_parameters())
    missing = sorted(set(k for k, p in own.items() if p.requires_grad) - set(weights))
    unknown = sorted(set(weights) - set(model.state_dict()))
    if missing or unknown:
        raise ValueError(f"checkpoint {path} does not fit the model (missing {missing[:3]}, unexpected "
                         f"{unknown[:3]}); it belongs to a different configuration")
    model.load_state_dict(weights, strict=False)
    if optimizer is not None and "param_groups" in meta:
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return dict(meta["state"])


# --------------------------------------------------------------------------------------------- tables
def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def predictions_path(run_dir: str | os.PathLike, dataset: str, multi: bool) -> Path:
    return Path(run_dir) / (f"predictions_{dataset}.csv" if multi else "predictions.csv")
