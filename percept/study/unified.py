"""One adapter for all three tasks (beyond the paper): what a unified run is compared with.

A *unified* run trains one LoRA encoder on quality, memorability and emotion datasets together, one head per
dataset (:mod:`percept.engine.multitask` holds its training rules: loss normalisation, task weights, selection). Its
report answers the question the paper leaves open (it trains one adapter per task, §3.2, §5.4):

* :func:`unified_table` — per dataset and metric, the unified run beside the paper's own two models, trained by
  percept on the same splits: the **single-task** run (one dataset, one stage: Tables 1, 3, 4) and the
  **within-task multi-dataset** run (shared adapter within one task, two phases: Tables 5, A.4-A.6); with the
  paper's numbers for both as reference. Every column aggregates the *same* splits (those of the unified run)
  with the task's statistic (median for IQA, mean otherwise, :data:`percept.study.paper_specs.TASK_STATISTIC`), so the
  columns differ by the model alone.
* :func:`cross_evaluations` — the cross-dataset pairs of Tables 2 and A.1 (trained on A, tested on B without
  retraining) for the single-task runs and for the unified run's head of A. Where B is outside the unified
  datasets (LaMem → THINGS) both use every image of B, as the paper. Where B is one of them (the IQA pairs of
  Table 2), the unified encoder has seen B's *training* part, so both models are tested on B's *test* part of the
  same split instead: a cross-head, not a cross-encoder, test — the table says so in its ``note``.
* :func:`importance_correlations` — do the tasks rely on the same attention heads? Spearman's rank correlation
  between the head-importance maps (:func:`percept.study.interpret.head_importance`) of every pair of models/tasks.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .run_key import MODEL_KEY_FIELDS, RUN_KEY_FIELDS

TABLE_ID = "unified"        # reproduce.yaml's table name: OUT/tables/table_unified.csv
TABLE_METRICS = {"iqa": ("srcc", "plcc_logistic"), "memorability": ("srcc", "mse"), "emotion": ("accuracy",)}
MODEL_FIELDS = (*MODEL_KEY_FIELDS, "seed")   # one unified model: the same encoder and heads (percept.study.run_key)
SETTINGS = ("single", "within_task_multi", "unified")
COLUMNS = ["dataset", "task", "metric", "paper_dataset", "paper_single", "single", "paper_multi", "within_task_multi", "unified",
           "unified_minus_single", *(f"n_splits_{s}" for s in SETTINGS), "within_task_group", "comparable", "note"]
_PAPER_SINGLE = {"1": "PerceptCLIP (3M)", "3": "PerceptCLIP", "4": "PerceptCLIP", "A.2": "PerceptCLIP"}
_PAPER_MULTI = {t: "PerceptCLIP Multi-Dataset" for t in ("5", "A.4", "A.5", "A.6")}
_PAPER_CROSS = {"2": "PerceptCLIP", "A.1": "PerceptCLIP"}


def unified_runs(selected: pd.DataFrame, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of ``selected`` (:func:`percept.study.results.results_tables`) that belong to unified runs (datasets of
    several tasks), of the group ``datasets`` when given. One configuration only: several (two backbones, two
    sets of task weights, ...) are an error naming them, never a silent choice."""
    rows = selected[selected["mixed_tasks"].astype(bool)] if "mixed_tasks" in selected.columns else selected.iloc[:0]
    if datasets is not None:
        rows = rows[rows["datasets"] == "+".join(datasets)]
    if rows.empty:
        wanted = f" of {'+'.join(datasets)}" if datasets is not None else ""
        raise ValueError(f"no finished unified run{wanted} (datasets of several tasks in one run): train one, e.g. "
                         f"`percept reproduce --only unified` or `percept train --dataset A B C ...`")
    configs = rows[[c for c in RUN_KEY_FIELDS if c in rows]].astype(str).drop_duplicates()
    if len(configs) > 1:
        raise ValueError(f"{len(configs)} unified configurations below this root ({'; '.join(configs.agg(' '.join, axis=1))}); "
                         f"tabulate one at a time (select its rows first)")
    return rows


def _statistic(values: pd.Series, task: str) -> float:
    from .paper_specs import TASK_STATISTIC
    values = values.dropna().astype(float)
    if values.empty:
        return float("nan")
    return float(values.median() if TASK_STATISTIC[task] == "median" else values.mean())


def _paper_value(tables: Mapping[str, str], train: str, test: str, metric: str) -> float:
    from .paper import load_paper_results
    frame = load_paper_results()
    hit = frame[frame["table"].isin(list(tables)) & frame["method"].isin(set(tables.values()))
                & (frame["train_dataset"] == train) & (frame["test_dataset"] == test) & (frame["metric"] == metric)]
    return float(hit["value"].iloc[0]) if len(hit) else float("nan")


