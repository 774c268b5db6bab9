"""The offline demo (README's first command) and the CLI."""
import json

import pandas as pd
import pytest
import torch

from percept.cli import main
from percept.demo import run_demo
from percept.files import read_json
from percept.model import load_model


def test_demo_is_one_engine_run_reproducible_and_loadable(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "a"), "--epochs", "1", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    first = read_json(tmp_path / "a" / "run" / "metrics.json")
    assert printed["test"] == first["test"]
    second = run_demo(tmp_path / "b", epochs=1, log=None)
    assert second["test"] == first["test"]                  # deterministic
    config = read_json(tmp_path / "a" / "run" / "config.json")
    assert config["data"][0]["dataset"] == "synthetic_iqa" and config["model"]["lora_r"] == 16
    # split by reference: no reference image in two parts
    table = pd.read_csv(tmp_path / "a" / "synthetic" / "manifest.csv")
    preds = pd.read_csv(tmp_path / "a" / "run" / "predictions.csv")
    test_refs = set(table.set_index("image").loc[preds["id"], "reference"])
    assert test_refs and len(preds) == 20 * len(test_refs)
    assert load_model(tmp_path / "a" / "run" / "best.safetensors").config.backbone == "tiny_clip_prior"


def test_cli_params_counts(capsys):
    assert main(["params", "--backbone", "tiny_clip", "--head", "linear", "--outputs", "8"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["head"] == 64 * 8 + 8 and counts["trainable"] == counts["head"] + counts["lora"]


def test_cli_reports_bad_names_without_traceback(capsys):
    assert main(["params", "--backbone", "resnet"]) == 2
    assert "unknown backbone 'resnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["params", "--strategy", "adapter"])


def test_cli_bench_passes_options_through(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--backbone", "tiny_clip", "--batch-size", "4", "--steps", "1", "--warmup", "0",
                 "--no-reference", "--no-data", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["measurements"]["train_synthetic"]["images_per_s"] > 0
