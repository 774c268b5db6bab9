"""The offline demo (README's first command) and the CLI."""
import json

import numpy as np
import pytest
import torch

from percept.cli import main
from percept.demo import run_demo, split_by_reference
from percept.model import load_model


def test_split_by_reference_never_leaks():
    refs = np.repeat([f"ref{i:02d}" for i in range(10)], 20)
    part = split_by_reference(refs, seed=3)
    for ref in set(refs):
        assert len(set(part[refs == ref])) == 1
    assert {p: int((part == p).sum()) for p in ("train", "val", "test")} == {"train": 120, "val": 40, "test": 40}
    assert not np.array_equal(part, split_by_reference(refs, seed=4))


def test_demo_runs_writes_loadable_results_and_is_reproducible(tmp_path):
    first = run_demo(tmp_path / "a", epochs=2, n_references=5, log=lambda *a: None)
    second = run_demo(tmp_path / "b", epochs=2, n_references=5, log=lambda *a: None)
    assert first["test"] == second["test"] and first["history"] == second["history"]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["test"]["srcc"] == pytest.approx(first["test"]["srcc"])
    assert "not a reproduction" in saved["note"]
    # the saved weights reproduce the reported test metrics
    import pandas as pd
    from percept.demo import predict
    from percept.metrics import srcc
    from percept.transforms import load_rgb
    table = pd.read_csv(tmp_path / "a" / "synthetic_iqa" / "manifest.csv")
    test = table[split_by_reference(table["reference"].to_numpy(), seed=0) == "test"]
    model = load_model(tmp_path / "a" / "weights.safetensors")
    pred = predict(model, [load_rgb(tmp_path / "a" / "synthetic_iqa" / p) for p in test["image"]])
    assert srcc(pred, test["synthetic_quality"].to_numpy()) == pytest.approx(saved["test"]["srcc"], abs=1e-6)


def test_cli_params_counts(capsys):
    assert main(["params", "--backbone", "tiny_clip", "--head", "linear", "--outputs", "8"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["head"] == 64 * 8 + 8 and counts["trainable"] == counts["head"] + counts["lora"]


def test_cli_reports_bad_names_without_traceback(capsys):
    assert main(["params", "--backbone", "resnet"]) == 2
    assert "unknown backbone 'resnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["params", "--strategy", "adapter"])