def _comparable(dataset: str, model: Mapping) -> bool:
    """Real data, the encoder's published weights, not a demo stand-in encoder (as the paper tables' rule)."""
    from ..data.sources import is_synthetic
    from .paper_specs import BACKBONE_STAND_INS
    return (not is_synthetic(dataset) and str(model["weights"]) != "random"
            and model["backbone"] not in BACKBONE_STAND_INS)


def _same_model(frame: pd.DataFrame, model: Mapping) -> pd.Series:
    keep = pd.Series(True, index=frame.index)
    for key in (k for k in MODEL_FIELDS if k in frame and k in model):
        keep &= frame[key].astype(str) == str(model[key])
    return keep


def unified_table(selected: pd.DataFrame, datasets: Sequence[str] | None = None,
                  cross: Iterable[Mapping] = ()) -> pd.DataFrame:
    """Per dataset of the unified run and metric: ``paper_dataset`` (whose numbers the paper columns are; a demo
    set's stand-in is marked), ``single``, ``within_task_multi``, ``unified`` (our runs, the
    task's statistic over the unified run's splits), ``unified_minus_single``, ``paper_single``, ``paper_multi``,
    ``n_splits`` (per setting), ``within_task_group`` and ``comparable`` (real data and the encoder's published
    weights); then one row per cross-dataset pair of ``cross`` (:func:`cross_evaluations`' records)."""
    from ..data.sources import dataset_task
    from .paper import paper_dataset, paper_metric
    runs = unified_runs(selected, datasets)
    model = runs.iloc[0]
    names = str(model["datasets"]).split("+")
    splits = set(runs["split"])
    pool = selected[_same_model(selected, model) & selected["split"].isin(splits)]
    single = pool[~pool["multi"].astype(bool) & ~pool["head_finetune"].astype(bool)]
    within = pool[pool["multi"].astype(bool) & ~pool["mixed_tasks"].astype(bool) & pool["head_finetune"].astype(bool)]
    rows = []
    for name in names:
        task = dataset_task(name)
        paper_name, stand_in = paper_dataset(name)
        groups = within[within["dataset"] == name]
        group = groups["datasets"].value_counts().index[0] if len(groups) else ""   # the group with most splits
        parts = {"single": single[single["dataset"] == name], "unified": runs[runs["dataset"] == name],
                 "within_task_multi": groups[groups["datasets"] == group]}
        for metric in TABLE_METRICS[task]:
            column = f"test_{metric}"
            values = {k: _statistic(v[column], task) if column in v else float("nan") for k, v in parts.items()}
            paper_key = paper_metric(metric, paper_name) or metric
            rows.append({"dataset": name, "task": task, "metric": metric,
                         "paper_dataset": f"{paper_name} (stand-in)" if stand_in else paper_name, **values,
                         "unified_minus_single": values["unified"] - values["single"],
                         "paper_single": _paper_value(_PAPER_SINGLE, paper_name, paper_name, paper_key),
                         "paper_multi": _paper_value(_PAPER_MULTI, paper_name, paper_name, paper_key),
                         **{f"n_splits_{k}": int(v[column].notna().sum()) if column in v else 0
                            for k, v in parts.items()},
                         "within_task_group": group,
                         "comparable": _comparable(name, model),
                         "note": ""})
    rows += _cross_rows(cross, model, names)
    return pd.DataFrame(rows, columns=COLUMNS)


def _cross_rows(records: Iterable[Mapping], model: Mapping, names: list[str]) -> list[dict]:
    from ..data.sources import dataset_task
    from .paper import paper_dataset, paper_metric
    frame = pd.DataFrame(list(records))
    if frame.empty:
        return []
    rows = []
    for (source, target), pair in frame.groupby(["source", "dataset"], sort=False):
        task = dataset_task(target)
        values = {s: _statistic(pair.loc[pair["setting"] == s, "srcc"], task) for s in ("single", "unified")}
        counts = {f"n_splits_{s}": int((pair["setting"] == s).sum()) for s in ("single", "unified")}
        train_name, test_name = paper_dataset(source)[0], paper_dataset(target)[0]
        inside = target in names
        rows.append({"dataset": f"{source} → {target}", "task": task, "metric": "srcc",
                     "paper_dataset": f"{train_name} → {test_name}", **values,
                     "within_task_multi": float("nan"), "unified_minus_single": values["unified"] - values["single"],
                     "paper_single": float("nan") if inside else _paper_value(
                         _PAPER_CROSS, train_name, test_name, paper_metric("srcc", test_name)),
                     "paper_multi": float("nan"), **counts, "n_splits_within_task_multi": 0, "within_task_group": "",
                     "comparable": _comparable(target, model),
                     "note": (f"tested on {target}'s test part of each split: the unified encoder saw its training "
                              f"part (head of {source} only), so not the paper's all-images protocol")
                     if inside else f"every image of {target}, as the paper"})
    return rows


