"""The paper's numbers as reference data, our results beside them, and the paper's experiments as a plan.

Reference data: ``paper/paper_results.csv`` at the repository root, every cell of Tables 1-7 and A.1-A.11
of Zalcher, Wasserman et al. (TMLR 2025) in tidy form (``table, method, train_dataset, test_dataset,
metric, value, note``; transcribed from the paper, see ``paper/README.md``). Missing cells of the paper
("-") are absent rows.

* :func:`paper_table` — one table, long (one row per cell) or wide (as printed: methods × (dataset, metric)).
* :func:`ours_from_results` / :func:`ours_from_cross` — our runs (:func:`percept.study.results.results_tables`,
  :func:`percept.engine.evaluate.evaluate_run` records) as rows of the paper's tables: the paper's method name
  for the model variant (e.g. ``strategy="frozen"`` → "Frozen CLIP" in Table 6), the paper's dataset and
  metric names (``accuracy`` on EmoSet → ``ACC-8``), the paper's statistic over splits (median for IQA,
  mean otherwise).
* :func:`compare` — paper vs ours per cell: ``paper``, ``ours``, ``difference`` (ours − paper) and a
  ``status``: ``both``, ``paper only`` (not run here) or ``ours only`` (no such cell in the paper).

The embedded demo sets are not the paper's datasets. So that the demo still fills the tables' *shape*,
each synthetic set stands in for one paper dataset (:data:`DEMO_STAND_INS`, per table
:data:`TABLE_STAND_INS`); such rows carry ``stand_in=True`` and ``comparable=False``: their differences
measure nothing about the paper. Only a run on the real dataset with the paper's backbone is comparable.

Which run fills which cell is data (:mod:`percept.study.paper_specs`). The paper's experiments as a plan, and
their execution, are in :mod:`percept.study.reproduce`.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..core.resources import resource_path
from ..data.cards import CARDS
from .paper_specs import (  # noqa: F401
    CROSS_TABLES,
    PAPER_CONFIG,
    TABLE_SPECS,
    get_table_spec,
    paper_metric,
    run_configuration,
)
from .run_key import run_key

PAPER_CSV = resource_path("paper", "paper_results.csv")   # package data (see percept.core.resources)
COLUMNS = ("table", "method", "train_dataset", "test_dataset", "metric", "value", "note")
KEYS = ["method", "train_dataset", "test_dataset", "metric"]

# percept dataset name -> the paper's spelling (the cards' paper_name)
PAPER_DATASET_NAMES = {name: card.paper_name for name, card in CARDS.items()}
TABLE_TITLES = {t: spec.title for t, spec in TABLE_SPECS.items()}
PAPER_BACKBONE = PAPER_CONFIG["backbone"]

# Which paper dataset each embedded demo set stands in for (its pipeline's task), by default and per table.
DEMO_STAND_INS = {"synthetic_iqa": "KADID-10k", "synthetic_strength": "LaMem", "synthetic_distortion": "EmoSet"}
_SMALL = {"synthetic_iqa": "TID2013", "synthetic_strength": "THINGS", "synthetic_distortion": "EmotionROI"}
_KONIQ = {"synthetic_iqa": "KonIQ-10k"}
TABLE_STAND_INS = {"5": _SMALL, "A.9": _SMALL, "6": _KONIQ, "7": _KONIQ, "A.7": _KONIQ, "A.8": _KONIQ,
                   "A.10": _KONIQ, "A.11": _KONIQ}


def table_sort_key(table_id) -> tuple:
    """'1' < '2' < ... < '7' < 'A.1' < 'A.2' < ... < 'A.11'."""
    text = str(table_id)
    appendix = text.startswith("A.")
    number = int(re.sub(r"\D", "", text) or 0)
    return (appendix, number, text)


# ------------------------------------------------------------------------------------------ the paper
def load_paper_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every cell of the paper (``paper/paper_results.csv``), ``table`` as text ('1', 'A.4')."""
    path = Path(path) if path else PAPER_CSV
    if not path.is_file():
        raise FileNotFoundError(f"the paper's reference numbers are not at {path} (package data of "
                                f"percept: percept/core/resources/paper; restore it with git checkout or reinstall percept)")
    frame = pd.read_csv(path, dtype={"table": str, "note": str}, keep_default_na=False,
                        na_values={"value": [""]})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing} (has {list(frame.columns)})")
    frame["value"] = frame["value"].astype(float)
    return frame[list(COLUMNS)]


def paper_tables() -> list[str]:
    """The table ids of the paper, in reading order."""
    return sorted(load_paper_results()["table"].unique(), key=table_sort_key)


