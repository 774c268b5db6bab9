"""The paper's numbers as reference data, our results beside them, and the paper's experiments as a plan.

Reference data: ``paper/paper_results.csv`` at the repository root, every cell of Tables 1-7 and A.1-A.11
of Zalcher, Wasserman et al. (TMLR 2025) in tidy form (``table, method, train_dataset, test_dataset,
metric, value, note``; transcribed from the paper, see ``paper/README.md``). Missing cells of the paper
("-") are absent rows.

* :func:`paper_table` — one table, long (one row per cell) or wide (as printed: methods × (dataset, metric)).
* :func:`ours_from_results` / :func:`ours_from_cross` — our runs (:func:`percept.results.results_tables`,
  :func:`percept.evaluate.evaluate_run` records) as rows of the paper's tables: the paper's method name
  for the model variant (e.g. ``strategy="frozen"`` → "Frozen CLIP" in Table 6), the paper's dataset and
  metric names (``accuracy`` on EmoSet → ``ACC-8``), the paper's statistic over splits (median for IQA,
  mean otherwise).
* :func:`compare` — paper vs ours per cell: ``paper``, ``ours``, ``difference`` (ours − paper) and a
  ``status``: ``both``, ``paper only`` (not run here) or ``ours only`` (no such cell in the paper).

The embedded demo sets are not the paper's datasets. So that the demo still fills the tables' *shape*,
each synthetic set stands in for one paper dataset (:data:`DEMO_STAND_INS`, per table
:data:`TABLE_STAND_INS`); such rows carry ``stand_in=True`` and ``comparable=False``: their differences
measure nothing about the paper. Only a run on the real dataset with the paper's backbone is comparable.

Reproduction plan: ``reproduce.yaml`` (repository root) lists the paper's experiments (datasets,
backbone, splits, learning rates, estimated GPU hours); :func:`reproduce` runs it with the sweep and
results machinery (``make reproduce``; ``python -m percept.paper --dry-run`` prints the plan).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = REPO_ROOT / "paper" / "paper_results.csv"
REPRODUCE_YAML = REPO_ROOT / "reproduce.yaml"
COLUMNS = ("table", "method", "train_dataset", "test_dataset", "metric", "value", "note")
KEYS = ["method", "train_dataset", "test_dataset", "metric"]

TABLE_TITLES = {
    "1": "IQA on seven benchmarks: median SRCC and PLCC over 10 splits",
    "2": "Cross-dataset generalisation in IQA: SRCC, trained on one dataset, tested on another",
    "3": "Image memorability on LaMem: mean SRCC and MSE over 5 splits",
    "4": "Emotion classification on EmoSet and EmotionROI: accuracy",
    "5": "Multi-dataset training on smaller datasets",
    "6": "Training strategy: full fine-tuning vs frozen CLIP vs LoRA",
    "7": "Prediction head: linear layer vs MLP",
    "A.1": "Memorability generalisation: trained on LaMem, tested on THINGS",
    "A.2": "Image memorability on SUN: mean over 25 splits",
    "A.3": "Emotion classification: accuracy, mAP, macro-F1, weighted-F1",
    "A.4": "Multi- vs single-dataset training, IQA",
    "A.5": "Multi- vs single-dataset training, memorability",
    "A.6": "Multi- vs single-dataset training, emotion",
    "A.7": "CLIP backbone size: ViT-B/32, ViT-B/16, ViT-L/14",
    "A.8": "Pretrained encoder: MAE, DINOv2, TULIP, CLIP",
    "A.9": "Ablation of the two-phase multi-dataset training",
    "A.10": "LoRA rank r and alpha on KonIQ-10k: SRCC",
    "A.11": "LoRA rank r and alpha on KonIQ-10k: PLCC",
}
CROSS_TABLES = ("2", "A.1")

# percept dataset name -> the paper's spelling
PAPER_DATASET_NAMES = {
    "livec": "LIVEC", "koniq10k": "KonIQ-10k", "spaq": "SPAQ", "flive": "FLIVE", "live": "LIVE",
    "tid2013": "TID2013", "kadid10k": "KADID-10k", "lamem": "LaMem", "things": "THINGS",
    "sun_memorability": "SUN", "memcat": "MemCat", "emoset": "EmoSet", "emotionroi": "EmotionROI",
}
EMOTION_CLASS_COUNTS = {"EmoSet": 8, "EmotionROI": 6}

# Which paper dataset each embedded demo set stands in for (its pipeline's task), by default and per table.
DEMO_STAND_INS = {"synthetic_iqa": "KADID-10k", "synthetic_strength": "LaMem", "synthetic_distortion": "EmoSet"}
_SMALL = {"synthetic_iqa": "TID2013", "synthetic_strength": "THINGS", "synthetic_distortion": "EmotionROI"}
_KONIQ = {"synthetic_iqa": "KonIQ-10k"}
TABLE_STAND_INS = {"5": _SMALL, "A.9": _SMALL, "6": _KONIQ, "7": _KONIQ, "A.7": _KONIQ, "A.8": _KONIQ,
                   "A.10": _KONIQ, "A.11": _KONIQ}

_PLAIN_METRICS = {"srcc": "SRCC", "plcc_logistic": "PLCC", "mse": "MSE", "acc_2": "ACC-2"}
_CLASS_METRICS = {"accuracy": "ACC", "mAP": "mAP", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}
STRATEGY_NAMES = {"full": "Full Fine-tuning CLIP", "frozen": "Frozen CLIP", "lora": "LoRA for CLIP"}   # Table 6
HEAD_NAMES = {"linear": "Linear Layer", "mlp": "MLP"}                                                  # Table 7
BACKBONE_NAMES = {"A.7": {"clip_vit_b32": "ViT-B/32", "clip_vit_b16": "ViT-B/16", "clip_vit_l14": "ViT-L/14"},
                  "A.8": {"mae_vit_l16": "MAE", "dinov2_vit_l14": "DinoV2", "clip_vit_l14": "CLIP"}}
PERCEPTCLIP_NAMES = {"1": "PerceptCLIP (3M)"}    # the method's name where a table prints it differently
PAPER_BACKBONE = "clip_vit_l14"
PAPER_LORA = (16, 8.0)


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
        raise FileNotFoundError(f"the paper's reference numbers are not at {path} (paper/paper_results.csv "
                                f"of the repository)")
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


def paper_metric(metric: str, paper_dataset_name: str) -> str | None:
    """Our metric key -> the paper's metric name on that dataset (``accuracy`` on EmoSet -> ``ACC-8``),
    or None when the paper reports no such metric."""
    if metric in _PLAIN_METRICS:
        return _PLAIN_METRICS[metric]
    if metric in _CLASS_METRICS and paper_dataset_name in EMOTION_CLASS_COUNTS:
        return f"{_CLASS_METRICS[metric]}-{EMOTION_CLASS_COUNTS[paper_dataset_name]}"
    return None


def method_name(row: Mapping, table_id) -> str | None:
    """The paper's method name of a run configuration in table ``table_id`` (None: not in that table).

    ``row`` holds ``datasets`` ('a+b' for multi-dataset runs), ``backbone``, ``strategy``, ``head``,
    ``lora_r``, ``lora_alpha``, ``head_finetune`` (the configuration columns of percept.results)."""
    t = str(table_id)
    multi = "+" in str(row["datasets"])
    two_phase = bool(row["head_finetune"])
    lora = row["strategy"] == "lora"
    paper_lora = lora and (int(row["lora_r"]), float(row["lora_alpha"])) == PAPER_LORA
    default = paper_lora and row["head"] == "mlp"
    single = not multi and not two_phase
    plain = default and single
    if t == "6":
        return STRATEGY_NAMES[row["strategy"]] if single and row["head"] == "mlp" and (paper_lora or not lora) else None
    if t == "7":
        return HEAD_NAMES.get(row["head"]) if single and paper_lora else None
    if t in ("A.10", "A.11"):
        return f"PerceptCLIP r={int(row['lora_r'])} alpha={float(row['lora_alpha']):g}" \
            if single and lora and row["head"] == "mlp" else None
    if t in BACKBONE_NAMES:
        return BACKBONE_NAMES[t].get(row["backbone"]) if plain else None
    if t in ("5", "A.4", "A.5", "A.6"):
        if plain:
            return "PerceptCLIP"
        return "PerceptCLIP Multi-Dataset" if default and multi and two_phase else None
    if t == "A.9":
        if not default:
            return None
        if plain:
            return "PerceptCLIP Single-Dataset"
        if two_phase:
            return f"PerceptCLIP 2-Phase Training {'Multi' if multi else 'Single'}-Dataset"
        return None
    return PERCEPTCLIP_NAMES.get(t, "PerceptCLIP") if plain else None


def fillable_methods(table_id) -> list[str]:
    """The paper's methods of table ``table_id`` that percept can train (PerceptCLIP and its ablation
    variants; not the other papers' models, nor TULIP in Table A.8)."""
    t = str(table_id)
    methods = list(pd.unique(paper_table(t)["method"]))
    if t == "6":
        names = set(STRATEGY_NAMES.values())
    elif t == "7":
        names = set(HEAD_NAMES.values())
    elif t in BACKBONE_NAMES:
        names = set(BACKBONE_NAMES[t].values())
    else:
        names = {m for m in methods if m.startswith("PerceptCLIP")}
    return [m for m in methods if m in names]


