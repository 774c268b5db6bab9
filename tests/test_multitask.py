"""One adapter for several tasks: loss normalisation by the constant-prediction loss,
the chance-corrected selection rule, and a mixed-task run (three demo sets, stage 2) end to end."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import kill_in_epoch
from scipy.stats import entropy

from percept.data.sources import DataConfig
from percept.engine.losses import get_loss
from percept.engine.multitask import (
    MIXED_METRIC,
    constant_prediction_loss,
    loss_scales,
    loss_weights,
    selection_metrics,
    selection_value,
)
from percept.engine.train import TrainConfig, train
from percept.model.perceptclip import ModelConfig


def _src(name, task, outputs=1):
    return SimpleNamespace(name=name, task=task, num_outputs=outputs)


def test_constant_prediction_loss_is_what_the_best_constant_scores():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.4, 1.0, 200)
    best = torch.full((200,), float(y.mean()))
    assert constant_prediction_loss("memorability", y) == pytest.approx(
        float(get_loss("mse")(best, torch.tensor(y))), rel=1e-5)
    classes = rng.integers(0, 4, 300)
    freq = np.bincount(classes, minlength=4) / 300
    logits = torch.log(torch.tensor(freq, dtype=torch.float32)).expand(300, 4)
    assert constant_prediction_loss("emotion", classes) == pytest.approx(entropy(freq), rel=1e-6)
    assert constant_prediction_loss("emotion", classes) == pytest.approx(
        float(get_loss("cross_entropy")(logits, torch.tensor(classes))), rel=1e-5)
    noise = torch.tensor(rng.normal(size=200), dtype=torch.float32)   # uncorrelated with y: loss near 0.5
    assert constant_prediction_loss("iqa", y) == 0.5
    assert float(get_loss("plcc")(noise, torch.tensor(y))) == pytest.approx(0.5, abs=0.1)


def test_one_task_keeps_the_papers_plain_mean():
    sources = [_src("livec", "iqa"), _src("koniq10k", "iqa")]
    assert loss_scales(sources, {}) == [1.0, 1.0]
    assert selection_metrics(sources, None) == {"livec": "srcc", "koniq10k": "srcc"}
    val = {"livec": {"srcc": 0.8}, "koniq10k": {"srcc": 0.9}}
    assert selection_value(val, sources, selection_metrics(sources, None)) == pytest.approx(0.85)


def test_mixed_tasks_are_normalised_and_selected_chance_corrected():
    sources = [_src("koniq10k", "iqa"), _src("lamem", "memorability"), _src("emoset", "emotion", 8)]
    labels = {"koniq10k": np.arange(10.0), "lamem": np.array([0.5, 0.7, 0.9]), "emoset": np.arange(8)}
    assert loss_scales(sources, labels) == pytest.approx([0.5, np.var([0.5, 0.7, 0.9]), math.log(8)])
    metrics = selection_metrics(sources, None)
    assert metrics == {"koniq10k": "srcc", "lamem": "srcc", "emoset": "accuracy"}
    val = {"koniq10k": {"srcc": 0.9}, "lamem": {"srcc": 0.6}, "emoset": {"accuracy": 0.125 + 0.875 * 0.3}}
    assert selection_value(val, sources, metrics) == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert loss_weights(sources, {"emotion": 2.0}) == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="cannot apply to datasets of different tasks"):
        selection_metrics(sources, "srcc")
    with pytest.raises(ValueError, match=r"no dataset of this run has"):
        loss_weights(sources, {"aesthetics": 1.0})
    with pytest.raises(ValueError, match="labels are constant"):
        loss_scales(sources, {**labels, "lamem": np.array([0.5, 0.5])})


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    data = [DataConfig(n, root / "synthetic") for n in ("synthetic_iqa", "synthetic_strength", "synthetic_distortion")]
    config = TrainConfig(data=data, model=ModelConfig(backbone="tiny_clip", pretrained=False), max_epochs=2,
                         batch_size=16, test_crops=2, head_finetune=True, device="cpu", quiet=True,
                         task_weights={"emotion": 2.0})
    return config, root / "run", train(config, root / "run")


def test_a_mixed_task_run_trains_every_head_with_its_task(mixed_run):
    import pandas as pd
    config, run, result = mixed_run
    assert result["select_metric"] == MIXED_METRIC
    assert set(result["test"]) == {"synthetic_iqa", "synthetic_strength", "synthetic_distortion"}
    assert "srcc" in result["test"]["synthetic_iqa"] and "accuracy" in result["test"]["synthetic_distortion"]
    log = pd.read_csv(run / "log.csv")
    val = log.iloc[int(result["best_epoch"]) - 1]
    chance = 1 / 4                                              # synthetic_distortion: 4 classes
    expected = np.mean([val["val_srcc_synthetic_iqa"], val["val_srcc_synthetic_strength"],
                        (val["val_accuracy_synthetic_distortion"] - chance) / (1 - chance)])
    assert val[f"val_{MIXED_METRIC}"] == pytest.approx(expected)   # the selection rule, from the logged metrics
    assert set(result["stage2"]) == set(result["test"])        # stage 2: one head each, its own metric
    stage2 = result["stage2"]
    assert result["val_score"] == pytest.approx(np.mean([stage2["synthetic_iqa"]["val_score"],
                                                         stage2["synthetic_strength"]["val_score"],
                                                         (stage2["synthetic_distortion"]["val_score"] - chance)
                                                         / (1 - chance)]))
    import json
    assert json.loads((run / "config.json").read_text())["task_weights"] == {"emotion": 2.0}
    same = lambda r: json.dumps(r, sort_keys=True)             # noqa: E731 - NaN (a constant prediction) == NaN
    assert same(train(config, run)) == same(result)            # finished: resuming returns the same result


def test_mixed_batch_loss_is_the_weighted_normalised_mean(monkeypatch):
    """train_one_epoch's batch loss = sum_d w_d L_d / s_d / sum_d w_d over the datasets present."""
    from percept.engine.train import train_one_epoch
    torch.manual_seed(0)
    from percept.model.perceptclip import build_model
    model = build_model(backbone="tiny_clip", pretrained=False, heads={"a": 1, "b": 3})
    sources = [SimpleNamespace(name="a", task="memorability", kind="regression"),
               SimpleNamespace(name="b", task="emotion", kind="classification")]
    x = torch.randn(6, 3, 224, 224)
    batch = {"image": x, "label": torch.tensor([0.2, 0.5, 0.9, 0.0, 1.0, 2.0]),
             "dataset": torch.tensor([0, 0, 0, 1, 1, 1])}
    model.eval()                                                # no dropout: the loss is a function of weights
    with torch.no_grad():
        emb = model.encoder(x)
        mse = get_loss("mse")(model.heads["a"](emb[:3]), batch["label"][:3])
        ce = get_loss("cross_entropy")(model.heads["b"](emb[3:]), batch["label"][3:].long())
    expected = (1.0 * mse / 0.05 + 3.0 * ce / 1.1) / 4.0
    model.train = lambda *a, **k: model                         # keep eval mode inside the epoch
    seen = []
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    loss = train_one_epoch(model, [batch], sources, opt, torch.device("cpu"), "fp32", 1, lambda it, **k: it,
                           loss_weights=[1.0, 3.0], loss_scales=[0.05, 1.1])
    seen.append(loss)
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_a_mixed_run_interrupted_mid_epoch_resumes_to_the_same_result(mixed_run, tmp_path, monkeypatch):
    import pandas as pd
    config, run, reference = mixed_run
    kill_in_epoch(monkeypatch, config, tmp_path / "resumed", epoch=2)   # in the middle of stage 1's epoch 2
    resumed = train(config, tmp_path / "resumed")
    assert resumed["test"] == reference["test"] and resumed["val_score"] == reference["val_score"]
    assert resumed["stage2"] == reference["stage2"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed" / "log.csv").drop(columns="seconds"),
                                  pd.read_csv(run / "log.csv").drop(columns="seconds"))


