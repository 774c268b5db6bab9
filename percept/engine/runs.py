"""A run directory: everything one training run writes, atomically, so that nothing is lost and runs resume.

Layout (``percept train`` and :func:`percept.engine.train.train`)::

    RUN_DIR/
      config.json              the TrainConfig (plain JSON), written once; a resume must match it
      environment.json         python/torch/timm/peft versions, git commit, device, start time
      log.csv                  one row per epoch: epoch, stage, lr, train_loss, val metrics, seconds
      checkpoint.safetensors   last finished epoch: trainable weights + AdamW state + loop state (metadata)
      best.safetensors         weights of the best validation epoch (loadable with percept.model.perceptclip.load_model)
      predictions.csv          test predictions per image (multi-dataset: predictions_<dataset>.csv)
      metrics.json             final metrics; ``"status": "complete"`` marks a finished run
      eval/<dataset>_<split>_<part>/{metrics.json, predictions.csv}   ``percept evaluate`` on other data
      submitit/                the job's output and submission files of a sweep's local launcher (launch.py)
      config.yaml              the config.json in YAML, its human form (``percept train --config`` reads it)
      trackers.json, tensorboard/, wandb/   experiment trackers' run ids and files (``--logger``, tracking.py)
      state.json               running (pid, host, epoch, last update) or failed (the error); run_status.py
      splits.json              the SHA-256 of each dataset's split assignment: a resume must find the same
      .train.lock(.holder)     held while a process trains the run: a second `percept train` fails at once

:class:`RunDir` owns this layout: no other module spells a run file's name. Every file is replaced atomically
(temp file + ``os.replace``): a crash leaves the previous version. The checkpoint is a single file, so its
weights, optimizer state and loop state always agree.

:data:`PROTOCOL` says what this version of percept computes beyond a run's configuration fields; it is saved
in ``config.json``, and a run directory of another protocol is never resumed nor collected into tables.

Status: what every run of a tree is doing, ``percept status ROOT`` (and a sweep's progress line with its ETA).

A run's state is read from its directory: **done** (``metrics.json`` complete),
**running** (``state.json`` written by a live training process: same host and its pid alive, or another host's
that updated it within :data:`STALE_AFTER` seconds), **failed** (``state.json`` holds the error that stopped it),
**interrupted** (it was running, but its process is gone: killed, preempted, out of time; re-running resumes it)
**queued** (submitted to SLURM by ``--launcher slurm``, not started yet: a sweep does not submit it again) or
**pending** (configured by a sweep, never started). Torch-free.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import yaml

from ..core.files import atomic_path, read_json, write_csv, write_json
from ..core.options import upgrade_run_config

# What a run computes beyond its configuration fields (saved in config.json; see above).
# History: 1 - the first release; 2 - LaMem split-k targets, image-proportional sampling with min_batch_items,
# LoDa's per-dataset interpolation, per-backbone normalisation, IQA test crops keyed by the file's base name;
# 3 - IQA test crops placed by the image's size alone (a renamed copy of a file scores the same).
PROTOCOL = 3

CONFIG, ENVIRONMENT, LOG = "config.json", "environment.json", "log.csv"
CHECKPOINT, BEST, METRICS = "checkpoint.safetensors", "best.safetensors", "metrics.json"
PREDICTIONS, EVAL, JOBS = "predictions.csv", "eval", "submitit"


class IncompatibleRunError(ValueError):
    """A run directory holds a run with a different configuration."""


def config_yaml(config: Mapping) -> str:
    """A run's configuration (``config.json``'s contents) as the YAML file that starts it again: a run's
    ``config.yaml``, and what ``percept train --print_config`` prints."""
    return ("# the run's configuration (config.json is the record); percept train --config reads this file\n"
            + yaml.safe_dump(dict(config), sort_keys=False, width=110))


class RunDir:
    """The directory of one training run (or of one evaluation, below ``RUN/eval/``) and its files."""

    def __init__(self, path: str | os.PathLike | "RunDir"):
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ the files
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def environment_file(self) -> Path:
        return self.path / ENVIRONMENT

    @property
    def log_file(self) -> Path:
        return self.path / LOG

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def best_weights(self) -> Path:
        return self.path / BEST

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def config_yaml(self) -> Path:
        return self.path / "config.yaml"

    @property
    def state_file(self) -> Path:
        """What the run is doing: running (pid, host, last update) or failed (its error); ``percept status``."""
        return self.path / "state.json"

    @property
    def trackers_file(self) -> Path:
        """The experiment trackers' run ids (W&B, MLflow), so that a resumed run continues the same ones."""
        return self.path / "trackers.json"

    def tracker_dir(self, name: str) -> Path:
        """A tracker's own files (``tensorboard``, ``wandb``)."""
        return self.path / name

    @property
    def jobs_dir(self) -> Path:
        """submitit's folder for the run's local-executor job (``*_log.out``/``*_log.err``: its console output)."""
        return self.path / JOBS

    def predictions_file(self, dataset: str | None = None) -> Path:
        """``predictions.csv``; a multi-dataset run's test set ``dataset``: ``predictions_<dataset>.csv``."""
        return self.path / (PREDICTIONS if dataset is None else f"predictions_{dataset}.csv")

    def prediction_files(self) -> list[Path]:
        """Every predictions file of the run, sorted."""
        return sorted(self.path.glob("predictions*.csv"))

    def eval_dir(self, name: str) -> "RunDir":
        """Where ``percept evaluate`` writes one evaluation (``name`` = ``<dataset>_<split>_<part>``)."""
        return RunDir(self.path / EVAL / name)

    @classmethod
    def find(cls, root: str | os.PathLike, evaluations: bool = False) -> list["RunDir"]:
        """Every directory below ``root`` holding a ``metrics.json`` with a ``config.json`` beside it (runs),
        or every evaluation below ``RUN/eval/`` (``evaluations=True``), in sorted order."""
        pattern = f"{EVAL}/*/{METRICS}" if evaluations else METRICS
        found = [cls(p.parent) for p in sorted(Path(root).rglob(pattern))]
        return found if evaluations else [r for r in found if r.config_file.is_file()]

    # ------------------------------------------------------------------ reading
    def read_config(self) -> dict:
        """``config.json``, with fields renamed since it was written under their current names; ``ValueError``
        naming the file and the field when it was edited out of shape (no ``data`` list of datasets, no ``model``)."""
        config = read_json(self.config_file)
        again = "restore it (config.yaml holds the same) or train into a new run directory"
        if not isinstance(config, dict):
            raise ValueError(f"{self.config_file} is not a run configuration (a JSON object); {again}")
        data, model = config.get("data", [{"dataset": ""}]), config.get("model", {})
        if (not isinstance(data, list) or not data
                or not all(isinstance(d, dict) and isinstance(d.get("dataset"), str) for d in data)):
            raise ValueError(f"{self.config_file}: `data` must be a list of datasets ({{\"dataset\": ..., "
                             f"\"root\": ...}}); {again}")
        if not isinstance(model, dict) or not isinstance(model.get("backbone", ""), str):
            raise ValueError(f"{self.config_file}: `model` must be an object of model fields; {again}")
        return upgrade_run_config(config)

    def read_metrics(self) -> dict:
        return read_json(self.metrics_file)

    def read_log(self) -> "pandas.DataFrame":
        import pandas as pd
        if not self.log_file.is_file():
            raise FileNotFoundError(f"{self.log_file} does not exist; the run has not finished an epoch yet")
        return pd.read_csv(self.log_file)

    def is_complete(self) -> bool:
        """True when ``metrics.json`` says ``"status": "complete"``."""
        if not self.metrics_file.is_file():
            return False
        try:
            return read_json(self.metrics_file).get("status") == "complete"
        except ValueError:
            return False

    def _failed_before_training(self, config: Mapping) -> bool:
        """A percept run (its config has data, model and split) that failed before finishing an epoch: its
        state says failed and it has no checkpoint, weights or metrics. Only such a run takes a new config."""
        if not all(k in config for k in ("data", "model", "split")) or self.has_progress():
            return False
        try:
            return read_json(self.state_file).get("state") == "failed"
        except (OSError, ValueError, AttributeError):
            return False

    def has_progress(self) -> bool:
        """True once the run has finished an epoch (a checkpoint, best weights or final metrics exist)."""
        return any(p.is_file() for p in (self.checkpoint_file, self.best_weights, self.metrics_file))

    @property
    def lock_file(self) -> Path:
        """Held while a process trains the run (:func:`percept.core.files.exclusive_lock`)."""
        return self.path / ".train.lock"

    @property
    def splits_file(self) -> Path:
        """The SHA-256 of each dataset's split assignment the run trains on (:func:`split_digest`)."""
        return self.path / "splits.json"

    def check_splits(self, digests: Mapping[str, str]) -> None:
        """Record the run's split digests, or refuse a run whose datasets' splits changed since it started: its
        weights were trained on other images (:class:`IncompatibleRunError`, saying how to start fresh)."""
        if self.splits_file.is_file() and self.has_progress():
            recorded = read_json(self.splits_file)
            changed = sorted(k for k in digests if recorded.get(k) not in (None, digests[k]))
            if changed:
                raise IncompatibleRunError(
                    f"the splits of {', '.join(changed)} changed since {self.path} started (other train/val/test "
                    f"images): its weights and metrics belong to the old splits; train into a new run directory, "
                    f"or delete {self.path} to start over")
            if all(k in recorded for k in digests):
                return
        known = read_json(self.splits_file) if self.splits_file.is_file() and self.has_progress() else {}
        write_json(self.splits_file, {**known, **digests})

    def require_weights(self) -> Path:
        """The best epoch's weights; a clear error when the run has not produced them."""
        if not self.best_weights.is_file():
            raise FileNotFoundError(f"{self.path} is not a trained run directory (no {BEST}); train it first "
                                    f"(percept train {self.path})")
        return self.best_weights

    def load_model(self, **kwargs):
        """The run's model with its best epoch's weights, in eval mode (:func:`percept.model.perceptclip.load_model`)."""
        from ..model.perceptclip import load_model
        return load_model(self.require_weights(), **kwargs)

    # ------------------------------------------------------------------ writing
    def open(self, config: Mapping, ignore: tuple[str, ...] = ()) -> "RunDir":
        """Create the directory with ``config.json``, or check that an existing run has the same configuration
        (keys in ``ignore`` — execution settings such as the device — may differ)."""
        self.path.mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(config, default=str))   # normalise tuples -> lists, as stored
        if self.config_file.is_file():
            old = self.read_config()
            diff = _differences(old, config, ignore)
            if diff and self._failed_before_training(old):
                write_json(self.config_file, config)     # its setup failed, nothing was trained: the new config
                self.write_config_yaml(config)
                for stale in (self.splits_file, self.trackers_file):
                    stale.unlink(missing_ok=True)
                diff = []
            if diff:
                raise IncompatibleRunError(
                    f"{self.path} holds a run with a different configuration ({'; '.join(diff[:6])}"
                    f"{'; ...' if len(diff) > 6 else ''}); refusing to resume it. Use a new run directory, or "
                    f"delete {self.path} to start over")
        else:
            write_json(self.config_file, config)
        if not self.config_yaml.is_file():
            self.write_config_yaml(self.read_config())
        return self

    def write_config_yaml(self, config: Mapping) -> None:
        """``config.yaml``: ``config.json`` in YAML, the human form (``percept train --config`` reads it back)."""
        with atomic_path(self.config_yaml) as tmp:
            tmp.write_text(config_yaml(config))

    def write_environment(self, device, **extra) -> None:
        write_json(self.environment_file, {**environment_info(device), **extra})

    def write_log(self, frame: "pandas.DataFrame") -> None:
        write_csv(self.log_file, frame)

    def write_predictions(self, frame: "pandas.DataFrame", dataset: str | None = None) -> None:
        write_csv(self.predictions_file(dataset), frame)

    def write_metrics(self, metrics: Mapping) -> None:
        write_json(self.metrics_file, metrics)


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


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment_info(device) -> dict:
    import peft
    import timm
    import torch
    info = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "timm": timm.__version__, "peft": peft.__version__, "git_commit": _git_commit(),
            "device": str(device), "argv": sys.argv,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