def _source(dataset: str, backbone: str, n_splits, stand_in: bool, paper_name: str) -> str:
    from .data.sources import is_synthetic
    kind = f"demo: {dataset} standing in for {paper_name}" if stand_in else \
        (f"demo: {dataset}" if is_synthetic(dataset) else f"real: {paper_name}")
    return f"{kind} ({backbone}, {int(n_splits)} split{'s' if int(n_splits) != 1 else ''})"


def ours_from_results(aggregated: pd.DataFrame, tables: Iterable | None = None, statistic: str | None = None,
                      stand_ins: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Our aggregated runs (``results_tables(root)["aggregated"]``) as cells of the paper's tables.

    ``statistic``: ``median``/``mean`` over splits (default: the paper's for the dataset's task: median
    for IQA, mean otherwise). Returns ``table, method, train_dataset, test_dataset, metric, ours,
    our_dataset, our_datasets, backbone, n_splits, statistic, stand_in, comparable, source``."""
    from .data.sources import dataset_task, is_synthetic
    from .results import PAPER_STATISTIC
    tables = [str(t) for t in (tables if tables is not None else TABLE_TITLES)]
    cells = {t: set(zip(paper_table(t)["test_dataset"], paper_table(t)["metric"])) for t in tables
             if t not in CROSS_TABLES}
    rows = []
    for _, run in aggregated.iterrows():
        stat = statistic or PAPER_STATISTIC[dataset_task(run["dataset"])]
        for t in tables:
            if t in CROSS_TABLES:
                continue
            method = method_name(run, t)
            if method is None:
                continue
            name, stand_in = paper_dataset(run["dataset"], t, stand_ins)
            if name not in {d for d, _ in cells[t]}:
                continue   # the table is about other datasets
            backbone_ok = run["backbone"] == PAPER_BACKBONE or t in BACKBONE_NAMES
            for column in aggregated.columns:
                if not column.startswith(f"{stat}_"):
                    continue
                metric = paper_metric(column[len(stat) + 1:], name)
                value = run[column]
                if (name, metric) not in cells[t] or value is None or (isinstance(value, float) and math.isnan(value)):
                    continue   # a metric the table does not report for this dataset
                rows.append({"table": t, "method": method, "train_dataset": name, "test_dataset": name,
                             "metric": metric, "ours": float(value), "our_dataset": run["dataset"],
                             "our_datasets": run["datasets"], "backbone": run["backbone"],
                             "n_splits": int(run["n_splits"]), "statistic": stat, "stand_in": stand_in,
                             "comparable": bool(not stand_in and backbone_ok
                                                and not is_synthetic(run["dataset"])),
                             "source": _source(run["dataset"], run["backbone"], run["n_splits"], stand_in, name)})
    return pd.DataFrame(rows, columns=["table", *KEYS, "ours", "our_dataset", "our_datasets", "backbone", "n_splits",
                                       "statistic", "stand_in", "comparable", "source"])


def ours_from_cross(records: Iterable[Mapping], tables: Iterable = CROSS_TABLES,
                    stand_ins: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Cross-dataset evaluations (records of :func:`percept.evaluate.evaluate_run`) as cells of Tables 2
    and A.1. Several records of the same (train, test) pair (one per split) are averaged (median for IQA)."""
    import json
    from .data.sources import dataset_task, is_synthetic
    from .results import PAPER_STATISTIC
    rows = []
    for record in records:
        config = json.loads((Path(record["run"]) / "config.json").read_text())
        model = config["model"]
        trained = "+".join(record["trained_on"])
        variant = {"datasets": trained, "backbone": model["backbone"], "strategy": model["strategy"],
                   "head": model["head"], "lora_r": model["lora_r"], "lora_alpha": model["lora_alpha"],
                   "head_finetune": config["head_finetune"]}
        for t in tables:
            t = str(t)
            table_metrics = set(paper_table(t)["metric"])
            method = method_name(variant, t)
            if method is None or len(record["trained_on"]) != 1:
                continue
            train_name, train_stand = paper_dataset(record["trained_on"][0], t, stand_ins)
            test_name, test_stand = paper_dataset(record["dataset"], t, stand_ins)
            for key, value in record["metrics"].items():
                metric = paper_metric(key, test_name)
                if metric not in table_metrics:
                    continue
                rows.append({"table": t, "method": method, "train_dataset": train_name, "test_dataset": test_name,
                             "metric": metric, "value": float(value), "our_dataset": record["dataset"],
                             "our_datasets": trained, "backbone": model["backbone"],
                             "statistic": PAPER_STATISTIC[dataset_task(record["dataset"])],
                             "stand_in": train_stand or test_stand})
    columns = ["table", *KEYS, "ours", "our_dataset", "our_datasets", "backbone", "n_splits", "statistic",
               "stand_in", "comparable", "source"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    group = ["table", *KEYS, "our_dataset", "our_datasets", "backbone", "statistic", "stand_in"]
    out = frame.groupby(group, sort=False).agg(median=("value", "median"), mean=("value", "mean"),
                                               n_splits=("value", "size")).reset_index()
    out["ours"] = np.where(out["statistic"] == "median", out["median"], out["mean"])
    out["comparable"] = ~out["stand_in"] & (out["backbone"] == PAPER_BACKBONE) & \
        ~out["our_dataset"].map(is_synthetic) & ~out["our_datasets"].map(lambda s: is_synthetic(s.split("+")[0]))
    out["source"] = [
        f"{'demo' if s or is_synthetic(d) else 'real'}: {tr} → {d}"
        f"{' (stand-ins for ' + a + ' → ' + b + ')' if s else ''} ({bb}, {n} split{'s' if n != 1 else ''})"
        for s, d, tr, a, b, bb, n in zip(out["stand_in"], out["our_dataset"], out["our_datasets"],
                                         out["train_dataset"], out["test_dataset"], out["backbone"], out["n_splits"])]
    return out[columns]


# ------------------------------------------------------------------------------------------ comparison
def compare(ours: pd.DataFrame | None, table_id) -> pd.DataFrame:
    """Paper vs ours for every cell of table ``table_id`` (and ours without a paper cell).

    ``ours``: rows of :func:`ours_from_results` / :func:`ours_from_cross` (any tables; None or empty:
    the paper alone). When a real-data row and a demo stand-in fill the same cell, the real one is kept.
    Columns: ``table, method, train_dataset, test_dataset, metric, paper, ours, difference`` (ours −
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
    mine = (mine.sort_values("stand_in", kind="mergesort")          # real rows first
            .drop_duplicates(KEYS, keep="first"))
    merged = paper.merge(mine.drop(columns="table"), on=KEYS, how="outer", indicator=True, sort=False)
    merged["table"] = table_id
    merged["status"] = merged["_merge"].map({"both": "both", "left_only": "paper only", "right_only": "ours only"})
    alone = merged["status"] == "ours only"
    merged.loc[alone, "test_dataset"] = merged.loc[alone, "our_dataset"]
    merged.loc[alone, "train_dataset"] = merged.loc[alone, "our_datasets"]
    merged["difference"] = merged["ours"] - merged["paper"]
    merged["comparable"] = merged["comparable"].fillna(False).astype(bool) & (merged["status"] == "both")
    merged["source"] = merged["source"].fillna("")
    merged["note"] = merged["note"].fillna("")
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


def compare_all(ours: pd.DataFrame | None, tables: Iterable | None = None) -> pd.DataFrame:
    """:func:`compare` for every table (default: all of the paper's), concatenated."""
    tables = list(tables) if tables is not None else paper_tables()
    return pd.concat([compare(ours, t) for t in tables], ignore_index=True)


# ------------------------------------------------------------------------------------------ reproduction
# GPU-hour estimates (App. A.1: "Training on an NVIDIA L40S GPU takes up to a day for the largest dataset
# (e.g. EmoSet with approximately 100,000 images) and only a few hours for smaller datasets when run for
# 40 epochs"): one run costs up to 24 h x (images x IQA replicas per epoch) / 100,000 on an L40S.
HOURS_PER_IMAGE_EPOCHS40 = 24.0 / 100_000


def run_hours(dataset: str) -> float:
    """Upper estimate of one 40-epoch run on ``dataset`` on an L40S, in hours (see above)."""
    from .data.cards import get_card
    card = get_card(dataset)
    return HOURS_PER_IMAGE_EPOCHS40 * card.expected_images * (card.train_replicas or 1)


def load_reproduce_config(path: str | os.PathLike | None = None) -> dict:
    """Read ``reproduce.yaml`` (needs PyYAML, installed with the ``notebooks`` extra)."""
    try:
        import yaml
    except ImportError as err:   # pragma: no cover - depends on the environment
        raise ImportError("reading reproduce.yaml needs PyYAML: pip install pyyaml (or the 'notebooks' extra)") from err
    path = Path(path) if path else REPRODUCE_YAML
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or "experiments" not in config:
        raise ValueError(f"{path}: expected a mapping with 'experiments'")
    for name, exp in config["experiments"].items():
        unknown = set(exp) - {"tables", "kind", "datasets", "pairs", "splits", "variants", "head_finetune",
                              "lrs", "uses", "gpu_hours", "note"}
        if unknown:
            raise ValueError(f"{path}: experiment {name!r} has unknown keys {sorted(unknown)}")
        if exp.get("kind") not in ("single", "multi", "cross"):
            raise ValueError(f"{path}: experiment {name!r}: kind must be single, multi or cross")
    return config


def _splits(exp: dict, dataset: str) -> list[int]:
    splits = exp.get("splits", 1)
    if isinstance(splits, dict):
        splits = splits.get(dataset, 1)
    return list(range(1, int(splits) + 1)) if isinstance(splits, int) else [int(s) for s in splits]


def reproduce_plan(config: dict | None = None) -> pd.DataFrame:
    """One row per experiment of ``reproduce.yaml``: tables, kind, datasets, variants, splits, runs
    (splits x learning rates x variants) and estimated L40S hours (upper bound: 40 epochs, no early stop)."""
    config = config or load_reproduce_config()
    lrs = config["defaults"]["lrs"]
    rows = []
    for name, exp in config["experiments"].items():
        variants = exp.get("variants") or [{}]
        exp_lrs = exp.get("lrs", lrs)
        if exp["kind"] == "cross":
            rows.append({"experiment": name, "tables": ", ".join(map(str, exp["tables"])), "kind": "cross",
                         "datasets": "; ".join(f"{a} → {b}" for a, b in exp["pairs"]), "variants": 1,
                         "runs": 0, "gpu_hours": 0.0, "stated_gpu_hours": exp.get("gpu_hours")})
            continue
        groups = [[d] for d in exp["datasets"]] if exp["kind"] == "single" else [list(exp["datasets"])]
        runs, hours = 0, 0.0
        for group in groups:
            n = len(_splits(exp, group[0])) * len(exp_lrs) * len(variants)
            runs += n
            hours += n * sum(run_hours(d) for d in group)
        rows.append({"experiment": name, "tables": ", ".join(map(str, exp["tables"])), "kind": exp["kind"],
                     "datasets": ", ".join(exp["datasets"]), "variants": len(variants), "runs": runs,
                     "gpu_hours": round(hours), "stated_gpu_hours": exp.get("gpu_hours")})
    return pd.DataFrame(rows)


def _base_config(config: dict, datasets: list[str], data_root: Path, head_finetune: bool):
    from .data.sources import DataConfig
    from .model import ModelConfig
    from .train import TrainConfig
    roots = config.get("dataset_roots") or {}
    manifests = config.get("manifests") or {}
    data = [DataConfig(d, str(data_root / roots.get(d, d)), manifest=manifests.get(d)) for d in datasets]
    defaults = config["defaults"]
    return TrainConfig(data=data, model=ModelConfig(**defaults["model"]), head_finetune=head_finetune,
                       **defaults["train"])


def reproduce(out: str | os.PathLike, config_path: str | os.PathLike | None = None,
              data_root: str | os.PathLike | None = None, only: Iterable[str] | None = None,
              gpus: list[int] | None = None, log=print) -> dict[str, pd.DataFrame]:
    """Run the experiments of ``reproduce.yaml`` (``only``: some of them) into ``out/runs``, evaluate the
    cross-dataset pairs, and write ``out/tables/table_<id>.csv`` (paper vs ours). Finished runs are
    skipped, interrupted ones resume: re-running continues where it stopped. Returns the comparisons."""
    from .data.sources import DataConfig
    from .evaluate import evaluate_run
    from .results import results_tables
    from .runs import write_csv
    from .sweep import expand_grid, run_sweep

    config = load_reproduce_config(config_path)
    data_root = Path(data_root or config.get("data_root") or os.environ.get("PERCEPT_DATA_ROOT") or "")
    if not str(data_root) or not data_root.is_dir():
        raise FileNotFoundError(f"data root {str(data_root)!r} is not a folder: pass --data-root or set "
                                f"PERCEPT_DATA_ROOT (each dataset prepared in DATA_ROOT/<name>, see reproduce.yaml)")
    out = Path(out)
    names = list(config["experiments"]) if only is None else list(only)
    unknown = set(names) - set(config["experiments"])
    if unknown:
        raise ValueError(f"unknown experiments {sorted(unknown)}; known: {', '.join(config['experiments'])}")
    records = []
    lrs = config["defaults"]["lrs"]
    # cross-dataset evaluations use the runs of the training experiments: those go first, whatever the file's order
    for name in sorted(names, key=lambda n: config["experiments"][n]["kind"] == "cross"):
        exp = config["experiments"][name]
        log(f"== {name} (tables {', '.join(map(str, exp['tables']))})")
        if exp["kind"] == "cross":
            tables = results_tables(out / "runs")
            selected = tables["selected"]
            for train_name, test_name in exp["pairs"]:
                runs = selected[(selected["datasets"] == train_name) & (selected["strategy"] == "lora")
                                & (selected["head"] == "mlp") & ~selected["head_finetune"].astype(bool)]
                if runs.empty:
                    log(f"  no finished run on {train_name}: run its experiment first ({exp.get('uses')})")
                    continue
                roots = config.get("dataset_roots") or {}
                target = DataConfig(test_name, str(data_root / roots.get(test_name, test_name)),
                                    manifest=(config.get("manifests") or {}).get(test_name))
                for run_dir in runs["run_dir"]:
                    records.append(evaluate_run(run_dir, target, split=None, part="test"))
            continue
        groups = [[d] for d in exp["datasets"]] if exp["kind"] == "single" else [list(exp["datasets"])]
        for group in groups:
            base = _base_config(config, group, data_root, bool(exp.get("head_finetune", False)))
            grid = expand_grid(base, lrs=exp.get("lrs", lrs), splits=_splits(exp, group[0]),
                               model_variants=exp.get("variants") or [{}])
            status = run_sweep(grid, out / "runs", gpus=gpus, log=log)
            failed = {k: v for k, v in status.items() if v.startswith("failed")}
            for k, v in failed.items():
                log(f"  {k}: {v}")
    aggregated = results_tables(out / "runs")["aggregated"]
    ours = pd.concat([ours_from_results(aggregated), ours_from_cross(records)], ignore_index=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    wanted = sorted({str(t) for n in names for t in config["experiments"][n]["tables"]}, key=table_sort_key)
    result = {}
    for t in wanted:
        result[t] = compare(ours, t)
        write_csv(out / "tables" / f"table_{t}.csv", result[t])
        log(f"table {t}: {(result[t]['status'] == 'both').sum()} of {(result[t]['status'] != 'ours only').sum()} "
            f"paper cells filled -> {out / 'tables' / f'table_{t}.csv'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="percept reproduce",
                                     description="Reproduce the paper's tables (reproduce.yaml): sweeps on the real "
                                                 "datasets with CLIP ViT-L/14, then paper-vs-ours tables.")
    parser.add_argument("--config", default=str(REPRODUCE_YAML), help="plan file (default: %(default)s)")
    parser.add_argument("--out", default=str(REPO_ROOT / "outputs" / "reproduce"),
                        help="output folder, runs/ and tables/ (default: %(default)s)")
    parser.add_argument("--data-root", default=None, help="folder of the prepared datasets (default: the plan's "
                        "data_root or $PERCEPT_DATA_ROOT)")
    parser.add_argument("--only", nargs="+", default=None, help="experiment names to run")
    parser.add_argument("--gpus", type=int, nargs="*", default=None, help="GPU indices (default: all visible)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated GPU hours")
    args = parser.parse_args(argv)
    try:
        config = load_reproduce_config(args.config)
        plan = reproduce_plan(config)
        if args.only:
            plan = plan[plan["experiment"].isin(args.only)]
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(plan.drop(columns="stated_gpu_hours").to_string(index=False))
        print(f"total: {int(plan['runs'].sum())} runs, about {int(plan['gpu_hours'].sum()):,} L40S GPU hours "
              f"(upper bound: 40 epochs each; early stopping shortens most runs)")
        if args.dry_run:
            return 0
        reproduce(args.out, args.config, args.data_root, args.only, args.gpus)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        print(f"percept reproduce: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
