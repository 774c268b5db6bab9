"""`percept reproduce --smoke`: every experiment of reproduce.yaml - each dataset, split protocol,
cross-dataset pair, multi-dataset group, two-phase and ablation variant - runs for one epoch on fixture
datasets in the official layouts, and writes a table for every table id of the plan (issue 12)."""
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from percept import reproduce

pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    start = time.time()
    done = reproduce.reproduce(out, smoke=True, log=lambda *a, **k: None)
    print(f"percept reproduce --smoke: {time.time() - start:.0f} s")
    return done, out


def test_every_experiment_runs_and_every_table_is_written(smoke):
    done, out = smoke
    assert done.failures == {}
    config = reproduce.load_reproduce_config()
    table_ids = {str(t) for exp in config["experiments"].values() for t in exp["tables"]}
    assert set(done.tables) == table_ids
    assert {p.name for p in (out / "tables").glob("*.csv")} == {f"table_{t}.csv" for t in table_ids}
    # every run of the smoke plan finished, in the folders the sweep names
    plan = reproduce.reproduce_plan(reproduce.smoke_config(config))
    finished = [p for p in (out / "runs").rglob("metrics.json") if (p.parent / "config.json").is_file()]
    assert len(finished) == plan["runs"].sum()
    for table_id, table in done.tables.items():
        filled = table[table["status"] == "both"]
        assert len(filled) > 0, f"table {table_id}: no cell filled"
        assert not table["comparable"].any()                        # random weights: never comparable
        assert filled["source"].str.contains("random weights").all()


def test_smoke_fills_each_row_from_its_own_variant(smoke):
    done, _ = smoke
    a7 = done.tables["A.7"]
    filled = set(a7.loc[a7["status"] == "both", "method"])
    assert filled == {"ViT-B/32", "ViT-B/16", "ViT-L/14"}
    a8 = done.tables["A.8"]
    assert set(a8.loc[a8["status"] == "both", "method"]) == {"MAE", "DinoV2", "CLIP"}
    a10 = done.tables["A.10"]
    assert (a10["status"] == "both").sum() == 9                      # r x alpha, the default run included
    two = done.tables["2"]
    assert set(zip(two.loc[two["status"] == "both", "train_dataset"], two.loc[two["status"] == "both", "test_dataset"])) \
        == {("FLIVE", "KonIQ-10k"), ("FLIVE", "LIVEC"), ("LIVEC", "KonIQ-10k"), ("KonIQ-10k", "LIVEC")}


def test_multi_dataset_group_split_k_uses_each_datasets_split_k(smoke):
    _, out = smoke
    # the smoke plan trains random one-block encoders: run names say so (random-init), as sweep.run_name does
    metrics = json.loads((out / "runs" / "emoset+emotionroi" / "random-init_2phase" / "split2" / "lr5e-05" /
                          "metrics.json").read_text())
    assert metrics["splits"] == {"emoset": 1, "emotionroi": 2}      # EmoSet's one official split, EmotionROI's k
    lamem = json.loads((out / "runs" / "lamem+things" / "random-init_2phase" / "split2" / "lr5e-05" /
                        "metrics.json").read_text())
    assert lamem["splits"] == {"lamem": 2, "things": 2}


def test_a_failing_experiment_names_itself_and_the_others_still_run(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    config = reproduce.load_reproduce_config()
    plan = {**config, "experiments": {
        "broken": {"tables": ["6"], "kind": "single", "datasets": ["livec"], "splits": 1,
                   "variants": [{"lora_r": 0}]},
        "fine": {"tables": ["1"], "kind": "single", "datasets": ["livec"], "splits": 1}}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    code = reproduce.main(["--config", str(tmp_path / "plan.yaml"), "--smoke", "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 experiment(s) failed: broken: ValueError: LoRA needs r >= 1" in err
    table1 = pd.read_csv(tmp_path / "out" / "tables" / "table_1.csv")
    assert ((table1["status"] == "both") & (table1["test_dataset"] == "LIVEC")).sum() == 2   # SRCC and PLCC
    assert Path(tmp_path / "out" / "tables" / "table_6.csv").is_file()
