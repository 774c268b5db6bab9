"""The training engine on CPU with a tiny random-initialised backbone and the embedded synthetic data:
protocol pieces (sampling, selection by validation, aggregation), resume, bad input, multi-dataset,
cross-dataset, CLI."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import kill_in_epoch

import percept.engine.train as train_module
from percept.core.files import read_json
from percept.data.sources import DataConfig
from percept.data.synthetic import generate_synthetic_iqa
from percept.engine.evaluate import evaluate_run
from percept.engine.runs import IncompatibleRunError
from percept.engine.train import (
    ProportionalBatchSampler,
    TrainConfig,
    TrainingError,
    train,
)
from percept.interface.cli import main
from percept.model.perceptclip import ModelConfig, load_model
from percept.study.results import aggregate, collect_runs, select_by_validation


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """8 references (5 train / 1 val / 2 test per split) x 4 distortions x 5 levels = 160 small images."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_iqa(root, n_references=8, size=224, seed=0)
    return root


@pytest.fixture(scope="module")
def one_epoch_run(synth, tmp_path_factory):
    """One finished one-epoch run of the base config (the torchvision data route on CPU), shared by the tests
    that only compare another route's run with it: (run directory, train's result)."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    return run, train(config(synth, max_epochs=1, device_augment="off"), run)


def config(synth, dataset="synthetic_iqa", **overrides):
    data = overrides.pop("data", None) or [DataConfig(dataset, str(synth))]
    base = dict(data=data, model=ModelConfig(backbone="tiny_clip", pretrained=False), lr=1e-3, batch_size=16,
                max_epochs=2, patience=2, test_crops=3, quiet=True)
    return TrainConfig(**{**base, **overrides})


# ------------------------------------------------------------------------------------------ sampling
def test_proportional_sampler_visits_everything_once_in_proportion():
    sizes, batch = [300, 100, 20], 21
    sampler = ProportionalBatchSampler(sizes, batch, seed=5)
    batches = sampler.batches()
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(sum(sizes)))        # every item exactly once per epoch
    assert len(batches) == len(sampler) == 20
    offsets = np.array([0, 300, 400, 420])
    expected = batch * np.array(sizes) / sum(sizes)                  # 15, 5, 1
    for b in batches:
        counts = np.histogram(b, bins=offsets)[0]
        assert np.all(np.abs(counts - expected) <= 1), counts
    assert not np.array_equal(flat, np.concatenate(ProportionalBatchSampler(sizes, batch, seed=6).batches()))


def test_sampler_single_dataset_is_a_shuffled_epoch_without_singleton_batch():
    batches = ProportionalBatchSampler([33], 8, seed=0).batches()
    assert [len(b) for b in batches] == [8, 8, 8, 8]                 # the 33rd item alone is dropped
    assert len(set(np.concatenate(batches).tolist())) == 32
    assert len(ProportionalBatchSampler([34], 8, seed=0).batches()[-1]) == 2


# ------------------------------------------------------------------------------------------ results
def fake_run(root, name, split, lr, val, test, dataset="livec", metric="srcc"):
    run = root / name
    run.mkdir(parents=True)
    cfg = TrainConfig(data=[DataConfig(dataset, str(root))], model=ModelConfig(backbone="tiny_clip", pretrained=False),
                      split=split, lr=lr)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run / "metrics.json").write_text(json.dumps({
        "status": "complete", "select_metric": metric, "val_score": val, "best_epoch": 3, "epochs_run": 10,
        "test": {dataset: {"srcc": test, "plcc_logistic": test + 0.01, "n_images": 10}}}))


def test_selection_uses_validation_never_test(tmp_path):
    # split 1: lr 1e-4 has the better validation score but the worse test score
    fake_run(tmp_path, "a", 1, 1e-4, val=0.90, test=0.70)
    fake_run(tmp_path, "b", 1, 1e-3, val=0.80, test=0.95)
    fake_run(tmp_path, "c", 2, 1e-4, val=0.50, test=0.60)
    fake_run(tmp_path, "d", 2, 1e-3, val=0.85, test=0.80)
    fake_run(tmp_path, "e", 3, 1e-4, val=math.nan, test=0.99)      # NaN validation never wins
    fake_run(tmp_path, "f", 3, 1e-3, val=0.10, test=0.20)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "metrics.json").write_text('{"status": "running"}')
    table = collect_runs(tmp_path)
    assert len(table) == 6
    selected = select_by_validation(table)
    assert selected.set_index("split")["lr"].to_dict() == {1: 1e-4, 2: 1e-3, 3: 1e-3}
    assert selected["test_srcc"].tolist() == [0.70, 0.80, 0.20]
    agg = aggregate(selected)
    assert len(agg) == 1 and agg["n_splits"].iloc[0] == 3
    assert agg["median_srcc"].iloc[0] == pytest.approx(np.median([0.70, 0.80, 0.20]))
    assert agg["mean_srcc"].iloc[0] == pytest.approx(np.mean([0.70, 0.80, 0.20]))
    assert agg["mean_plcc_logistic"].iloc[0] == pytest.approx(np.mean([0.71, 0.81, 0.21]))


def test_selection_lower_is_better_metric(tmp_path):
    fake_run(tmp_path, "a", 1, 1e-4, val=0.02, test=0.5, metric="mse")
    fake_run(tmp_path, "b", 1, 1e-3, val=0.01, test=0.4, metric="mse")
    assert select_by_validation(collect_runs(tmp_path))["lr"].tolist() == [1e-3]


# ------------------------------------------------------------------------------------------ runs
def test_full_run_writes_everything_and_keeps_the_best_epoch(synth, tmp_path):
    result = train(config(synth, max_epochs=3, patience=3), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "environment.json", "log.csv", "checkpoint.safetensors", "best.safetensors",
                 "predictions.csv", "metrics.json"):
        assert (run / name).is_file(), name
    log = pd.read_csv(run / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]
    best = int(log["val_srcc"].idxmax())
    assert result["best_epoch"] == log["epoch"][best] and result["val_score"] == pytest.approx(log["val_srcc"][best])
    # the kept weights are the best epoch's: re-evaluating best.safetensors gives the reported val score
    assert result["val"]["synthetic_iqa"]["srcc"] == pytest.approx(result["val_score"])
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns) == ["id", "label", "prediction", "crop_std"] and len(preds) == 40
    assert (preds["crop_std"] > 0).all()                              # 3 different crops per image
    from percept.core.metrics import srcc
    assert result["test"]["synthetic_iqa"]["srcc"] == pytest.approx(srcc(preds["prediction"], preds["label"]))
    env = read_json(run / "environment.json")
    assert env["device"] == "cpu" and env["precision"] == "fp32" and "torch" in env
    assert load_model(run / "best.safetensors").config.heads == {"synthetic_iqa": 1}
    # a finished run is not trained again
    assert train(config(synth, max_epochs=3, patience=3), run) == read_json(run / "metrics.json")


def test_resume_after_interruption_gives_identical_metrics(synth, tmp_path, monkeypatch):
    cfg = config(synth, max_epochs=3, patience=3)
    reference = train(cfg, tmp_path / "uninterrupted")

    kill_in_epoch(monkeypatch, cfg, tmp_path / "resumed", epoch=2)
    assert len(pd.read_csv(tmp_path / "resumed" / "log.csv")) == 1
    resumed = train(cfg, tmp_path / "resumed")
    assert resumed["test"] == reference["test"] and resumed["val_score"] == reference["val_score"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed" / "log.csv").drop(columns="seconds"),
                                  pd.read_csv(tmp_path / "uninterrupted" / "log.csv").drop(columns="seconds"))


def test_resume_refuses_a_different_config(synth, tmp_path):
    train(config(synth, max_epochs=1), tmp_path / "run")
    with pytest.raises(IncompatibleRunError, match=r"lr: 0.001 in the run, 0.0005 now"):
        train(config(synth, max_epochs=1, lr=5e-4), tmp_path / "run")
    # execution settings may differ
    train(config(synth, max_epochs=1, eval_batch_size=7, num_workers=0), tmp_path / "run")


def test_nan_loss_stops_naming_epoch_and_keeps_last_checkpoint(synth, tmp_path, monkeypatch):
    real = train_module.get_loss
    epochs = {"n": 0}

    def poisoned(name):
        epochs["n"] += 1
        loss = real(name)
        return loss if epochs["n"] == 1 else (lambda pred, target: loss(pred, target) * float("nan"))

    monkeypatch.setattr(train_module, "get_loss", poisoned)
    with pytest.raises(TrainingError, match=r"at epoch 2, batch 1 of .*checkpoint of epoch 1 is kept"):
        train(config(synth, max_epochs=3, patience=3), tmp_path / "run")
    from percept.core.checkpoint import load_tensors
    assert load_tensors(tmp_path / "run" / "checkpoint.safetensors")[1]["state"]["epoch"] == 1


def test_bad_input(synth, tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size=1000; lower the batch size"):
        train(config(synth, batch_size=1000), tmp_path / "a")
    with pytest.raises(ValueError, match="has no split 9"):
        train(config(synth, split=9), tmp_path / "b")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        DataConfig("nope", str(synth))
    with pytest.raises(ValueError, match="cannot apply to datasets of different tasks"):   # mixed: each its own
        train(config(synth, select_metric="srcc", data=[DataConfig("synthetic_iqa", str(synth)),
                                                        DataConfig("synthetic_distortion", str(synth))]), tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="percept prepare livec"):
        train(config(synth, data=[DataConfig("livec", str(tmp_path))]), tmp_path / "d")


def test_class_indices_outside_the_classes_are_refused_before_training(synth):
    from percept.data.sources import check_trainable, open_source
    source = open_source(DataConfig("synthetic_distortion", str(synth)))
    check_trainable(source, 1, 16)                                   # the embedded set is fine
    test_row = source.frame.index[source.frame["split1"] == "test"][0]
    source.frame[source.label_column] = source.frame[source.label_column].astype(int)
    source.frame.loc[test_row, source.label_column] = 4             # 4 classes: 0..3
    with pytest.raises(ValueError, match=r"split 1 test: 1 label\(s\) outside the class indices 0\.\.3.*e\.g\. 4"):
        check_trainable(source, 1, 16)


def test_data_loader_workers_default_to_none_on_cpu_and_the_cores_on_gpu(monkeypatch):
    from percept.engine import runtime
    from percept.engine.runtime import resolve_workers
    assert config(None).num_workers is None
    assert resolve_workers(None, torch.device("cpu")) == 0
    assert resolve_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 64)
    assert resolve_workers(None, torch.device("cuda")) == 16
    assert resolve_workers(None, torch.device("cuda"), processes=8) == 8   # torchrun: cores shared per process
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    assert resolve_workers(None, torch.device("cuda"), processes=4) == 1
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        resolve_workers(-1, torch.device("cpu"))


def test_multi_dataset_two_stage_and_cross_dataset(synth, tmp_path):
    data = [DataConfig("synthetic_iqa", str(synth)), DataConfig("synthetic_strength", str(synth))]
    result = train(config(synth, data=data, max_epochs=1, head_finetune=True), tmp_path / "multi")
    assert set(result["test"]) == {"synthetic_iqa", "synthetic_strength"} and set(result["stage2"]) == set(result["test"])
    for name in ("synthetic_iqa", "synthetic_strength"):
        assert len(pd.read_csv(tmp_path / "multi" / f"predictions_{name}.csv")) == 40
    model = load_model(tmp_path / "multi" / "best.safetensors")
    assert model.config.heads == {"synthetic_iqa": 1, "synthetic_strength": 1}
    # the stage-2 heads are what was saved: stage-2 validation scores are reproduced from the file
    assert result["val"]["synthetic_strength"]["srcc"] == pytest.approx(result["stage2"]["synthetic_strength"]["val_score"])
    # cross-dataset: the synthetic_iqa head on every image of synthetic_strength, no retraining
    record = evaluate_run(tmp_path / "multi", DataConfig("synthetic_strength", str(synth)), head_name="synthetic_iqa",
                          device="cpu")
    assert record["metrics"]["n_images"] == 160 and record["head_name"] == "synthetic_iqa"
    assert (tmp_path / "multi" / "eval" / "synthetic_strength_all_test_head-synthetic_iqa" / "predictions.csv").is_file()


def test_two_phase_run_takes_stage_one_from_the_one_stage_run(synth, tmp_path, monkeypatch):
    """stage1_from: a two-phase run reuses the finished one-stage run of its configuration: the same metrics as
    retraining stage 1, without one training step; a run of another configuration is refused."""
    one = train(config(synth, max_epochs=2), tmp_path / "one")
    retrained = train(config(synth, max_epochs=2, head_finetune=True), tmp_path / "retrained")
    real = train_module.train_one_epoch
    monkeypatch.setattr(train_module, "train_one_epoch", lambda *a, **k: pytest.fail("stage 1 was retrained"))
    reused = train(config(synth, max_epochs=2, head_finetune=True, stage1_from=str(tmp_path / "one")),
                   tmp_path / "reused")
    assert reused["stage1_from"] == str(tmp_path / "one") and reused["best_epoch"] == one["best_epoch"]
    assert reused["test"] == retrained["test"] and reused["stage2"] == retrained["stage2"]
    logs = [pd.read_csv(tmp_path / name / "log.csv").drop(columns="seconds") for name in ("reused", "retrained")]
    assert logs[0].equals(logs[1])                            # stage 1's epochs, as retraining gives them
    monkeypatch.setattr(train_module, "train_one_epoch", real)
    with pytest.raises(ValueError, match=r"not the one-stage run of this configuration \(differs in lr\)"):
        train(config(synth, max_epochs=2, lr=5e-4, head_finetune=True, stage1_from=str(tmp_path / "one")),
              tmp_path / "other")
    with pytest.raises(ValueError, match="is for a two-phase run"):
        train(config(synth, max_epochs=2, stage1_from=str(tmp_path / "one")), tmp_path / "not_two_phase")


def test_classification_run_and_cli_predict(synth, tmp_path, capsys):
    run = tmp_path / "cls"
    assert main(["train", "--run-dir", str(run), "--dataset", "synthetic_distortion", "--root", str(synth),
                 "--backbone", "tiny_clip", "--random-init", "--lr", "1e-3", "--batch-size", "16",
                 "--max-epochs", "1", "--test-crops", "1", "--quiet"]) == 0
    metrics = read_json(run / "metrics.json")["test"]["synthetic_distortion"]
    assert set(metrics) >= {"accuracy", "mAP", "macro_f1", "weighted_f1"} and "acc_2" not in metrics
    preds = pd.read_csv(run / "predictions.csv")
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]]
    assert probs.shape[1] == 4 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    capsys.readouterr()
    images = sorted(str(p) for p in (synth / "images").glob("*.png"))[:3]
    assert main(["predict", *images, "--model", str(run), "--csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert len(table) == 3 and set(table["prediction"]) <= {"gaussian_blur", "gaussian_noise", "jpeg",
                                                           "color_quantization"}
    # resuming from the run directory alone finds the finished run
    assert main(["train", "--run-dir", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", str(run), "--lr", "0.5", "--quiet"]) == 2          # a protocol flag is never ignored
    assert "resumes with its own configuration; --lr would change it" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.jpg"), "--model", str(run)]) == 2


def test_predict_on_real_images(data_root, synth, tmp_path):
    from percept.engine.predict import predict_images
    run = tmp_path / "iqa"
    train(config(synth, max_epochs=1, test_crops=2), run)
    images = sorted((data_root / "livec" / "ChallengeDB_release" / "Images").glob("*.JPG"))[:2]
    table = predict_images(images, run, device="cpu")
    assert table["image"].tolist() == [str(p) for p in images] and np.isfinite(table["score"]).all()
    # deterministic crops: the same image gives the same score twice
    assert predict_images(images[:1], run, device="cpu")["score"][0] == pytest.approx(table["score"][0], abs=1e-6)


def test_random_init_variants_get_their_own_run_names(synth):
    """The prior ablation (notebook 08) trains a backbone that has weights from random ones too: the two runs
    must not share a directory (a finished one would be reused for the other); a backbone without weights
    (tiny_clip) keeps its plain name."""
    from percept.study.sweep import expand_grid
    base = config(synth, max_epochs=1)
    base.model = ModelConfig(backbone="tiny_clip_prior", pretrained=True)
    grid = expand_grid(base, lrs=[1e-3], model_variants=[{}, {"pretrained": False}, {"pretrained": False, "strategy": "full"}])
    assert sorted(grid) == ["synthetic_iqa/tiny_clip_prior/split1/lr0.001",
                            "synthetic_iqa/tiny_clip_prior_random-init/split1/lr0.001",
                            "synthetic_iqa/tiny_clip_prior_random-init_full/split1/lr0.001"]
    assert [c.model.pretrained for c in grid.values()] == [True, False, False]


def test_sweep_runs_grid_skips_finished_and_selects_by_validation(synth, tmp_path):
    from percept.study.sweep import expand_grid, run_sweep
    grid = expand_grid(config(synth, max_epochs=1), lrs=[1e-3, 1e-4], splits=[1, 2])
    assert sorted(grid) == [f"synthetic_iqa/tiny_clip/split{s}/lr{lr}" for s in (1, 2) for lr in ("0.0001", "0.001")]
    assert run_sweep(grid, tmp_path, gpus=[], log=lambda *a: None) == dict.fromkeys(grid, "done")
    assert set(run_sweep(grid, tmp_path, gpus=[], log=lambda *a: None).values()) == {"skipped"}
    selected = select_by_validation(collect_runs(tmp_path))
    assert selected["split"].tolist() == [1, 2]
    table = collect_runs(tmp_path)
    for split, row in selected.set_index("split").iterrows():
        candidates = table[table["split"] == split]
        assert row["val_score"] == candidates["val_score"].max()


def test_image_cache_gives_the_same_run(synth, tmp_path, one_epoch_run):
    _, plain = one_epoch_run
    cached = train(config(synth, max_epochs=1, cache_dir=str(tmp_path / "cache")), tmp_path / "cached")
    assert list((tmp_path / "cache").glob("images-*.json"))             # the cache was built and used
    assert cached["test"] == plain["test"] and cached["val_score"] == plain["val_score"]


def test_torchrun_two_processes_on_cpu(synth, tmp_path):
    """DDP (gloo on CPU): the run finishes, every test image is predicted exactly once, and the reported
    metrics are those of the saved best weights evaluated in one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from percept.data.sources import open_source
    from percept.engine.evaluate import evaluate_source
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "percept",
           "train", "--run-dir", str(run), "--dataset", "synthetic_iqa", "--root", str(synth), "--backbone",
           "tiny_clip", "--random-init", "--lr", "1e-3", "--batch-size", "16", "--max-epochs", "1",
           "--test-crops", "2", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_json(run / "environment.json")["world_size"] == 2
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == 40 and preds["id"].is_unique
    model = load_model(run / "best.safetensors")
    metrics, frame = evaluate_source(model, open_source(DataConfig("synthetic_iqa", str(synth))), 1, "test",
                                     head_name="synthetic_iqa", test_crops=2)
    assert frame["id"].tolist() == preds["id"].tolist()
    np.testing.assert_allclose(frame["prediction"], preds["prediction"], atol=1e-5)
    assert read_json(run / "metrics.json")["test"]["synthetic_iqa"]["srcc"] == pytest.approx(metrics["srcc"], abs=1e-6)


def test_device_augmentation_gives_the_same_run(synth, tmp_path, one_epoch_run):
    """The GPU fast path's data route (uint8 crops in the loader, flips + normalisation on the device),
    forced on here on CPU, reproduces the torchvision route exactly."""
    off_dir, off = one_epoch_run
    on = train(config(synth, max_epochs=1, device_augment="on"), tmp_path / "on")
    assert on["test"] == off["test"] and on["val_score"] == off["val_score"]
    assert pd.read_csv(tmp_path / "on" / "log.csv")["train_loss"].tolist() == \
        pd.read_csv(off_dir / "log.csv")["train_loss"].tolist()
