"""From a tree of run directories to the paper's tables (pandas).

1. :func:`collect_runs` — one row per (run, dataset): configuration, validation score, test metrics.
2. :func:`select_by_validation` — for each configuration and split, the learning rate with the best
   *validation* score (paper §3.1: "the final model is selected based on the highest validation
   score"); test metrics play no part in the choice.
3. :func:`aggregate` — over splits, both the median (IQA, Table 1: "median SRCC and PLCC across 10
   splits") and the mean (LaMem and EmotionROI, Tables 3 and 4), with the number of splits.
4. :func:`wide_table` — one row per model variant, columns (dataset, metric), as the paper prints them.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from ..core.tasks import LOWER_IS_BETTER
from ..engine.runs import PROTOCOL, RunDir
from .paper_specs import TASK_STATISTIC
from .run_key import RUN_KEY_FIELDS, run_key, task_weights_text  # noqa: F401 (task_weights_text: API)

CONFIG_COLUMNS = list(RUN_KEY_FIELDS)   # a run's identity (percept.study.run_key): the tables' configuration
PAPER_STATISTIC = TASK_STATISTIC   # per task; each table's own is in percept.study.paper_specs


def collect_runs(root: str | os.PathLike) -> pd.DataFrame:
    """Every finished run below ``root`` (any depth), one row per dataset it was tested on. Runs of another
    protocol (``percept.engine.runs.PROTOCOL``: what an older percept computed differently) are left out, with a
    warning naming them: they must never fill a table beside this version's runs."""
    rows, stale = [], []
    for run in RunDir.find(root):   # (a cross-dataset evaluation folder has no config.json: not a run)
        run_dir = run.path
        metrics = run.read_metrics()
        if metrics.get("status") != "complete":
            continue
        config = run.read_config()
        if config.get("protocol") != PROTOCOL:
            stale.append(f"{run_dir} (protocol {config.get('protocol', 1)})")
            continue
        base = {"run_dir": str(run_dir), **run_key(config),
                "multi": len(config["data"]) > 1, "mixed_tasks": len(run_tasks(config)) > 1,
                "split": config["split"], "lr": config["lr"],
                "select_metric": metrics["select_metric"], "val_score": metrics["val_score"],
                "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"]}
        for dataset, test in metrics["test"].items():
            rows.append({**base, "dataset": dataset, **{f"test_{k}": v for k, v in test.items()}})
    if stale:
        warnings.warn(f"{len(stale)} finished run(s) below {root} were made under another percept protocol and are "
                      f"left out (this version: protocol {PROTOCOL}, percept.engine.runs.PROTOCOL); rerun them in a new "
                      f"folder: {', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}", stacklevel=2)
    if not rows:
        raise FileNotFoundError(f"no finished runs (metrics.json with status complete) below {root}")
    return pd.DataFrame(rows)


def run_tasks(config: dict) -> set[str]:
    """The tasks of a run's datasets (its config.json): one for the paper's runs, several for a unified one (a
    dataset of unknown task counts as its own, so it never passes for a within-task run). Torch-free."""
    from ..data.cards import task_of
    return {task_of(e["dataset"], e.get("task")) or f"unknown:{e['dataset']}" for e in config["data"]}


def select_by_validation(table: pd.DataFrame) -> pd.DataFrame:
    """Keep, for every (configuration, split, dataset), the run whose validation score is best."""
    score = table["val_score"].astype(float)
    lower = table["select_metric"].isin(LOWER_IS_BETTER)
    table = table.assign(_score=np.where(lower, -score, score)).fillna({"_score": -np.inf})
    keys = [*CONFIG_COLUMNS, "split", "dataset"]
    best = table.sort_values(["_score", "lr"], ascending=[False, True]).groupby(keys, sort=True, dropna=False).head(1)
    return best.drop(columns="_score").sort_values(keys).reset_index(drop=True)


def aggregate(selected: pd.DataFrame) -> pd.DataFrame:
    """Median and mean of every test metric over splits, per (configuration, dataset)."""
    metrics = [c for c in selected.columns if c.startswith("test_") and c != "test_n_images"]
    keys = [*CONFIG_COLUMNS, "dataset", *(["mixed_tasks"] if "mixed_tasks" in selected else [])]   # by datasets
    grouped = selected.groupby(keys, sort=True, dropna=False)
    out = grouped.size().rename("n_splits").to_frame()
    for column in metrics:
        name = column[len("test_"):]
        out[f"median_{name}"] = grouped[column].median()
        out[f"mean_{name}"] = grouped[column].mean()
        out[f"std_{name}"] = grouped[column].std(ddof=0)
    out["lrs_chosen"] = grouped["lr"].agg(lambda s: ",".join(f"{v:g}" for v in sorted(set(s))))
    return out.reset_index()


def wide_table(aggregated: pd.DataFrame, metrics=("srcc", "plcc_logistic"), statistic: str = "median") -> pd.DataFrame:
    """Rows = model variants (named by the fields they differ in, ``lora_r=8 lora_alpha=4``), columns = (dataset,
    metric) with the chosen statistic over splits."""
    if statistic not in ("median", "mean"):
        raise ValueError("statistic must be 'median' or 'mean'")
    columns = [f"{statistic}_{m}" for m in metrics if f"{statistic}_{m}" in aggregated.columns]
    if not columns:
        raise ValueError(f"none of the metrics {metrics} are in the table")
    # a variant is named by the identity fields (percept.study.run_key) in which the table's variants differ
    keys = [c for c in CONFIG_COLUMNS[1:] if c in aggregated]
    varying = [c for c in keys if aggregated[c].astype(str).nunique() > 1] or keys[:1]
    variant = aggregated[varying].astype(str).apply(lambda r: " ".join(f"{k}={v}" for k, v in r.items()), axis=1)
    long = aggregated.assign(variant=variant)[["variant", "dataset", *columns]]
    wide = long.set_index(["variant", "dataset"]).unstack("dataset")
    wide.columns = pd.MultiIndex.from_tuples([(d, c.split("_", 1)[1]) for c, d in wide.columns])
    return wide.sort_index(axis=1)


def results_tables(root: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """All four stages for a run tree: ``runs``, ``selected``, ``aggregated``."""
    table = collect_runs(root)
    selected = select_by_validation(table)
    return {"runs": table, "selected": selected, "aggregated": aggregate(selected)}
