"""Figures of the notebooks: one style, one way to save, named after the paper's figure or table.

* :func:`set_style` — the house style (matplotlib rcParams; call once per notebook).
* :func:`figure_name` — ``<stem>_demo`` when the data are the embedded synthetic sets, else
  ``<stem>_<dataset>``: a demo figure can never be mistaken for a real-data one (the ``_demo`` files are
  git-ignored; real-data figures may be committed).
* :func:`save_figure` — PNG and PDF into ``figures/`` with fixed metadata (no timestamps), so that
  regenerating an unchanged figure gives the same bytes.
* plots the analysis module does not have: training curves (``log.csv``), predictions against labels,
  grouped bars for ablation and multi-dataset tables, and the paper-vs-ours cell coverage.

Every plot returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state; safe
under the Agg backend); notebooks display it by leaving it as the cell's last expression.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

FORMATS = ("png", "pdf")
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": False,          # image plots (heatmaps, galleries) must not get grid lines; line/bar plots add one
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": "viridis",
    "image.interpolation": "none",   # pixels as they are: sharp matrices, raw images in the PDF (3x faster saves)
    "axes.prop_cycle": mpl.cycler(color=["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                         "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]),
    "pdf.fonttype": 42,          # editable text in the PDF
    "svg.hashsalt": "percept",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def set_style() -> None:
    """Apply the house style to matplotlib's global rcParams (idempotent)."""
    mpl.rcParams.update(STYLE)


def is_demo(datasets: str | Iterable[str]) -> bool:
    """True when every dataset is one of the embedded synthetic demo sets."""
    from ..data.sources import is_synthetic
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    return all(is_synthetic(n) for n in names)


def figure_name(stem: str, datasets: str | Iterable[str]) -> str:
    """``table1_iqa`` + ``synthetic_iqa`` -> ``table1_iqa_demo``; + ``koniq10k`` -> ``table1_iqa_koniq10k``."""
    from ..data.sources import is_synthetic
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    if is_demo(names):
        return f"{stem}_demo"
    return f"{stem}_{'+'.join(str(n) for n in names if not is_synthetic(n))}"