def cross_evaluations(selected: pd.DataFrame, datasets: Sequence[str], pairs: Sequence[Sequence[str]],
                      data_config: Callable[[str], object], log=print) -> tuple[list[dict], str | None]:
    """Evaluate each pair (A, B) for the unified run of ``datasets`` (its head of A) and the single-task runs of
    A with the same encoder settings, on the unified run's splits (see the module's docstring for which images
    of B). ``data_config(name)`` gives a dataset's :class:`~percept.data.sources.DataConfig`. Returns (records
    with ``setting``, ``source``, ``dataset``, ``split``, ``srcc``; the first error or None)."""
    from ..engine.evaluate import evaluate_run
    runs = unified_runs(selected, datasets)
    model = runs.iloc[0]
    pool = selected[_same_model(selected, model) & selected["split"].isin(set(runs["split"]))]
    single = pool[~pool["multi"].astype(bool) & ~pool["head_finetune"].astype(bool)]
    records, first_error = [], None
    for source, target in pairs:
        split_of = (lambda k: k) if target in datasets else (lambda k: None)
        todo = [("unified", r) for _, r in runs[runs["dataset"] == source].iterrows()]
        todo += [("single", r) for _, r in single[single["dataset"] == source].iterrows()]
        if not any(s == "single" for s, _ in todo):
            log(f"  {source} → {target}: no single-task run of {source} on these splits (run its table's experiment)")
        for setting, run in todo:
            try:
                record = evaluate_run(run["run_dir"], data_config(target), split=split_of(int(run["split"])),
                                      part="test", head_name=source)
            except Exception as err:   # noqa: BLE001 - one broken evaluation loses neither the others nor the table
                message = f"{run['run_dir']} on {target}: {type(err).__name__}: {err}"
                log(f"  {message}")
                first_error = first_error or message
                continue
            records.append({"setting": setting, "source": source, "dataset": target, "split": int(run["split"]),
                            "srcc": record["metrics"]["srcc"], "run": record["run"]})
    return records, first_error


def importance_correlations(importance: Mapping[str, pd.DataFrame], value: str = "importance") -> pd.DataFrame:
    """Spearman's rank correlation between head-importance maps (``{name: head_importance table}``, same layers
    and heads), every pair: 1 = the same heads matter in the same order; 0 = unrelated. Absolute importance
    (a head whose ablation moves the prediction either way matters)."""
    from scipy.stats import spearmanr
    names = list(importance)
    tables = {name: importance[name].sort_values(["layer", "head"]) for name in names}
    heads = {name: list(zip(t["layer"], t["head"])) for name, t in tables.items()}
    for name in names[1:]:
        if heads[name] != heads[names[0]]:
            raise ValueError(f"head-importance tables {names[0]!r} and {name!r} cover different heads; compare "
                             f"models of the same encoder (and the same probed layers)")
    vectors = {name: t[value].abs().to_numpy(dtype=float) for name, t in tables.items()}
    out = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rho = spearmanr(vectors[a], vectors[b]).statistic
            out.loc[a, b] = out.loc[b, a] = float(rho)
    return out


def comparison_runs(selected: pd.DataFrame, datasets: Sequence[str], split: int = 1) -> tuple[str, dict[str, str]]:
    """(the unified run of ``datasets`` on ``split``, {dataset: its single-task run with the same encoder
    settings on that split}) — the models whose attention heads notebook 10 compares. A dataset without a
    single-task run is left out of the mapping."""
    runs = unified_runs(selected, datasets)
    on_split = runs[runs["split"] == split]
    if on_split.empty:
        raise ValueError(f"the unified run of {'+'.join(datasets)} has no split {split} (it has "
                         f"{sorted(set(runs['split']))})")
    model = on_split.iloc[0]
    pool = selected[_same_model(selected, model) & (selected["split"] == split)]
    single = pool[~pool["multi"].astype(bool) & ~pool["head_finetune"].astype(bool)]
    return str(model["run_dir"]), {d: str(single.loc[single["dataset"] == d, "run_dir"].iloc[0])
                                   for d in datasets if (single["dataset"] == d).any()}
