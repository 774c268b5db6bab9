"""`percept list` / percept.list_models (issue 15): what exists and whether its files are here, offline."""
from __future__ import annotations

from percept.catalog import TIMM_WEIGHTS_FILE, list_backbones, list_datasets, list_models
from percept.cli import main
from percept.data.cards import CARDS
from percept.official import OFFICIAL_CHECKPOINTS
from conftest import fake_hub_file as _fake_hub_file


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
