"""`percept reproduce --smoke`: every experiment of reproduce.yaml - each dataset, split protocol,
cross-dataset pair, multi-dataset group, two-phase and ablation variant - runs for one epoch on fixture
datasets in the official layouts, and writes a table for every table id of the plan."""
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from percept.interface.cli_reproduce import main as reproduce_cli
from percept.study import reproduce

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
        if table_id == "unified":                                   # ours, beyond the paper: its own test below
            continue
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


def test_unified_table_sets_the_unified_run_beside_the_single_task_and_within_task_runs(smoke):
    """The `unified` experiment: every dataset of Tables 1, 3, 4 gets its unified, single-task and
    (where the paper has a group) within-task multi-dataset number on the same splits, and each cross pair both."""
    done, out = smoke
    table = pd.read_csv(out / "tables" / "table_unified.csv")
    config = reproduce.load_reproduce_config()["experiments"]["unified"]
    per_dataset = table[~table["dataset"].str.contains("→")]
    assert set(per_dataset["dataset"]) == set(config["datasets"])
    assert per_dataset[["single", "unified"]].notna().all().all()
    grouped = {d for exp in reproduce.load_reproduce_config()["experiments"].values() if exp["kind"] == "multi"
               for d in exp["datasets"]}
    has_multi = per_dataset.loc[per_dataset["within_task_multi"].notna(), "dataset"]
    assert set(has_multi) == set(config["datasets"]) & grouped       # FLIVE is in no within-task group
    assert (per_dataset["n_splits_unified"] == 2).all()              # the smoke plan's two group splits
    cross = table[table["dataset"].str.contains("→")]
    assert set(cross["dataset"]) == {f"{a} → {b}" for a, b in config["pairs"]}
    assert cross[["single", "unified"]].notna().all().all() and not table["comparable"].any()
    things = cross[cross["dataset"] == "lamem → things"].iloc[0]
    assert "every image" in things["note"] and things["paper_single"] == pytest.approx(0.34, abs=0.05)
    # the unified run's head of FLIVE was evaluated on KonIQ-10k's test part of split 1, in its own folder
    evals = list((out / "runs").glob("livec+koniq10k+*/*/split1/*/eval/koniq10k_split1_test_head-flive/metrics.json"))
    assert len(evals) == 1


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
    plan = {**config, "figures": {}, "experiments": {   # (the plan's figures name experiments left out here)
        "broken": {"tables": ["6"], "kind": "single", "datasets": ["livec"], "splits": 1,
                   "variants": [{"lora_r": 0}]},
        "fine": {"tables": ["1"], "kind": "single", "datasets": ["livec"], "splits": 1}}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    code = reproduce_cli(["--config", str(tmp_path / "plan.yaml"), "--smoke", "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 experiment(s) failed: broken: ValueError: LoRA needs r >= 1" in err
    table1 = pd.read_csv(tmp_path / "out" / "tables" / "table_1.csv")
    assert ((table1["status"] == "both") & (table1["test_dataset"] == "LIVEC")).sum() == 2   # SRCC and PLCC
    assert Path(tmp_path / "out" / "tables" / "table_6.csv").is_file()


def test_every_figure_of_the_plan_is_drawn_and_says_it_is_a_pipeline_check(smoke):
    done, out = smoke
    figures = reproduce.load_reproduce_config()["figures"]
    assert set(done.figures) == set(figures) and not done.missing_figures
    for name, spec in figures.items():
        for run in spec["runs"]:
            for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):
                files = list((out / "figures").glob(f"{name}_*_{run['dataset']}{suffix}"))
                assert files, f"{name}: no {suffix} for {run['dataset']}"
                assert all(f.read_bytes()[:4] == magic for f in files)
    index = pd.read_csv(out / "figures" / "figures.csv")
    assert set(index["figure"]) == set(figures) and (index["status"] == "drawn").all()
    assert index["note"].str.contains("random weights").all() and index["note"].str.contains("fixture data").all()


def test_figures_a1_and_a2_show_only_positive_and_only_negative_emotions(smoke):
    from percept.study import analysis, paper_figures
    _, out = smoke
    positive, negative = {"amusement", "awe", "contentment", "excitement"}, {"anger", "disgust", "fear", "sadness"}
    # the images the drawn figures show (their heads' most affected images), as written beside them
    shown = {n: pd.read_csv(out / "figures" / f"{n}_attention_emoset.csv") for n in ("figA1", "figA2")}
    assert set(shown["figA1"]["class"]) <= positive and set(shown["figA1"]["label"]) <= {0, 1, 2, 3}
    assert set(shown["figA2"]["class"]) <= negative and set(shown["figA2"]["label"]) <= {4, 5, 6, 7}
    # the selection itself, on the EmoSet run's test predictions: every class of the valence, in turn
    pred = analysis.load_predictions(next((out / "runs" / "emoset" / "random-init").rglob("predictions.csv")))
    a1 = paper_figures.attention_selection(pred, "positive", n=32)
    a2 = paper_figures.attention_selection(pred, "negative", n=3)
    assert set(a1["class"]) == positive and len(a2) == 3 and set(a2["class"]) <= negative
    by_prediction = paper_figures.attention_selection(pred, "negative", by="prediction")
    assert set(by_prediction["predicted_class"]) <= negative


def test_a_figure_whose_runs_are_missing_is_named_and_the_others_are_drawn(smoke, tmp_path):
    import shutil

    from percept.study.paper_figures import draw_paper_figures
    _, out = smoke
    shutil.copytree(out / "runs" / "emoset" / "random-init", tmp_path / "runs" / "emoset" / "random-init")   # no LaMem
    config = reproduce.smoke_config(reproduce.load_reproduce_config())
    config["figures"] = {k: config["figures"][k] for k in ("fig4", "figA3", "figA6")}
    logged = []
    drawn = draw_paper_figures(config, tmp_path / "runs", tmp_path / "figures", log=logged.append)
    assert drawn["fig4"].startswith("missing: no finished run of table3_memorability on lamem, split 1")
    assert drawn["figA6"].startswith("missing: no finished run of table3_memorability on lamem")
    assert {p.name for p in drawn["figA3"]} >= {"figA3_confusion_emoset.png", "figA3_confusion_emoset.pdf"}
    assert any(line.startswith("figure figA6 (Figure A.6) missing") for line in logged)


def test_the_plan_checks_its_figures(tmp_path):
    yaml = pytest.importorskip("yaml")
    config = reproduce.load_reproduce_config()
    for change, message in (({"bins": 3}, r"figure 'figA3': unknown keys \['bins'\]"),
                            ({"runs": [{"experiment": "nope", "dataset": "emoset"}]},
                             "figure 'figA3': experiment: 'nope'"),
                            ({"runs": [{"experiment": "table3_memorability", "dataset": "emoset"}]},
                             "figure 'figA3': dataset:")):
        plan = {**config, "figures": {"figA3": {**config["figures"]["figA3"], **change}}}
        (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
        with pytest.raises(ValueError, match=message):
            reproduce.load_reproduce_config(tmp_path / "plan.yaml")
