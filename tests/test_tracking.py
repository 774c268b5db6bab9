"""Experiment tracking (percept.engine.tracking), offline: a run interrupted and resumed logs every epoch once
to TensorBoard (event files read back), MLflow (a file store read back with MlflowClient) and W&B (offline mode),
with the same numbers as the run's own log.csv and metrics.json."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import kill_in_epoch

from percept.data.sources import DataConfig
from percept.engine.train import TrainConfig, train
from percept.model.perceptclip import ModelConfig

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    env = pytest.MonkeyPatch()
    env.setenv("WANDB_MODE", "offline")
    env.setenv("WANDB_SILENT", "true")
    env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    env.setenv("MLFLOW_TRACKING_URI", f"file:{root / 'mlruns'}")
    config = TrainConfig(data=[DataConfig("synthetic_iqa", str(root / "data"))],
                         model=ModelConfig(backbone="tiny_clip", pretrained=False), max_epochs=2, patience=2,
                         batch_size=16, test_crops=2, quiet=True, loggers=["csv", "tensorboard", "wandb", "mlflow"],
                         log_group="sweep-a")
    kill_in_epoch(env, config, root / "run", epoch=2)
    result = train(config, root / "run")                             # resumed
    yield root, root / "run", result
    env.undo()


def test_tensorboard_has_every_epoch_once_with_the_logs_values(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, run, result = tracked
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    log = pd.read_csv(run / "log.csv")
    losses = events.Scalars("train_loss")
    assert [e.step for e in losses] == [1, 2]                          # epoch 1 not duplicated by the resume
    assert [e.value for e in losses] == pytest.approx(log["train_loss"].tolist(), rel=1e-6)
    assert [e.value for e in events.Scalars("val_srcc")] == pytest.approx(log["val_srcc"].tolist(), rel=1e-6)
    final = events.Scalars("final/test/synthetic_iqa/srcc")
    assert final[-1].value == pytest.approx(result["test"]["synthetic_iqa"]["srcc"], rel=1e-6)


def test_mlflow_run_holds_params_metrics_and_the_best_checkpoint(tracked):
    from mlflow.tracking import MlflowClient
    root, run, result = tracked
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=f"file:{root / 'mlruns'}")
    record = client.get_run(run_id)
    assert record.info.status == "FINISHED"
    assert client.get_experiment(record.info.experiment_id).name == "sweep-a"   # the group
    assert float(record.data.params["lr"]) == 1e-4 and record.data.params["model.backbone"] == "tiny_clip"
    history = client.get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2]
    log = pd.read_csv(run / "log.csv")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(log["train_loss"].tolist())
    assert record.data.metrics["final/test/synthetic_iqa/srcc"] == pytest.approx(result["test"]["synthetic_iqa"]["srcc"])
    assert record.data.tags["best_checkpoint"] == str((run / "best.safetensors").resolve())


def test_wandb_offline_run_is_one_run_across_the_resume(tracked):
    _, run, _ = tracked
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    files = sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2                                            # the interrupted start and the resume, one id
    data = files[-1].read_bytes()
    for key in (b"val_srcc", b"final/test/synthetic_iqa/srcc", b"sweep-a", b"best_checkpoint"):
        assert key in data, key


def test_a_missing_tracker_package_or_unknown_logger_is_named_before_training(tmp_path, monkeypatch):
    import importlib.util

    from percept.engine.tracking import check_loggers
    with pytest.raises(ValueError, match="unknown logger"):
        check_loggers(["tensorbored"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = TrainConfig(data=[DataConfig("synthetic_iqa", str(tmp_path / "data"))],
                         model=ModelConfig(backbone="tiny_clip", pretrained=False), loggers=["wandb"], quiet=True)
    with pytest.raises(ImportError, match=r"perceptclip\[tracking\]"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "log.csv").exists()


def test_wandb_without_a_key_is_one_line_before_training(tmp_path):
    """No API key and no offline mode: W&B's own UsageError (raised without a network) becomes one line naming
    what to do; nothing is trained. In a fresh process: W&B keeps its settings of an earlier run in-process."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"))   # no ~/.netrc login either
    done = subprocess.run([sys.executable, "-m", "percept", "train", str(tmp_path / "run"), "--dataset",
                           "synthetic_iqa", "--root", str(tmp_path / "data"), "--backbone", "tiny_clip", "--random-init",
                           "--max-epochs", "1", "--logger", "wandb", "--quiet"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "W&B could not start" in err and "wandb login" in err and "WANDB_MODE=offline" in err
    assert not (tmp_path / "run" / "best.safetensors").exists()
