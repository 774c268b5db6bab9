"""Error analysis and figures from a run's saved predictions (paper §6 and Appendix A.4).

Everything here reads a run directory (``predictions.csv`` + ``config.json``, written by the training
engine); no model is needed:

* emotion: confusion matrix, rows = ground truth (Figure A.3), and the most frequent cross-valence
  confusions with example ids (sadness→contentment, anger→excitement: Figures A.4, A.5);
* memorability: ground-truth vs predicted histograms (Figure A.6; predictions concentrate around the
  mean) and the largest errors at the low and high ends of the score range (Figure A.7);
* IQA: z-score both predicted and ground-truth scores, rank by the |difference| (Figure A.8).

Plotting functions return a :class:`matplotlib.figure.Figure` built without pyplot (no global state,
safe under the Agg backend); save it with ``fig.savefig(path)``.

``predictions.csv`` columns: ``id`` (image path relative to the data root), ``label``, ``prediction``
(regression: score, crop-averaged; classification: argmax class index), optional ``crop_std``, and for
classification ``prob_<class name>`` per class in class order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from ..core.images import CLIP_MEAN, CLIP_STD, load_rgb
from ..core.metrics import valence_of
from ..engine.runs import RunDir
from ..model.backbones import normalization
from .interpret import importance_matrix

REQUIRED_COLUMNS = ("id", "label", "prediction")


# ----------------------------------------------------------------------------- loading
def load_predictions(run_dir: str | os.PathLike, dataset: str | None = None) -> pd.DataFrame:
    """Read ``run_dir/predictions.csv`` (``dataset``: a multi-dataset run's ``predictions_<dataset>.csv``;
    ``run_dir`` may also be the CSV file itself). ``df.attrs["config"]`` holds the ``config.json``
    beside it (``{}`` if absent).

    Raises ``FileNotFoundError`` naming the missing path and ``ValueError`` naming missing columns
    (``id``, ``label``, ``prediction``; ``prob_<class>`` for every class when the config has a
    top-level ``class_names``).
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run, path = RunDir(run_dir.parent), run_dir
    else:
        run = RunDir(run_dir)
        path = run.predictions_file(dataset)
    if not run.path.is_dir():
        raise FileNotFoundError(f"run directory {str(run.path)!r} does not exist")
    if not path.is_file():
        others = [p.name for p in run.prediction_files()]
        hint = f" (this directory has {others}: pass dataset=...)" if others else " (evaluate the run first)"
        raise FileNotFoundError(f"no predictions file {str(path)!r}{hint}")
    config = run.read_config() if run.config_file.is_file() else {}
    pred = pd.read_csv(path, dtype={"id": str})
    expected = list(REQUIRED_COLUMNS) + [f"prob_{name}" for name in (config.get("class_names") or [])]
    missing = [column for column in expected if column not in pred.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing} (has {list(pred.columns)})")
    if pred[["label", "prediction"]].isna().any().any():
        raise ValueError(f"{path} has empty label/prediction values")
    pred.attrs["config"] = config
    return pred


def class_names_of(pred: pd.DataFrame, class_names: Sequence[str] | None = None) -> list[str]:
    """``class_names`` if given, else the run config's, else the ``prob_<name>`` columns in order."""
    if class_names is not None:
        return list(class_names)
    names = pred.attrs.get("config", {}).get("class_names")
    if names:
        return list(names)
    names = [c[len("prob_"):] for c in pred.columns if c.startswith("prob_")]
    if not names:
        raise ValueError("class names unknown: pass class_names= (no config class_names, no prob_<class> columns)")
    return names


def _labels(pred: pd.DataFrame, column: str, num_classes: int) -> np.ndarray:
    values = pred[column].to_numpy()
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError(f"column {column!r} must hold integer class indices")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"column {column!r} has class indices outside [0, {num_classes})")
    return values


