"""`percept list` / percept.list_models: what exists and whether its files are here, offline."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import fake_hub_file as _fake_hub_file

from percept.data.cards import CARDS
from percept.interface.cli import main
from percept.model.official import OFFICIAL_CHECKPOINTS
from percept.study.catalog import (
    TIMM_WEIGHTS_FILE,
    list_backbones,
    list_datasets,
    list_models,
)


def test_models_say_what_their_scores_mean_and_whether_they_are_cached(tmp_path):
    table = list_models(cache_dir=tmp_path)
    assert table["model"].tolist() == [f"official-{k}" for k in OFFICIAL_CHECKPOINTS]
    assert not table["cached"].any()
    assert table["score"].tolist() == [c.outputs for c in OFFICIAL_CHECKPOINTS.values()]   # what a score means
    card = OFFICIAL_CHECKPOINTS["iqa"]
    _fake_hub_file(tmp_path, card.repo_id, card.filename)
    assert list_models(cache_dir=tmp_path).set_index("model")["cached"].to_dict() == {
        "official-iqa": True, "official-memorability": False, "official-emotions": False}


def test_backbones_say_where_their_weights_come_from(tmp_path):
    table = list_backbones(cache_dir=tmp_path).set_index("backbone")
    assert table.loc["tiny_clip_prior", "available"] and "shipped" in table.loc["tiny_clip_prior", "weights"]
    assert not table.loc["clip_vit_l14", "available"]
    _fake_hub_file(tmp_path, "timm/" + table.loc["clip_vit_l14", "timm_name"], TIMM_WEIGHTS_FILE)
    assert list_backbones(cache_dir=tmp_path).set_index("backbone").loc["clip_vit_l14", "available"]


def test_datasets_and_the_command(tmp_path, capsys):
    (tmp_path / "koniq10k").mkdir()
    (tmp_path / "koniq10k" / "percept_manifest.csv").write_text("image\n")
    table = list_datasets(tmp_path).set_index("dataset")
    assert set(table.index) == set(CARDS) and table.loc["koniq10k", "paper_name"] == "KonIQ-10k"
    assert table["prepared"].sum() == 1 and table.loc["koniq10k", "prepared"]
    assert main(["list", "datasets", "--data-root", str(tmp_path), "--csv"]) == 0
    assert "koniq10k,KonIQ-10k,iqa" in capsys.readouterr().out
    assert main(["list"]) == 0 and "official-emotions" in capsys.readouterr().out


def test_download_fills_the_hub_cache_that_offline_loading_reads(monkeypatch, tmp_path, capsys):
    """`percept download`, no network: huggingface_hub's downloader is replaced by one that writes the
    cache layout a real download leaves; then the real, offline loaders find the files there."""
    import huggingface_hub
    import huggingface_hub.constants
    import torch
    from conftest import fake_hub_file, randomize_lora
    from test_official import OfficialStyleModel

    from percept.model.official import load_official
    from percept.study.catalog import download

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    release = OfficialStyleModel(outputs=1).eval()
    randomize_lora(release)
    torch.save(release.state_dict(), tmp_path / "release.pth")
    fetched = []

    def fake_download(repo_id, filename, cache_dir=None, **kwargs):
        found = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
        fetched.append((repo_id, filename))
        data = (tmp_path / "release.pth").read_bytes() if filename.endswith(".pth") else b"timm weights"
        return str(fake_hub_file(Path(cache_dir or huggingface_hub.constants.HF_HUB_CACHE), repo_id, filename, data))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert main(["download", "official-iqa", "clip_vit_l14"]) == 0
    out = capsys.readouterr().out
    assert "downloaded" in out and "PerceptCLIP/PerceptCLIP_IQA" in out
    assert fetched == [(OFFICIAL_CHECKPOINTS["iqa"].repo_id, OFFICIAL_CHECKPOINTS["iqa"].filename),
                       ("timm/vit_large_patch14_clip_quickgelu_224.openai", TIMM_WEIGHTS_FILE)]
    assert list_models().set_index("model").loc["official-iqa", "cached"]
    assert list_backbones().set_index("backbone").loc["clip_vit_l14", "available"]
    # a second run fetches nothing; the real offline loader reads the cached release file
    table = download(["iqa", "clip_vit_l14"])
    assert table["status"].tolist() == ["cached", "cached"] and len(fetched) == 2
    monkeypatch.undo()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(load_official("official-iqa")(x), release(x), rtol=0, atol=1e-4)


def test_download_refuses_what_has_no_hub_file():
    import pytest

    from percept.study.catalog import download
    with pytest.raises(ValueError, match="nothing to download for 'tiny_clip'.*official-iqa"):
        download(["tiny_clip"])


LISTINGS = r"""
import contextlib, io, json, sys
from percept.interface.cli import main
widths, codes = {}, {}
for argv in (["list"], ["list", "--wide"], ["list", "datasets"], ["status", sys.argv[1]], ["status", sys.argv[1], "--wide"],
             ["--help"]):
    out, key = io.StringIO(), " ".join(a for a in argv if a != sys.argv[1])
    with contextlib.redirect_stdout(out):
        try:
            codes[key] = main(argv)
        except SystemExit as done:          # --help
            codes["--help"] = done.code
    widths[key] = max(len(line) for line in out.getvalue().splitlines())
heavy = sorted(m for m in ("torch", "timm", "peft", "transformers", "wandb", "mlflow") if m in sys.modules)
print(json.dumps({"widths": widths, "codes": codes, "heavy": heavy}))
"""


def test_listings_start_without_torch_and_fit_100_columns(tmp_path):
    """`percept list`, `percept status` and `percept --help` import no deep-learning library (they answer in a
    moment), and their tables fit 100 columns unless --wide asks for every column in full."""
    import json
    import subprocess
    import sys
    long_run = tmp_path / ("sweep_of_many_datasets_" * 4) / "clip_vit_l14" / "split10" / "lr5e-05"
    long_run.mkdir(parents=True)
    (long_run / "config.json").write_text("{}")
    done = subprocess.run([sys.executable, "-c", LISTINGS, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["heavy"] == [], f"a listing imported {found['heavy']}"
    assert found["codes"] == {"list": 0, "list --wide": 0, "list datasets": 0, "status": 0, "status --wide": 0,
                              "--help": 0}
    assert all(w <= 100 for k, w in found["widths"].items() if "--wide" not in k), found["widths"]
    assert found["widths"]["status --wide"] > 100 and found["widths"]["list --wide"] > 100   # every column, uncut


def test_a_narrow_table_cuts_the_named_columns_in_order():
    import pandas as pd

    from percept.interface.cli_commands import fit_table
    table = pd.DataFrame({"state": ["failed", "done"], "run": ["a/" * 30 + "split1/lr5e-05", "b/split2/lr0.001"],
                          "detail": ["RuntimeError: " + "x" * 80, "val srcc 0.9"]})
    text = fit_table(table, shrink={"run": 20, "detail": 24}, width=60)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 60 and len(lines) == 3
    assert "\u2026/a/a/split1/lr5e-05 " in lines[1] and "b/split2/lr0.001" in lines[2]   # a path keeps its end
    assert re.search("RuntimeError: x+\u2026$", lines[1])                               # the detail its start
    assert fit_table(table, width=1000) == table.to_string(index=False)                   # nothing cut when it fits