def test_a_mixed_run_on_two_gloo_processes_with_task_weights_from_the_command_line(mixed_run, tmp_path):
    """DDP (2 CPU processes): the mixed-task run finishes with the weights given on the command line, every
    test image of each dataset is predicted once, and each head's metrics are those of the saved weights."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from percept.data.sources import open_source
    from percept.engine.evaluate import evaluate_source
    from percept.model.perceptclip import load_model
    config, _, _ = mixed_run
    root = str(config.data[0].root)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "percept",
           "train", "--run-dir", str(run), "--dataset", "synthetic_iqa", "--root", root, "--dataset",
           "synthetic_distortion", "--root", root,
           "--backbone", "tiny_clip", "--random-init", "--lr", "1e-3", "--batch-size", "16", "--max-epochs", "1",
           "--test-crops", "2", "--device", "cpu", "--quiet", "--task-weights", "emotion=0.5", "iqa=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    assert json.loads((run / "config.json").read_text())["task_weights"] == {"emotion": 0.5, "iqa": 2.0}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["select_metric"] == MIXED_METRIC
    model = load_model(run / "best.safetensors")
    for name, metric in (("synthetic_iqa", "srcc"), ("synthetic_distortion", "accuracy")):
        mine = pd.read_csv(run / f"predictions_{name}.csv")
        assert len(mine) > 0 and mine["id"].is_unique
        expected, frame = evaluate_source(model, open_source(DataConfig(name, root)), 1, "test", head_name=name,
                                          test_crops=2)
        assert sorted(frame["id"]) == sorted(mine["id"])
        assert metrics["test"][name][metric] == pytest.approx(expected[metric], abs=1e-6)


def test_task_weights_get_their_own_run_name_and_results_column(mixed_run):
    """Two unified runs that differ only by their task weights never share a directory or a results row."""
    from dataclasses import replace

    from percept.study.results import collect_runs
    from percept.study.sweep import run_name
    config, run, _ = mixed_run
    assert run_name(config).split("/")[-3] == "tiny_clip_2phase_weights-emotion2"
    assert run_name(replace(config, task_weights=None)).split("/")[-3] == "tiny_clip_2phase"
    table = collect_runs(run)
    assert set(table["task_weights"]) == {"emotion=2"} and table["mixed_tasks"].all()