# ----------------------------------------------------------------------------- emotion (A.3-A.5)
def confusion_matrix_table(pred: pd.DataFrame, class_names: Sequence[str] | None = None,
                           normalize: str | None = None) -> pd.DataFrame:
    """Confusion matrix as a DataFrame: rows = ground truth, columns = predicted (Figure A.3).

    ``normalize``: ``None`` (counts), ``"true"`` (each row sums to 1), ``"pred"`` or ``"all"`` (sklearn).
    """
    names = class_names_of(pred, class_names)
    labels = _labels(pred, "label", len(names))
    predicted = _labels(pred, "prediction", len(names))
    matrix = confusion_matrix(labels, predicted, labels=np.arange(len(names)), normalize=normalize)
    return pd.DataFrame(matrix, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


def cross_valence_confusions(pred: pd.DataFrame, class_names: Sequence[str] | None = None,
                             positive: Sequence[str] | None = None, n_examples: int = 5) -> pd.DataFrame:
    """Confusions between a positive and a negative emotion, most frequent first (Figures A.4, A.5).

    ``positive``: the positive class names (default: :data:`percept.core.metrics.POSITIVE_EMOTIONS`). Columns
    ``true, predicted, count, rate`` (count / images of the true class) and ``examples``: up to
    ``n_examples`` ids, the most confident wrong predictions first when ``prob_<class>`` columns exist.
    """
    names = class_names_of(pred, class_names)
    if positive is None:
        valence = valence_of(names)
    else:
        unknown = set(positive) - set(names)
        if unknown:
            raise ValueError(f"positive has names {sorted(unknown)} not among the classes {names}")
        valence = np.array([int(name in set(positive)) for name in names])
    labels = _labels(pred, "label", len(names))
    predicted = _labels(pred, "prediction", len(names))
    crossed = valence[labels] != valence[predicted]
    rows = []
    for (t, p), group in pred[crossed].groupby([labels[crossed], predicted[crossed]]):
        prob_column = f"prob_{names[p]}"
        if prob_column in group.columns:
            group = group.sort_values(prob_column, ascending=False, kind="mergesort")
        rows.append({"true": names[t], "predicted": names[p], "count": len(group),
                     "rate": len(group) / int((labels == t).sum()),
                     "examples": list(group["id"].head(n_examples))})
    table = pd.DataFrame(rows, columns=["true", "predicted", "count", "rate", "examples"])
    return table.sort_values(["count", "true", "predicted"], ascending=[False, True, True],
                             kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------- regression (A.6-A.8)
def zscore_differences(pred: pd.DataFrame) -> pd.DataFrame:
    """IQA high-error ranking (Figure A.8): z-score predicted and ground-truth scores (population std),
    ``z_difference = prediction_z - label_z``, rows sorted by ``|z_difference|`` descending."""
    out = pred.copy()
    for column in ("label", "prediction"):
        values = out[column].to_numpy(dtype=np.float64)
        std = values.std()
        if len(values) < 2 or std == 0:
            raise ValueError(f"cannot z-score column {column!r}: needs >= 2 distinct values")
        out[f"{column}_z"] = (values - values.mean()) / std
    out["z_difference"] = out["prediction_z"] - out["label_z"]
    out["abs_z_difference"] = out["z_difference"].abs()
    return out.sort_values("abs_z_difference", ascending=False, kind="mergesort").reset_index(drop=True)


def largest_errors(pred: pd.DataFrame, n: int = 8, end: str = "high", fraction: float = 0.5) -> pd.DataFrame:
    """Largest errors at one end of the ground-truth range (memorability, Figure A.7).

    Among the ``fraction`` of images with the lowest (``end="low"``) or highest (``end="high"``) ground
    truth, the ``n`` with the largest ``|prediction - label|``. Adds ``error`` (prediction - label) and
    ``abs_error``. With predictions concentrated at the mean (Figure A.6), low-end errors are
    over-estimates and high-end errors under-estimates.
    """
    if end not in ("low", "high"):
        raise ValueError(f"end must be 'low' or 'high', got {end!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = pred.copy()
    out["error"] = out["prediction"] - out["label"]
    out["abs_error"] = out["error"].abs()
    keep = max(1, int(round(fraction * len(out))))
    ranked = out.sort_values("label", ascending=(end == "low"), kind="mergesort").head(keep)
    return ranked.sort_values("abs_error", ascending=False, kind="mergesort").head(n).reset_index(drop=True)


def histogram_data(pred: pd.DataFrame, bins: int | Sequence[float] = 30) -> dict:
    """Histograms of ground truth and predictions on shared bin ``edges`` (Figure A.6), with each one's
    ``mean`` and ``std`` (a smaller predicted std = predictions concentrated around the mean)."""
    label = pred["label"].to_numpy(dtype=np.float64)
    prediction = pred["prediction"].to_numpy(dtype=np.float64)
    edges = np.histogram_bin_edges(np.concatenate([label, prediction]), bins=bins)
    return {"edges": edges,
            "label_counts": np.histogram(label, bins=edges)[0],
            "prediction_counts": np.histogram(prediction, bins=edges)[0],
            "label_mean": float(label.mean()), "label_std": float(label.std()),
            "prediction_mean": float(prediction.mean()), "prediction_std": float(prediction.std())}


def score_titles(rows: pd.DataFrame, class_names: Sequence[str] | None = None, digits: int = 2) -> list[str]:
    """``"T: x / P: y"`` gallery captions (Figures A.4, A.5, A.7, A.8); class names when given."""
    def fmt(value):
        return class_names[int(value)] if class_names is not None else f"{value:.{digits}f}"
    return [f"T: {fmt(t)} / P: {fmt(p)}" for t, p in zip(rows["label"], rows["prediction"])]


def gallery_images(ids: Sequence[str], data_root: str | os.PathLike) -> list:
    """Load images by their ``id`` (path relative to ``data_root``, e.g. ``config["data_root"]``)."""
    return [load_rgb(Path(data_root) / image_id) for image_id in ids]


# ----------------------------------------------------------------------------- plots
def _statistics(denormalize) -> tuple | None:
    """``denormalize`` → the ``(mean, std)`` a tensor was normalised with, or None (leave it as it is):
    ``True`` = CLIP's, a backbone name (``"dinov2_vit_l14"``, a run's ``config["model"]["backbone"]``) =
    that backbone's (:func:`percept.model.backbones.normalization`), a ``(mean, std)`` pair = those, ``False`` = none."""
    if denormalize is True:
        return CLIP_MEAN, CLIP_STD
    if denormalize is False or denormalize is None:
        return None
    if isinstance(denormalize, str):
        return normalization(denormalize)
    mean, std = denormalize
    return tuple(mean), tuple(std)


def _image_array(image, denormalize=True) -> np.ndarray:
    """(H, W, 3) floats in [0, 1] from a PIL image, an HWC array or a (3, H, W) tensor/array (normalised
    tensors are de-normalised with the statistics ``denormalize`` names, see :func:`_statistics`: use the
    run's backbone, whose statistics normalised them)."""
    if hasattr(image, "detach"):
        array = image.detach().float().cpu().numpy()
        if array.ndim == 3 and array.shape[0] == 3:
            array = array.transpose(1, 2, 0)
            statistics = _statistics(denormalize)
            if statistics is not None:
                array = array * np.array(statistics[1]) + np.array(statistics[0])
    else:
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.transpose(1, 2, 0)
        if array.dtype == np.uint8:
            array = array / 255.0
    return np.clip(np.asarray(array, dtype=np.float64), 0, 1)


def plot_head_importance(matrix, layer_labels: Sequence | None = None, title: str | None = None,
                         cmap: str = "viridis") -> Figure:
    """Heatmap of head importance, layers (rows) × heads (columns) (paper §6). ``matrix``: an array
    from :func:`percept.study.interpret.importance_matrix` or a :func:`~percept.study.interpret.head_importance` table."""
    if isinstance(matrix, pd.DataFrame):
        layer_labels = sorted(matrix["layer"].unique()) if layer_labels is None else layer_labels
        matrix = importance_matrix(matrix)
    matrix = np.asarray(matrix, dtype=np.float64)
    layers, heads = matrix.shape
    fig = Figure(figsize=(max(4.0, 0.35 * heads + 2), max(3.0, 0.25 * layers + 1.5)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_yticks(range(layers), labels=list(layer_labels) if layer_labels is not None else range(layers))
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label="importance")
    return fig


def plot_attention_overlay(image, maps: dict, index: int = 0, alpha: float = 0.55,
                           denormalize=True, title: str | None = None) -> Figure:
    """Image, fine-tuned and original CLS attention overlays, and their difference (Figures 4, A.1, A.2).

    ``maps``: :func:`percept.study.interpret.cls_attention_maps` output (``index`` picks the image of a
    batch). One row of :func:`plot_attention_gallery`.
    """
    def pick(name):
        array = np.asarray(maps[name], dtype=np.float64)
        return array[index] if array.ndim == 3 else array
    if title is None and "layer" in maps:
        head = maps.get("head")
        title = f"layer {maps['layer']}, " + ("mean over heads" if head is None else f"head {head}")
    row = {name: pick(name) for name in ("finetuned", "original", "difference")}
    return plot_attention_gallery([image], [row], alpha=alpha, denormalize=denormalize, title=title)


def plot_attention_gallery(images: Sequence, rows: Sequence[dict], labels: Sequence[str] | None = None,
                           alpha: float = 0.55, denormalize=True, title: str | None = None,
                           original_label: str = "original CLIP") -> Figure:
    """Rows of (image, fine-tuned, original CLS attention, fine-tuned − original) — the attention gallery of
    Figures 4, A.1, A.2.

    ``rows``: :func:`percept.study.interpret.top_head_attention` output (``image_index`` picks from ``images``;
    without it row ``i`` shows ``images[i]``); ``labels``: a caption per image (e.g. its id and label).
    Per row, fine-tuned and original share one colour scale; the difference uses a diverging colormap centred
    at zero with symmetric limits ``±max|difference|`` (never min-max scaled: that would hide the sign).
    ``denormalize``: how tensors were normalised — ``True`` (CLIP), the run's backbone name (e.g.
    ``config["model"]["backbone"]``: ImageNet statistics for DINOv2/MAE), a ``(mean, std)`` pair, or ``False``.
    ``original_label``: the middle column's title (the encoder before fine-tuning).
    """
    if not rows:
        raise ValueError("no rows to plot")
    fig = Figure(figsize=(13, 3.4 * len(rows) + (0.4 if title else 0)), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), 4, squeeze=False))
    for r, (row, ax) in enumerate(zip(rows, axes)):
        i = int(row.get("image_index", r))
        picture = _image_array(images[i], denormalize)
        height, width = picture.shape[:2]
        extent = (0, width, height, 0)
        tuned, original, difference = (np.asarray(row[n], dtype=np.float64)
                                       for n in ("finetuned", "original", "difference"))
        top = max(float(tuned.max()), float(original.max()), 1e-12)
        limit = max(float(np.abs(difference).max()), 1e-12)
        ax[0].imshow(picture)
        where = f"layer {row['layer']}, head {row['head']}: " if "layer" in row else ""
        effect = f"\nablation changes the prediction by {row['effect']:.3g}" if "effect" in row else ""
        text = f"{where}{labels[i] if labels is not None else ''}".rstrip(": ") + effect
        ax[0].set_title(text or "image", fontsize=9)
        for a, array, name in ((ax[1], tuned, "fine-tuned"), (ax[2], original, original_label)):
            a.imshow(picture)
            a.imshow(array, extent=extent, cmap="inferno", vmin=0, vmax=top, alpha=alpha, interpolation="bilinear")
            a.set_title(name)
        ax[3].imshow(picture)
        diff = ax[3].imshow(difference, extent=extent, cmap="RdBu_r", alpha=alpha, interpolation="bilinear",
                            norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit))
        ax[3].set_title("fine-tuned − original")
        fig.colorbar(diff, ax=ax[3], shrink=0.8)
        for a in ax:
            a.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion_matrix(table, class_names: Sequence[str] | None = None, normalize_rows: bool = True,
                          cmap: str = "Blues") -> Figure:
    """Annotated confusion matrix, rows = ground truth (Figure A.3). ``table``: a
    :func:`confusion_matrix_table` DataFrame (counts) or a square array with ``class_names``."""
    if isinstance(table, pd.DataFrame):
        class_names = list(table.index) if class_names is None else class_names
        table = table.to_numpy()
    matrix = np.asarray(table, dtype=np.float64)
    if class_names is None:
        class_names = [str(i) for i in range(len(matrix))]
    if normalize_rows:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    size = len(class_names)
    fig = Figure(figsize=(1.0 * size + 2, 0.9 * size + 1.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=1 if normalize_rows else None)
    ax.set_xticks(range(size), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(size), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(size):
        for j in range(size):
            text = f"{matrix[i, j]:.2f}" if normalize_rows else f"{int(matrix[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax)
    return fig


def plot_score_histograms(data, bins: int | Sequence[float] = 30, label: str = "score") -> Figure:
    """Ground-truth vs predicted score histograms on shared bins (Figure A.6). ``data``: a predictions
    DataFrame or a :func:`histogram_data` dict."""
    if isinstance(data, pd.DataFrame):
        data = histogram_data(data, bins)
    edges = data["edges"]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(data["label_counts"], edges, fill=True, alpha=0.5, label=f"ground truth (std {data['label_std']:.3f})")
    ax.stairs(data["prediction_counts"], edges, fill=True, alpha=0.5,
              label=f"predicted (std {data['prediction_std']:.3f})")
    ax.set_xlabel(label)
    ax.set_ylabel("images")
    ax.legend()
    return fig


def plot_gallery(images: Sequence, titles: Sequence[str], ncols: int = 4, denormalize=True,
                 suptitle: str | None = None) -> Figure:
    """Grid of images with captions such as ``"T: 0.71 / P: 0.65"`` (:func:`score_titles`;
    Figures A.4, A.5, A.7, A.8). One axes per image. ``denormalize`` (for normalised tensors): ``True``
    (CLIP), a backbone name, a ``(mean, std)`` pair or ``False`` (see :func:`plot_attention_gallery`)."""
    if len(images) != len(titles):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    if not len(images):
        raise ValueError("no images to plot")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(3 * ncols, 3.2 * nrows), layout="constrained")
    for i, (image, caption) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(_image_array(image, denormalize))
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle)
    return fig
