"""Files that are tiny on disk and huge in memory, and other hostile inputs: each is a per-file error (the rest of
a batch is scored) or a one-line error naming the file and what to do, never a crash or a traceback."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import percept
from percept.core.images import MAX_ASPECT, load_rgb
from percept.engine.predict import predict_images
from percept.interface.cli import main
from percept.model.perceptclip import ModelConfig, build_model, save_weights


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims ``width`` x ``height`` pixels, with no pixel data: ~70 bytes."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_run")
    torch.manual_seed(0)
    config = ModelConfig(backbone="tiny_clip", pretrained=False, heads={"livec": 1})
    save_weights(build_model(config).eval(), root / "best.safetensors")
    (root / "config.json").write_text(json.dumps({"data": [{"dataset": "livec", "root": "absent"}],
                                                  "model": config.to_dict(), "test_crops": 2}))
    return root


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    Image.new("RGB", (5000, 1), (90, 90, 90)).save(root / "strip.png")           # ~100 bytes; 224 x 1.1M upscaled
    (root / "bomb.png").write_bytes(_png_claiming(50000, 50000))                 # 2.5 G pixels claimed
    Image.new("RGB", (MAX_ASPECT * 30, 30), (10, 200, 30)).save(root / "just_within.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (260, 300, 3), dtype=np.uint8)).save(root / "ok.png")
    return root


def test_huge_claims_and_extreme_strips_are_per_file_errors(run, hostile, capsys):
    assert (hostile / "strip.png").stat().st_size < 200 and (hostile / "bomb.png").stat().st_size < 100
    table = predict_images([hostile], run, device="cpu").set_index("image")
    errors = {name: table.loc[str(hostile / name), "error"] for name in ("bomb.png", "strip.png")}
    assert "exceeds limit" in errors["bomb.png"] and "bomb.png" in errors["bomb.png"]
    assert "more elongated than 1:20" in errors["strip.png"] and "strip.png" in errors["strip.png"]
    assert table.loc[str(hostile / "ok.png"), "error"] == "" and table.loc[str(hostile / "just_within.png"), "error"] == ""
    assert main(["predict", str(hostile), "--model", str(run), "--quiet", "--csv"]) == 1   # the rest were scored
    assert capsys.readouterr().err.count("cannot score") == 2


def test_the_limits_hold_for_pil_images_tensors_training_data_and_the_app(run, hostile, tmp_path):
    metric = percept.create_metric(run, device="cpu")
    with pytest.raises(ValueError, match="more elongated than 1:20"):
        metric(torch.rand(1, 3, 2, 400))                                # a tensor never reaches the upscale
    with pytest.raises(ValueError, match="more elongated than 1:20"):
        metric(Image.new("RGB", (3000, 1)))
    with pytest.raises(ValueError, match=r"cannot read image .*bomb.png.*exceeds limit"):
        load_rgb(hostile / "bomb.png")                                  # what training's dataset reads with
    from percept.interface.app_models import load_models, score_images
    table, _, messages = score_images(load_models([run]), [hostile / "strip.png", hostile / "ok.png"])
    assert list(table["image"]) == ["ok.png"] and len(messages) == 1 and "elongated" in messages[0]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_damaged_files_and_faults_end_in_one_line(run, hostile, tmp_path, capsys, monkeypatch):
    image = str(hostile / "ok.png")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((run / "config.json").read_text())
    (damaged / "best.safetensors").write_bytes((run / "best.safetensors").read_bytes()[:300])   # truncated
    assert main(["predict", image, "--model", str(damaged), "--quiet"]) == 2
    assert "best.safetensors is damaged" in _one_line_error(capsys)
    (damaged / "best.safetensors").write_bytes((run / "best.safetensors").read_bytes())
    (damaged / "config.json").write_text(json.dumps({"data": 3, "model": {}}))                 # hand-edited
    assert main(["predict", image, "--model", str(damaged), "--quiet"]) == 2
    assert "config.json: `data` must be a list of datasets" in _one_line_error(capsys)
    import percept.engine.predict as predict_module

    def fault(error):
        def raising(*args, **kwargs):
            raise error
        return raising
    monkeypatch.setattr(predict_module, "predict_images", fault(OSError(28, "No space left on device")))
    assert main(["predict", image, "--model", str(run), "--out", str(tmp_path / "s.csv")]) == 2
    assert "No space left on device" in _one_line_error(capsys)
    monkeypatch.setattr(predict_module, "predict_images", fault(KeyboardInterrupt()))
    assert main(["predict", image, "--model", str(run), "--out", str(tmp_path / "s.csv")]) == 130
    assert "interrupted; re-run the same command to resume" in capsys.readouterr().err
    assert main(["predict", image, "--model", str(run)]) == 130               # without --out nothing resumes
    assert capsys.readouterr().err.strip() == "percept predict: interrupted"
    import io
    import sys

    import percept.interface.cli_commands as commands
    monkeypatch.setattr(commands, "cmd_list", fault(BrokenPipeError()))
    assert main(["list", "backbones"]) == 2                  # a pipe of the command's own: an error, said
    assert "a pipe closed" in _one_line_error(capsys)

    class ClosedStdout(io.StringIO):                         # `percept list | head`: the reader has gone
        def flush(self):
            raise BrokenPipeError
    monkeypatch.setattr(sys, "stdout", ClosedStdout())
    assert main(["list", "backbones"]) == 0


def test_no_silent_default_model_and_a_fast_offline_failure(hostile, capsys, monkeypatch):
    import time

    from huggingface_hub import constants
    assert main(["predict", str(hostile / "ok.png"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no --model given: scoring with official-iqa" in err and "hf download PerceptCLIP/PerceptCLIP_IQA" in err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)                       # online, but nothing answers
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot be reached"):
        percept.load_official("official-iqa")
    assert time.monotonic() - started < 5


def test_push_without_a_network_is_one_line(tmp_path):
    from conftest import randomize_lora  # noqa: F401  (the run needs no trained weights)

    from percept.study.export import push_run
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = build_model(backbone="tiny_clip", pretrained=False, heads={"livec": 1}).eval()
    save_weights(model, run / "best.safetensors")
    (run / "config.json").write_text(json.dumps({"data": [{"dataset": "livec", "root": "x"}], "split": 1, "lr": 1e-4,
                                                 "model": model.config.to_dict()}))
    (run / "metrics.json").write_text(json.dumps({"status": "complete"}))

    class OfflineApi:
        def create_repo(self, *args, **kwargs):
            raise ConnectionError("Failed to resolve host\nMax retries exceeded\n(40 more lines)")
    with pytest.raises(RuntimeError, match=r"could not upload to the hub repo 'me/x' \(ConnectionError: Failed to "
                                           r"resolve host\); check the network") as err:
        push_run(run, "me/x", api=OfflineApi())
    assert "\n" not in str(err.value)


def test_writes_only_where_asked(run, hostile, tmp_path, monkeypatch):
    """Export never writes into the run it exports; the app's examples live in a private folder; the app's
    messages name an upload by its name, never by the server's path."""
    from percept.study.export import export_run
    (run / "metrics.json").write_text(json.dumps({"status": "complete"}))
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "split": 1,
                                                 "lr": 1e-4}))
    before = (run / "config.json").read_bytes()
    for out in (run, run / "hub"):
        with pytest.raises(ValueError, match="inside the run directory"):
            export_run(run, "hub", out)
    assert (run / "config.json").read_bytes() == before
    from percept.engine.runs import IncompatibleRunError, RunDir
    hub = export_run(run, "hub", tmp_path / "hub")          # `percept train --run-dir HUB`: not a failed run
    exported = (hub / "config.json").read_bytes()
    with pytest.raises(IncompatibleRunError, match="different configuration"):
        RunDir(hub).open({"data": [{"dataset": "livec", "root": "x"}], "model": {}, "split": 1})
    assert (hub / "config.json").read_bytes() == exported
    import os

    import percept.interface.app_models as app_models
    monkeypatch.delenv("PERCEPT_APP_EXAMPLES", raising=False)
    monkeypatch.setattr(app_models, "_PRIVATE", [])
    folder = app_models.example_images()[0].parent.parent
    assert folder.name.startswith("percept-app-examples-") and os.stat(folder).st_mode & 0o077 == 0
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "notes.png").write_text("not an image")
    _, _, messages = app_models.score_images(app_models.load_models([run]), [tmp_path / "uploads" / "notes.png"])
    assert messages[0].startswith("notes.png: ") and str(tmp_path) not in messages[0]
