"""Experiment tracking: a run's per-epoch metrics, configuration, environment, final test metrics and best
checkpoint sent to TensorBoard, Weights & Biases or MLflow (``percept train --logger tensorboard wandb mlflow``).

``csv`` is the run directory itself (``log.csv`` per epoch, ``metrics.json`` at the end, ``config.json``,
``environment.json``): always written, the record that resuming and ``percept results`` read; the others are
views of it for dashboards. Each tracker follows one run directory:

* ``tensorboard`` — event files in ``RUN/tensorboard`` (``torch.utils.tensorboard``; point ``tensorboard
  --logdir`` at a sweep's folder to see all its runs); on resume, steps after the checkpoint are purged.
* ``wandb`` — ``wandb.init(project=$WANDB_PROJECT or "percept", group=…, name=<run>, dir=RUN)``; the mode is
  W&B's own (``WANDB_MODE=offline`` for no network, then ``wandb sync``); the run id is kept in
  ``RUN/trackers.json`` so a resumed run continues the same W&B run.
* ``mlflow`` — the tracking URI is MLflow's own (``MLFLOW_TRACKING_URI``; by default ``./mlruns``), the
  experiment is the group; params (flattened configuration), metrics per epoch, ``config.json`` and
  ``environment.json`` as artifacts; the run id is kept in ``RUN/trackers.json`` for resume.

The group is ``TrainConfig.log_group`` (a sweep sets its folder's name), else the run's datasets. Only the main
process of a ``torchrun`` run logs. The optional packages are the ``tracking`` extra
(``pip install 'perceptclip[tracking]'``); a missing one is an error naming it before training starts.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny (or mlflow)"}


def check_loggers(names: Sequence[str]) -> None:
    """Unknown names and missing packages, before any training: a ValueError / ImportError naming the fix."""
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ValueError(f"unknown logger(s) {unknown}; choose from {', '.join(LOGGERS)}")
    for name in names:
        if name in _PACKAGES and importlib.util.find_spec(name) is None:
            raise ImportError(f"--logger {name} needs the {_PACKAGES[name]} package: pip install "
                              f"'perceptclip[tracking]' (or pip install {_PACKAGES[name].split()[0]})")


def flatten(values: Mapping, prefix: str = "", sep: str = "/") -> dict[str, object]:
    """``{"model": {"lora_r": 16}}`` → ``{"model/lora_r": 16}`` (lists as JSON text)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def _numbers(values: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(values).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


class Trackers:
    """The run's trackers: :meth:`start` once (fresh or resumed), :meth:`epoch` after each epoch,
    :meth:`final` with the run's result, :meth:`close`. With no tracker every call does nothing."""

    def __init__(self, names: Sequence[str], run_dir: str | os.PathLike, group: str):
        from .runs import RunDir
        self.names = [n for n in dict.fromkeys(names) if n != "csv"]
        check_loggers(self.names)
        self.run, self.group = RunDir(run_dir), group
        self.run_dir, self.ids_file = self.run.path, self.run.trackers_file
        self._tb = self._wandb = self._mlflow = None

    def _ids(self) -> dict:
        return json.loads(self.ids_file.read_text()) if self.ids_file.is_file() else {}

    def _keep_id(self, name: str, value: str) -> None:
        from ..core.files import write_json
        write_json(self.ids_file, {**self._ids(), name: value})

    def start(self, config: Mapping, environment: Mapping, resumed_after: int = 0) -> None:
        name = self.run_dir.name if self.run_dir.name not in ("", ".") else "run"
        label = "/".join(self.run_dir.parts[-4:])   # datasets/variant/split/lr of a sweep's run
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(log_dir=str(self.run.tracker_dir("tensorboard")),
                                     purge_step=resumed_after + 1 if resumed_after else None)
            if not resumed_after:
                self._tb.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```")
                self._tb.add_text("environment", f"```\n{json.dumps(environment, indent=2)}\n```")
        if "wandb" in self.names:
            import wandb
            known = self._ids().get("wandb")
            try:
                self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "percept"), group=self.group,
                                         name=label or name, dir=str(self.run_dir), id=known,
                                         resume="allow" if known else None,
                                         config={**config, "environment": dict(environment)})
            except Exception as err:      # no API key, no network: wandb's own error types
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise RuntimeError(f"W&B could not start ({type(err).__name__}: {first}): run `wandb login` or set "
                                   f"WANDB_API_KEY (or WANDB_MODE=offline), or train without --logger wandb") from None
            self._keep_id("wandb", self._wandb.id)
        if "mlflow" in self.names:
            import mlflow
            mlflow.set_experiment(self.group)
            known = self._ids().get("mlflow")
            self._mlflow = mlflow.start_run(run_id=known) if known else mlflow.start_run(run_name=label or name)
            if not known:
                self._keep_id("mlflow", self._mlflow.info.run_id)
                params = {k: str(v)[:500] for k, v in flatten(config, sep=".").items()}
                mlflow.log_params(params)
                mlflow.log_dict(dict(config), "config.json")
                mlflow.log_dict(dict(environment), "environment.json")

    def epoch(self, row: Mapping) -> None:
        """One row of ``log.csv`` (``epoch``, ``train_loss``, ``val_*``, ``seconds``)."""
        step = int(row["epoch"])
        values = {k: v for k, v in _numbers(row).items() if k != "epoch"}
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=step)
        if self._mlflow is not None:
            import mlflow
            mlflow.log_metrics({k.replace("@", "_"): v for k, v in values.items()}, step=step)

    def final(self, result: Mapping, best_checkpoint: str | os.PathLike) -> None:
        """The run's result (``metrics.json``): test and validation metrics per dataset, best epoch, and the
        best checkpoint's path."""
        values = _numbers({"test": result.get("test", {}), "val": result.get("val", {}),
                           "val_score": result.get("val_score"), "best_epoch": result.get("best_epoch")})
        values = {k: v for k, v in values.items() if not k.endswith("n_images")}
        path = str(Path(best_checkpoint).resolve())
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"final/{key}", value, int(result.get("epochs_run") or 0))
            self._tb.add_text("best_checkpoint", path)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.summary.update({**{f"final/{k}": v for k, v in values.items()}, "best_checkpoint": path})
        if self._mlflow is not None:
            import mlflow
            mlflow.log_metrics({f"final/{k}": v for k, v in values.items()})
            mlflow.set_tag("best_checkpoint", path)

    def close(self, failed: bool = False) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish(exit_code=1 if failed else 0)
        if self._mlflow is not None:
            import mlflow
            mlflow.end_run(status="FAILED" if failed else "FINISHED")
        self._tb = self._wandb = self._mlflow = None