def paper_table(table_id, wide: bool = False) -> pd.DataFrame:
    """The cells of one table: long (``COLUMNS``), or ``wide=True`` as printed — rows = methods,
    columns = (dataset, metric); for the cross-dataset Tables 2 and A.1 the dataset is ``train → test``."""
    table_id = str(table_id)
    frame = load_paper_results()
    rows = frame[frame["table"] == table_id].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"no table {table_id!r} in the paper; tables: {', '.join(paper_tables())}")
    if not wide:
        return rows
    return _wide(rows, "value", cross=table_id in CROSS_TABLES)


def _wide(rows: pd.DataFrame, value: str, cross: bool) -> pd.DataFrame:
    dataset = (rows["train_dataset"] + " → " + rows["test_dataset"]) if cross else rows["test_dataset"]
    long = rows.assign(dataset=dataset)
    wide = long.pivot_table(index="method", columns=["dataset", "metric"], values=value, aggfunc="first",
                            sort=False)
    methods = list(pd.unique(long["method"]))
    columns = list(dict.fromkeys(zip(long["dataset"], long["metric"])))
    return wide.reindex(index=methods, columns=pd.MultiIndex.from_tuples(columns, names=["dataset", "metric"]))


# ------------------------------------------------------------------------------------------ our rows
def paper_dataset(dataset: str, table_id=None, stand_ins: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """(the paper's name for ``dataset``, whether it is a demo stand-in). Unknown names are returned as is."""
    if dataset in PAPER_DATASET_NAMES:
        return PAPER_DATASET_NAMES[dataset], False
    table_map = {**DEMO_STAND_INS, **TABLE_STAND_INS.get(str(table_id), {}), **(stand_ins or {})}
    if dataset in table_map:
        return table_map[dataset], True
    return dataset, False


def method_name(row: Mapping, table_id) -> str | None:
    """The paper's method row of table ``table_id`` that a run configuration fills, or None.

    ``row`` holds the configuration columns of :mod:`percept.study.results` (``datasets`` 'a+b' for a multi-dataset
    run, ``backbone``, ``strategy``, ``head``, ``lora_r``, ``lora_alpha``, ``head_finetune``); the rows and the
    configuration each needs are data in :mod:`percept.study.paper_specs`."""
    config, _ = run_configuration(row)
    found = get_table_spec(table_id).row_for(config)
    return found.method if found else None


def fillable_methods(table_id) -> list[str]:
    """The paper's methods of table ``table_id`` that percept can train (PerceptCLIP and its ablation
    variants; not the other papers' models, nor TULIP in Table A.8), in the paper's order."""
    spec = get_table_spec(table_id)
    return [m for m in pd.unique(paper_table(table_id)["method"]) if m in spec.methods]


def _missing_splits(dataset: str, n_splits) -> str:
    """'' when ``n_splits`` covers the splits the paper's number aggregates (the card's ``paper_splits``),
    else a note such as '3 of 10 splits': an unfinished sweep is never comparable with the paper."""
    from ..data.cards import CARDS
    card = CARDS.get(dataset)
    want = card.paper_splits if card is not None else None
    return f"{int(n_splits)} of {want} splits" if want and int(n_splits) < want else ""


def _paper_weights(run: Mapping) -> bool:
    """Pretrained (or user-supplied) encoder weights: a random-initialised encoder fills no comparable cell."""
    return str(run.get("weights", "pretrained")) in ("pretrained", "file")


def _source(dataset: str, backbone: str, n_splits, dataset_stand_in: bool, backbone_stand_in: bool,
            paper_name: str, weights: str) -> str:
    from ..data.sources import is_synthetic
    kind = f"demo: {dataset} standing in for {paper_name}" if dataset_stand_in else \
        (f"demo: {dataset}" if is_synthetic(dataset) else f"real: {paper_name}")
    encoder = f"{backbone} standing in for {PAPER_BACKBONE}" if backbone_stand_in else backbone
    random = "" if weights in ("pretrained", "file") else ", random weights"
    return f"{kind} ({encoder}{random}, {int(n_splits)} run{'s' if int(n_splits) != 1 else ''} over splits)"


def ours_from_results(aggregated: pd.DataFrame, tables: Iterable | None = None, statistic: str | None = None,
                      stand_ins: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Our aggregated runs (``results_tables(root)["aggregated"]``) as cells of the paper's tables.

    A run fills the method row whose configuration it matches exactly (:mod:`percept.study.paper_specs`), with the
    table's statistic over splits (``statistic`` overrides it: ``median`` / ``mean``). A cell is
    ``comparable`` only for a real dataset, the paper's encoder weights (not random) and no demo stand-in.
    Returns ``table, method, train_dataset, test_dataset, metric, ours, our_dataset, our_datasets, backbone,
    n_splits, statistic, stand_in, comparable, source, note``."""
    from ..data.sources import dataset_task, is_synthetic
    tables = [str(t) for t in (tables if tables is not None else TABLE_SPECS)]
    cells = {t: set(zip(paper_table(t)["test_dataset"], paper_table(t)["metric"])) for t in tables
             if not get_table_spec(t).cross}
    rows = []
    for _, run in aggregated.iterrows():
        config, backbone_stand_in = run_configuration(run)
        for t in cells:
            spec = get_table_spec(t)
            row = spec.row_for(config)
            if row is None:
                continue
            name, dataset_stand_in = paper_dataset(run["dataset"], t, stand_ins)
            if name not in {d for d, _ in cells[t]}:
                continue   # the table is about other datasets
            stat = statistic or spec.statistic[dataset_task(run["dataset"])]
            stand_in = dataset_stand_in or backbone_stand_in
            for column in aggregated.columns:
                if not column.startswith(f"{stat}_"):
                    continue
                metric = paper_metric(column[len(stat) + 1:], name)
                value = run[column]
                if (name, metric) not in cells[t] or value is None or (isinstance(value, float) and math.isnan(value)):
                    continue   # a metric the table does not report for this dataset
                short = _missing_splits(run["dataset"], run["n_splits"])
                rows.append({"table": t, "method": row.method, "train_dataset": name, "test_dataset": name,
                             "metric": metric, "ours": float(value), "our_dataset": run["dataset"],
                             "our_datasets": run["datasets"], "backbone": run["backbone"],
                             "n_splits": int(run["n_splits"]), "statistic": stat, "stand_in": stand_in,
                             "comparable": bool(not stand_in and _paper_weights(run) and not short
                                                and not is_synthetic(run["dataset"])),
                             "source": _source(run["dataset"], run["backbone"], run["n_splits"], dataset_stand_in,
                                               backbone_stand_in, name, str(run.get("weights", "pretrained"))),
                             "weights": str(run.get("weights", "pretrained")),
                             "our_note": "; ".join(x for x in (row.note, short and f"ours: only {short}") if x)})
    return pd.DataFrame(rows, columns=["table", *KEYS, "ours", "our_dataset", "our_datasets", "backbone", "n_splits",
                                       "statistic", "stand_in", "comparable", "source", "weights", "our_note"])


def ours_from_cross(records: Iterable[Mapping], tables: Iterable = CROSS_TABLES,
                    stand_ins: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Cross-dataset evaluations (records of :func:`percept.engine.evaluate.evaluate_run`) as cells of Tables 2
    and A.1, filled by the runs whose configuration matches the table's row (:mod:`percept.study.paper_specs`).
    Several records of the same (train, test) pair (one per split) are combined with the table's statistic
    (median for IQA, mean for memorability)."""
    from ..data.sources import dataset_task, is_synthetic
    from ..engine.runs import RunDir
    rows = []
    for record in records:
        config = RunDir(record["run"]).read_config()
        trained = "+".join(record["trained_on"])
        variant = {**run_key(config), "datasets": trained, "multi": len(record["trained_on"]) > 1}
        run_config, backbone_stand_in = run_configuration(variant)
        for t in tables:
            spec = get_table_spec(t)
            row = spec.row_for(run_config)
            if row is None:
                continue
            table_metrics = set(paper_table(spec.table)["metric"])
            train_name, train_stand = paper_dataset(record["trained_on"][0], spec.table, stand_ins)
            test_name, test_stand = paper_dataset(record["dataset"], spec.table, stand_ins)
            for key, value in record["metrics"].items():
                metric = paper_metric(key, test_name)
                if metric not in table_metrics:
                    continue
                rows.append({"table": spec.table, "method": row.method, "train_dataset": train_name,
                             "test_dataset": test_name, "metric": metric, "value": float(value),
                             "our_dataset": record["dataset"], "our_datasets": trained, "backbone": variant["backbone"],
                             "statistic": spec.statistic[dataset_task(record["dataset"])],
                             "stand_in": train_stand or test_stand or backbone_stand_in,
                             "weights": variant["weights"], "seed": variant["seed"], "our_note": row.note})
    columns = ["table", *KEYS, "ours", "our_dataset", "our_datasets", "backbone", "n_splits", "statistic",
               "stand_in", "comparable", "source", "weights", "our_note"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    group = ["table", *KEYS, "our_dataset", "our_datasets", "backbone", "statistic", "stand_in", "weights", "seed",
             "our_note"]   # one cell per seed: two seeds' comparable cells are an error in compare, never pooled
    out = frame.groupby(group, sort=False).agg(median=("value", "median"), mean=("value", "mean"),
                                               n_splits=("value", "size")).reset_index()
    out["ours"] = np.where(out["statistic"] == "median", out["median"], out["mean"])
    short = [_missing_splits(tr, n) for tr, n in zip(out["our_datasets"], out["n_splits"])]
    out["our_note"] = ["; ".join(x for x in (note, s and f"ours: only {s}") if x) for note, s in zip(out["our_note"], short)]
    out["comparable"] = ~out["stand_in"] & out["weights"].isin(["pretrained", "file"]) & ~pd.Series(
        [bool(s) for s in short], index=out.index) & \
        ~out["our_dataset"].map(is_synthetic) & ~out["our_datasets"].map(lambda s: is_synthetic(s.split("+")[0]))
    out["source"] = [
        f"{'demo' if s or is_synthetic(d) else 'real'}: {tr} → {d}"
        f"{' (stand-ins for ' + a + ' → ' + b + ')' if s else ''} ({bb}"
        f"{'' if w in ('pretrained', 'file') else ', random weights'}, {n} run{'s' if n != 1 else ''} over splits)"
        for s, d, tr, a, b, bb, w, n in zip(out["stand_in"], out["our_dataset"], out["our_datasets"],
                                            out["train_dataset"], out["test_dataset"], out["backbone"],
                                            out["weights"], out["n_splits"])]
    return out[columns]


# ------------------------------------------------------------------------------------------ comparison
def compare(ours: pd.DataFrame | None, table_id) -> pd.DataFrame:
    """Paper vs ours for every cell of table ``table_id`` (and ours without a paper cell).

    ``ours``: rows of :func:`ours_from_results` / :func:`ours_from_cross` (any tables; None or empty:
    the paper alone). When a comparable row (real data, the paper's weights) and a demo or random-weights
    row fill the same cell, the comparable one is kept (and a pretrained demo row before a random one: the prior
    ablation's random-init runs fill no cell the pretrained demo run fills); two comparable rows for one cell (e.g. two seeds in
    one run tree) are an error, never a silent choice. Columns: ``table, method, train_dataset, test_dataset, metric, paper, ours, difference`` (ours −
    paper), ``status`` (``both`` / ``paper only`` / ``ours only``), ``comparable``, ``source``, ``note``.
    Rows without a paper cell show our own dataset names (a stand-in name would suggest a paper cell)."""
    table_id = str(table_id)
    paper = paper_table(table_id).rename(columns={"value": "paper"})
    paper["_position"] = np.arange(len(paper))
    columns = ["table", *KEYS, "paper", "ours", "difference", "status", "comparable", "source", "note"]
    if ours is None or len(ours) == 0 or not (ours["table"] == table_id).any():
        out = paper.assign(ours=np.nan, difference=np.nan, status="paper only", comparable=False, source="")
        return out[columns].reset_index(drop=True)
    mine = ours[ours["table"] == table_id].copy()
    mine["comparable"] = mine["comparable"].astype(bool)
    real = mine[mine["comparable"]]
    twice = real[real.duplicated(KEYS, keep=False)]
    if len(twice):
        cell = twice.iloc[0]
        same = twice[(twice[KEYS] == cell[KEYS]).all(axis=1)]
        raise ValueError(f"table {table_id}: {len(same)} comparable results fill the cell {cell['method']} / "
                         f"{cell['test_dataset']} / {cell['metric']} ({'; '.join(same['source'])}); compare "
                         f"one configuration per cell (e.g. one seed per run tree)")
    random = mine["weights"].astype(str).eq("random") if "weights" in mine.columns else False
    rank = np.where(mine["comparable"], 0, np.where(mine["stand_in"].astype(bool), 2, 1) + 2 * random)
    mine = mine.assign(_rank=rank).sort_values("_rank", kind="mergesort").drop_duplicates(KEYS, keep="first")
    if "our_note" not in mine.columns:
        mine["our_note"] = ""
    merged = paper.merge(mine.drop(columns="table"), on=KEYS, how="outer", indicator=True, sort=False)
    merged["table"] = table_id
    merged["status"] = merged["_merge"].map({"both": "both", "left_only": "paper only", "right_only": "ours only"})
    alone = merged["status"] == "ours only"
    merged.loc[alone, "test_dataset"] = merged.loc[alone, "our_dataset"]
    merged.loc[alone, "train_dataset"] = merged.loc[alone, "our_datasets"]
    merged["difference"] = merged["ours"] - merged["paper"]
    merged["comparable"] = merged["comparable"].fillna(False).astype(bool) & (merged["status"] == "both")
    merged["source"] = merged["source"].fillna("")
    ours_note = merged["our_note"].fillna("").astype(str)
    merged["note"] = [("; ".join(x for x in (str(n), o) if x)) for n, o in zip(merged["note"].fillna(""), ours_note)]
    order = {m: i for i, m in enumerate(pd.unique(paper["method"]))}
    merged["_order"] = merged["method"].map(order).fillna(len(order))
    merged = merged.sort_values(["_order", "_position"], kind="mergesort", na_position="last").reset_index(drop=True)
    return merged[columns]


def _number(value, digits: int = 4, signed: bool = False, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:+.{digits}g}" if signed else f"{value:.{digits}g}"


def format_table(wide: pd.DataFrame, digits: int = 4, missing: str = "—") -> pd.DataFrame:
    """A wide table (e.g. ``paper_table(t, wide=True)``) for display: ``digits`` significant digits (as the
    paper prints them), missing cells as ``—``."""
    return wide.apply(lambda column: column.map(lambda v: _number(v, digits, missing=missing)))


def format_comparison(compared: pd.DataFrame, digits: int = 4, missing: str = "—") -> pd.DataFrame:
    """``compare`` output for display: numbers as text (``digits`` significant digits), missing cells as
    ``—`` with the reason."""
    def number(value, signed=False):
        return _number(value, digits, signed, missing)
    out = compared[["method", "train_dataset", "test_dataset", "metric"]].copy()
    out["paper"] = [number(v) if s != "ours only" else f"{missing} (no paper cell)"
                    for v, s in zip(compared["paper"], compared["status"])]
    out["ours"] = [number(v) if s != "paper only" else f"{missing} (not run)"
                   for v, s in zip(compared["ours"], compared["status"])]
    out["difference"] = [number(d, signed=True) if s == "both" else "" for d, s in
                         zip(compared["difference"], compared["status"])]
    out["comparable"] = ["yes" if c else ("no: demo" if s == "both" else "") for c, s in
                         zip(compared["comparable"], compared["status"])]
    out["source"] = compared["source"]
    return out.reset_index(drop=True)


def show(ours: pd.DataFrame | None, tables: Iterable, out_dir: str | os.PathLike | None = None, *,
         caption: str = "Table {table}, PerceptCLIP cells: the paper beside ours.", printed: bool = True,
         perceptclip_rows: bool = True) -> dict[str, pd.DataFrame]:
    """A notebook's "beside the paper" block in one call. For each table id of ``tables``: the paper's table
    as printed (``printed``), then its rows with the paper's number beside ours (:func:`compare`; only the
    rows a PerceptCLIP run can fill and ours without a paper cell when ``perceptclip_rows``), under
    ``caption`` (``{table}`` and ``{title}`` are replaced by the table's id and title). Each full comparison is saved (atomically) to
    ``out_dir/table_<id>_paper_vs_ours.csv`` and returned by table id. Displays with IPython (a notebook)."""
    from IPython.display import Markdown, display

    from ..core.files import write_csv
    shown = {}
    for table_id in tables:
        table_id = str(table_id)
        comparison = compare(ours, table_id)
        if out_dir is not None:
            write_csv(Path(out_dir) / f"table_{table_id}_paper_vs_ours.csv", comparison)
        rows = comparison
        if perceptclip_rows:
            rows = comparison[comparison["method"].isin(fillable_methods(table_id))
                              | (comparison["status"] == "ours only")]
        blocks = [Markdown(f"**Table {table_id}** — {TABLE_TITLES[table_id]} (the paper)"),
                  format_table(paper_table(table_id, wide=True))] if printed else []
        text = caption.replace("{table}", table_id).replace("{title}", TABLE_TITLES[table_id])
        display(*blocks, Markdown(text),
                format_comparison(rows))
        shown[table_id] = comparison
    return shown


def compare_all(ours: pd.DataFrame | None, tables: Iterable | None = None) -> pd.DataFrame:
    """:func:`compare` for every table (default: all of the paper's), concatenated."""
    tables = list(tables) if tables is not None else paper_tables()
    return pd.concat([compare(ours, t) for t in tables], ignore_index=True)