STALE_AFTER = 30 * 60          # seconds without an update before another host's "running" run counts as gone
STATES = ("done", "running", "queued", "failed", "interrupted", "pending")


def write_state(run: RunDir, state: str, **extra) -> None:
    """``state.json``: ``running`` (with ``epoch``) or ``failed`` (with ``error``), this process and host."""
    write_json(run.state_file, {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                                "updated": time.time(), **extra})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # someone else's live process
        return True
    return True


def run_status(run: RunDir, now: float | None = None) -> dict:
    """``{"run", "state", "epoch", "detail"}`` of one run directory (see the module's docstring)."""
    now = time.time() if now is None else now
    out = {"run": str(run.path), "state": "pending", "epoch": 0, "detail": ""}
    if run.is_complete():
        metrics = run.read_metrics()
        return {**out, "state": "done", "epoch": metrics.get("epochs_run", 0),
                "detail": f"val {metrics.get('select_metric')} {metrics.get('val_score', float('nan')):.4g}"}
    if not run.state_file.is_file():
        return out
    try:
        state = read_json(run.state_file)
    except ValueError:
        return {**out, "state": "failed", "detail": f"{run.state_file} is unreadable"}
    out["epoch"] = state.get("epoch", 0)
    age = now - float(state.get("updated", 0))
    if state.get("state") == "failed":
        return {**out, "state": "failed", "detail": state.get("error", "")}
    if state.get("state") == "queued":
        return {**out, "state": "queued", "detail": f"SLURM job {state.get('job')} submitted {age / 60:.0f} min ago; "
                                                    f"if squeue no longer lists it, delete {run.state_file.name} "
                                                    f"to submit it again"}
    here = state.get("host") == socket.gethostname()
    if (here and _alive(int(state.get("pid", -1)))) or (not here and age < STALE_AFTER):
        return {**out, "state": "running", "detail": f"pid {state.get('pid')} on {state.get('host')}, "
                                                        f"updated {age:.0f} s ago"}
    return {**out, "state": "interrupted", "detail": f"no process since {age / 60:.0f} min (pid {state.get('pid')} "
                                                     f"on {state.get('host')}); run it again to resume"}