def save_figure(fig: Figure, name: str, figures_dir: str | os.PathLike,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``figures_dir/name.{png,pdf}`` (directories created); returns the paths.

    ``name`` is a file stem named after the paper's figure/table (``fig4_attention_heads_demo``);
    metadata carry no creation date, so an unchanged figure is rewritten byte for byte (PNG; PDF with
    the same matplotlib version)."""
    if not _NAME.match(name) or "/" in name:
        raise ValueError(f"figure name {name!r} must be a plain file stem (letters, digits, _ . -)")
    unknown = set(formats) - {"png", "pdf", "svg"}
    if unknown:
        raise ValueError(f"unknown figure formats {sorted(unknown)}; use png, pdf or svg")
    directory = Path(figures_dir)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None},
                "svg": {"Date": None}}
    paths = []
    for fmt in formats:
        path = directory / f"{name}.{fmt}"
        tmp = directory / f".{name}.tmp.{fmt}"
        with mpl.rc_context({"svg.hashsalt": "percept"}):
            fig.savefig(tmp, format=fmt, metadata=metadata[fmt])
        os.replace(tmp, path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------- plots
def plot_training_curves(log: pd.DataFrame, metric: str | None = None, title: str | None = None) -> Figure:
    """Training loss and validation metric per epoch from a run's ``log.csv`` (best epoch marked).

    ``metric``: the validation column without ``val_`` (default: the run's selection metric, i.e. the
    first ``val_*`` column)."""
    if metric is None:
        metric = next(c for c in log.columns if c.startswith("val_"))[len("val_"):]
    column = f"val_{metric}"
    if column not in log.columns:
        raise ValueError(f"log has no column {column!r}; it has {list(log.columns)}")
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(log["epoch"], log["train_loss"], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    left.set_title("training loss")
    right.plot(log["epoch"], log[column], marker="o", color="C1")
    values = log[column].to_numpy(dtype=float)
    if np.isfinite(values).any():
        best = int(np.nanargmin(values) if metric in ("mse", "rmse") else np.nanargmax(values))
        right.scatter([log["epoch"].iloc[best]], [values[best]], s=120, facecolors="none", edgecolors="k",
                      label=f"best epoch {int(log['epoch'].iloc[best])}")
        right.legend()
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation {metric}")
    right.set_title(f"validation {metric}")
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True)
    if title:
        fig.suptitle(title)
    return fig


def plot_predictions_scatter(pred: pd.DataFrame, xlabel: str = "label", ylabel: str = "prediction",
                             title: str | None = None, hue: str | None = None) -> Figure:
    """Predictions (y) against labels (x) with SRCC and PLCC in the legend title. ``hue``: a column
    (e.g. a distortion type) to colour the points by."""
    from scipy.stats import pearsonr, spearmanr
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    groups = [(None, pred)] if hue is None else list(pred.groupby(hue, sort=True))
    for name, group in groups:
        ax.scatter(group["label"], group["prediction"], s=18, alpha=0.75, label=None if name is None else str(name))
    x, y = pred["label"].to_numpy(float), pred["prediction"].to_numpy(float)
    stats = ""
    if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        stats = f"SRCC {spearmanr(x, y)[0]:.3f}, PLCC {pearsonr(x, y)[0]:.3f}, n={len(x)}"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True)
    if hue is not None:
        ax.legend(title=stats or None, fontsize=8)
    elif stats:
        ax.text(0.02, 0.98, stats, transform=ax.transAxes, va="top", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_metric_bars(table: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str | None = None,
                     ylabel: str | None = None) -> Figure:
    """Grouped bars: one group per value of ``x``, one bar per value of ``hue`` (a long DataFrame)."""
    groups = list(pd.unique(table[x]))
    hues = [None] if hue is None else list(pd.unique(table[hue]))
    fig = Figure(figsize=(max(4.5, 0.5 * len(groups) * len(hues) + 2.5), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(hues)
    for i, h in enumerate(hues):
        part = table if h is None else table[table[hue] == h]
        values = [part.loc[part[x] == g, y].mean() if (part[x] == g).any() else np.nan for g in groups]
        positions = np.arange(len(groups)) - 0.4 + width * (i + 0.5)
        bars = ax.bar(positions, values, width, label=None if h is None else str(h))
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), labels=[str(g) for g in groups])
    ax.set_ylabel(ylabel or y)
    ax.axhline(0, color="k", lw=0.6)
    ax.grid(True, axis="y")
    if hue is not None:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_coverage(compared: pd.DataFrame, title: str | None = None) -> Figure:
    """Per paper table, how many cells have a number of ours (``both``), only the paper's, only ours:
    the ``status`` column of :func:`percept.study.paper.compare` results concatenated over tables."""
    order = ["both", "paper only", "ours only"]
    counts = (compared.groupby(["table", "status"]).size().unstack("status", fill_value=0)
              .reindex(columns=order, fill_value=0))
    from .paper import table_sort_key
    counts = counts.loc[sorted(counts.index, key=table_sort_key)]
    fig = Figure(figsize=(max(5.0, 0.45 * len(counts) + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(counts))
    colours = {"both": "C2", "paper only": "C7", "ours only": "C1"}
    for status in order:
        ax.bar(range(len(counts)), counts[status], bottom=bottom, label=status, color=colours[status])
        bottom += counts[status].to_numpy()
    ax.set_xticks(range(len(counts)), labels=[f"T{t}" for t in counts.index], rotation=45, ha="right")
    ax.set_ylabel("cells")
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


def plot_parameter_counts(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Trainable vs total parameters per configuration (log scale): a
    :func:`percept.interface.notebooks.parameter_table` (columns backbone, strategy, head_type, trainable, total)."""
    labels = [f"{b}\n{s} + {h}" for b, s, h in zip(table["backbone"], table["strategy"], table["head_type"])]
    fig = Figure(figsize=(max(5.0, 1.1 * len(table) + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(len(table))
    for offset, column, colour in ((-0.2, "total", "C7"), (0.2, "trainable", "C0")):
        bars = ax.bar(positions + offset, table[column], 0.4, label=column, color=colour)
        ax.bar_label(bars, labels=[f"{v / 1e6:.2f}M" for v in table[column]], fontsize=7, padding=1)
    ax.set_yscale("log")
    ax.grid(True, axis="y")
    ax.set_xticks(positions, labels=labels, fontsize=8)
    ax.set_ylabel("parameters")
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


def plot_matrix(table: pd.DataFrame, title: str | None = None, label: str = "", fmt: str = "{:.3f}",
                cmap: str = "RdBu_r", center: float | None = 0.0) -> Figure:
    """Annotated heatmap of a numeric DataFrame (rows × columns), e.g. train × test SRCC (Table 2).
    ``center``: a diverging colour scale symmetric about this value (None: min-max)."""
    from matplotlib.colors import TwoSlopeNorm
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    norm = None
    if center is not None and finite.size:
        limit = max(float(np.abs(finite - center).max()), 1e-9)
        norm = TwoSlopeNorm(vcenter=center, vmin=center - limit, vmax=center + limit)
    fig = Figure(figsize=(1.6 * table.shape[1] + 2.5, 0.9 * table.shape[0] + 1.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(table.shape[1]), labels=[str(c) for c in table.columns], rotation=20, ha="right")
    ax.set_yticks(range(table.shape[0]), labels=[str(i) for i in table.index])
    ax.set_xlabel(table.columns.name or "")
    ax.set_ylabel(table.index.name or "")
    ax.grid(False)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            value = values[i, j]
            text = "—" if not np.isfinite(value) else fmt.format(value)
            level = float(image.norm(value)) if np.isfinite(value) else 0.5   # position on the colour scale
            dark = level < 0.2 or level > 0.8
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label=label)
    if title:
        ax.set_title(title)
    return fig
