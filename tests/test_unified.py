"""The unified adapter's report (percept.study.unified): which runs fill which column, over which splits, with
which statistic; the paper's reference numbers; head-importance rank correlations against scipy."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from percept.study.paper import paper_table
from percept.study.unified import importance_correlations, unified_table

UNIFIED = "livec+lamem"
MODEL = {"backbone": "clip_vit_l14", "weights": "pretrained", "strategy": "lora", "head_type": "mlp", "lora_r": 16,
         "lora_alpha": 8.0, "seed": 0, "task_weights": "", "lr": 1e-4}


def _row(datasets, dataset, split, srcc, head_finetune=False, **changes):
    names = datasets.split("+")
    mixed = len({{"lamem": "memorability"}.get(n, "iqa") for n in names}) > 1
    return {**MODEL, "run_dir": f"/runs/{datasets}/{split}", "datasets": datasets, "multi": len(names) > 1,
            "mixed_tasks": mixed, "head_finetune": head_finetune, "split": split, "dataset": dataset,
            "test_srcc": srcc, "test_plcc_logistic": srcc + 0.01, "test_mse": 0.01, **changes}


def _selected():
    rows = [_row(UNIFIED, "livec", k, v, True) for k, v in ((1, 0.80), (2, 0.90), (3, 0.70))]
    rows += [_row(UNIFIED, "lamem", k, v, True) for k, v in ((1, 0.60), (2, 0.66), (3, 0.69))]
    rows += [_row("livec", "livec", k, v) for k, v in ((1, 0.85), (2, 0.75), (3, 0.95), (7, 0.10))]   # split 7: not unified's
    rows += [_row("livec", "livec", 1, 0.20, backbone="clip_vit_b16")]                             # another encoder
    rows += [_row("livec", "livec", 1, 0.30, True)]                                                # two-phase single
    rows += [_row("livec+koniq10k", "livec", k, v, True) for k, v in ((1, 0.88), (2, 0.86), (3, 0.90))]
    rows += [_row("livec+koniq10k", "livec", k, 0.10) for k in (1, 2, 3)]                           # one-stage multi
    rows += [_row("lamem", "lamem", k, v) for k, v in ((1, 0.60), (2, 0.70), (3, 0.80))]
    return pd.DataFrame(rows)


def _cell(table, dataset, metric="srcc"):
    hit = table[(table["dataset"] == dataset) & (table["metric"] == metric)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_each_column_takes_its_own_model_on_the_unified_runs_splits_with_the_tasks_statistic():
    table = unified_table(_selected())
    livec = _cell(table, "livec")
    assert livec["unified"] == pytest.approx(0.80)                    # IQA: the median of 0.80, 0.90, 0.70
    assert livec["single"] == pytest.approx(0.85)                     # median of splits 1-3 only, L/14 only
    assert livec["n_splits_single"] == 3
    assert livec["within_task_multi"] == pytest.approx(0.88)          # the two-phase group, not the one-stage one
    assert livec["within_task_group"] == "livec+koniq10k"
    assert livec["unified_minus_single"] == pytest.approx(-0.05)
    lamem = _cell(table, "lamem")
    assert lamem["unified"] == pytest.approx(np.mean([0.60, 0.66, 0.69]))   # memorability: the mean
    assert lamem["single"] == pytest.approx(0.70) and np.isnan(lamem["within_task_multi"])
    assert _cell(table, "lamem", "mse")["unified"] == pytest.approx(0.01)
    paper = paper_table("1")
    expected = paper[(paper["method"] == "PerceptCLIP (3M)") & (paper["test_dataset"] == "LIVEC")
                     & (paper["metric"] == "SRCC")]["value"].iloc[0]
    assert livec["paper_single"] == expected
    a4 = paper_table("A.4")
    assert livec["paper_multi"] == a4[(a4["method"] == "PerceptCLIP Multi-Dataset") & (a4["test_dataset"] == "LIVEC")
                                      & (a4["metric"] == "SRCC")]["value"].iloc[0]
    assert livec["comparable"]


def test_cross_rows_say_which_images_were_tested():
    records = [{"setting": s, "source": "livec", "dataset": "koniq10k", "split": k, "srcc": v}
               for s, k, v in (("single", 1, 0.6), ("single", 2, 0.7), ("single", 3, 0.95),
                               ("unified", 1, 0.5), ("unified", 2, 0.6), ("unified", 3, 0.95))]
    records += [{"setting": "unified", "source": "lamem", "dataset": "things", "split": 1, "srcc": 0.5}]
    records += [{"setting": s, "source": "koniq10k", "dataset": "livec", "split": 1, "srcc": v}
                for s, v in (("single", 0.8), ("unified", 0.85))]
    table = unified_table(_selected(), cross=records)
    koniq = _cell(table, "livec → koniq10k")
    assert koniq["single"] == pytest.approx(0.7) and koniq["unified"] == pytest.approx(0.6)   # IQA: medians
    assert koniq["n_splits_unified"] == 3 and koniq["unified_minus_single"] == pytest.approx(-0.1)
    assert "every image" in koniq["note"]                              # KonIQ-10k is not in this unified run
    inside = _cell(table, "koniq10k → livec")                          # LIVEC is: its test part, and said so
    assert inside["unified"] == pytest.approx(0.85) and "test part" in inside["note"]
    assert np.isnan(inside["paper_single"])                            # not the paper's all-images protocol
    things = _cell(table, "lamem → things")
    assert things["unified"] == 0.5 and np.isnan(things["single"]) and things["n_splits_single"] == 0
    assert things["comparable"]                                        # real data, the paper's encoder weights
    demo = unified_table(_selected().assign(backbone="tiny_clip_prior"))
    assert not demo["comparable"].any()                                # a demo stand-in encoder never is


def test_no_unified_run_or_two_configurations_are_errors_naming_the_fix():
    selected = _selected()
    with pytest.raises(ValueError, match="no finished unified run"):
        unified_table(selected[~selected["mixed_tasks"]])
    other = selected[selected["datasets"] == UNIFIED].assign(task_weights="iqa=2")
    with pytest.raises(ValueError, match="2 unified configurations"):
        unified_table(pd.concat([selected, other]))


def test_importance_correlations_are_spearmans_over_the_same_heads():
    rng = np.random.default_rng(0)
    heads = pd.DataFrame([(layer, head) for layer in range(4) for head in range(2)], columns=["layer", "head"])
    a = heads.assign(importance=rng.normal(size=8))
    b = heads.assign(importance=rng.normal(size=8))
    shuffled = b.sample(frac=1, random_state=1)                        # row order must not matter
    out = importance_correlations({"iqa": a, "emotion": shuffled, "iqa again": a})
    assert out.loc["iqa", "emotion"] == pytest.approx(spearmanr(np.abs(a["importance"]),
                                                                np.abs(b["importance"])).statistic)
    assert out.loc["iqa", "iqa again"] == pytest.approx(1.0) and out.loc["emotion", "iqa"] == out.loc["iqa", "emotion"]
    with pytest.raises(ValueError, match="cover different heads"):
        importance_correlations({"iqa": a, "fewer": b.iloc[:6]})