def tree_status(root: str | os.PathLike):
    """One row per run directory below ``root`` (any folder with a ``config.json``), sorted by state then path."""
    import pandas as pd
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of runs")
    runs = [RunDir(p.parent) for p in sorted(root.rglob("config.json")) if "eval" not in p.relative_to(root).parts]
    rows = [run_status(r) for r in runs]
    for row in rows:
        row["run"] = str(Path(row["run"]).relative_to(root))
    frame = pd.DataFrame(rows, columns=["state", "run", "epoch", "detail"])
    order = {s: i for i, s in enumerate(STATES)}
    return frame.sort_values(["state", "run"], key=lambda c: c.map(order) if c.name == "state" else c,
                             kind="mergesort").reset_index(drop=True)


def eta_text(seconds_done: list[float], remaining: int, parallel: int = 1) -> str:
    """``ETA 12 min`` from the durations of the finished runs and how many remain (``parallel`` at a time)."""
    if not seconds_done or remaining <= 0:
        return "ETA -" if remaining > 0 else "all done"
    left = sum(seconds_done) / len(seconds_done) * remaining / max(1, parallel)
    return f"ETA {left / 3600:.1f} h" if left >= 3600 else f"ETA {left / 60:.0f} min" if left >= 60 \
        else f"ETA {left:.0f} s"
