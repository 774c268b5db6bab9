"""Evaluation metrics of PerceptCLIP (paper §4, Appendix A.1 and A.2.2).

Regression (IQA §4.1, memorability §4.2): SRCC, KRCC, PLCC (raw and after the 4-parameter logistic
correction of Appendix A.1), MSE, RMSE. Classification (emotion §4.3): accuracy, mAP, macro/weighted
F1 (Appendix A.2.2) and binary valence accuracy (ACC-2 of Table 4).

Every function accepts numpy arrays, lists or torch tensors and raises ``ValueError`` naming the
argument on bad input (NaN/inf, length mismatch, too few samples, labels out of range, bad shapes).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    mean_squared_error,
)

from .tasks import (  # noqa: F401
    EMOSET_CLASSES,
    EMOTIONROI_CLASSES,
    NEGATIVE_EMOTIONS,
    POSITIVE_EMOTIONS,
)


# ----------------------------------------------------------------------------- input validation
def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    return np.asarray(values)


def _as_float_vector(values: Any, name: str) -> np.ndarray:
    """Return ``values`` (shape ``(N,)`` or ``(N, 1)``) as a finite float64 vector."""
    array = _to_numpy(values).astype(np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or (N, 1)), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf values")
    return array


def _as_label_vector(values: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """Return integer class labels as an int64 vector, checked to lie in ``[0, num_classes)``."""
    array = _to_numpy(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} has negative labels (min {array.min()})")
    if array.size and num_classes is not None and array.max() >= num_classes:
        raise ValueError(f"{name} has labels outside the class range [0, {num_classes}): max {array.max()}")
    return array


def _as_probs(probs: Any, num_classes: int) -> np.ndarray:
    probs = _to_numpy(probs).astype(np.float64)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must have shape (N, {num_classes}), got {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contains NaN or inf values")
    return probs


def _check_lengths(first: np.ndarray, second: np.ndarray, names: str, min_samples: int) -> None:
    if len(first) != len(second):
        raise ValueError(f"{names} have different lengths: {len(first)} vs {len(second)}")
    if len(first) < min_samples:
        raise ValueError(f"{names} need at least {min_samples} samples, got {len(first)}")


def _regression_pair(pred: Any, target: Any, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _as_float_vector(pred, "pred"), _as_float_vector(target, "target")
    _check_lengths(pred, target, "pred and target", min_samples)
    return pred, target


def _label_pair(pred_labels: Any, labels: Any, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    pred_labels = _as_label_vector(pred_labels, "pred_labels", num_classes)
    labels = _as_label_vector(labels, "labels", num_classes)
    _check_lengths(pred_labels, labels, "pred_labels and labels", 1)
    return pred_labels, labels


# ----------------------------------------------------------------------------- regression
def srcc(pred: Any, target: Any) -> float:
    """Spearman rank correlation (paper §4.1, §4.2). NaN (scipy's warning) if an input is constant."""
    return float(stats.spearmanr(*_regression_pair(pred, target)).statistic)


def krcc(pred: Any, target: Any) -> float:
    """Kendall rank correlation (tau-b). NaN (scipy's warning) if an input is constant."""
    return float(stats.kendalltau(*_regression_pair(pred, target)).statistic)


def plcc(pred: Any, target: Any) -> float:
    """Raw Pearson linear correlation, without the logistic correction. NaN if an input is constant."""
    return float(stats.pearsonr(*_regression_pair(pred, target)).statistic)


def logistic_4p(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """4-parameter logistic ``y' = b2 + (b1 − b2) / (1 + exp(−(x − b3) / |b4|))``.

    Paper Appendix A.1 eq. (1), following LoDa (Xu et al. 2024a) and VQEG (Antkowiak et al. 2000);
    ``|b4|`` as in LoDa. Evaluated with ``scipy.special.expit`` so large arguments do not overflow.
    """
    return b2 + (b1 - b2) * expit((np.asarray(x, dtype=np.float64) - b3) / abs(b4))


def fit_logistic_4p(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fit :func:`logistic_4p` mapping ``pred`` onto ``target``; return ``(params, fitted_pred)``.

    Paper Appendix A.1: the fitted curve corrects the predictions before PLCC is computed. Initial
    values are ``b1 = max(target)``, ``b2 = min(target)``, ``b3 = mean(pred)``, ``b4 = std(pred)``,
    with ``maxfev = 100000``. LoDa starts from ``b4 = 0.5``, which only works when predictions are
    on a unit-like scale; ``std(pred)`` makes the fit invariant to the scale and offset of ``pred``.

    Fallback: if the fit cannot run or converge (``curve_fit`` error, non-finite result, constant
    predictions, fewer than 4 samples), a ``warnings.warn`` is emitted, ``params`` is all-NaN and
    ``fitted_pred`` is ``pred`` unchanged (identity-linear mapping), so PLCC falls back to raw PLCC.
    """
    pred, target = _regression_pair(pred, target)
    initial = [target.max(), target.min(), pred.mean(), pred.std()]
    reason = None
    if len(pred) < 4:
        reason = f"fewer samples ({len(pred)}) than the 4 parameters"
    elif initial[3] == 0:
        reason = "pred is constant"
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)  # covariance not estimable: harmless
                warnings.simplefilter("ignore", RuntimeWarning)  # |b4| -> 0 during the search
                params, _ = curve_fit(logistic_4p, pred, target, p0=initial, maxfev=100000)
            fitted_pred = logistic_4p(pred, *params)
            if np.all(np.isfinite(params)) and np.all(np.isfinite(fitted_pred)):
                return params, fitted_pred
            reason = "the fit returned non-finite values"
        except RuntimeError as error:
            reason = f"curve_fit did not converge ({error})"
    warnings.warn(f"4-parameter logistic fit failed: {reason}; using the identity mapping "
                  "(PLCC falls back to raw PLCC)", RuntimeWarning, stacklevel=2)
    return np.full(4, np.nan), pred


def plcc_logistic(pred: Any, target: Any) -> float:
    """PLCC after the 4-parameter logistic correction: the IQA "PLCC" of Table 1 (Appendix A.1)."""
    pred, target = _regression_pair(pred, target)
    _, fitted_pred = fit_logistic_4p(pred, target)
    return plcc(fitted_pred, target)


def mse(pred: Any, target: Any) -> float:
    """Mean squared error (memorability, paper §4.2 and Table A.2)."""
    pred, target = _regression_pair(pred, target, min_samples=1)
    return float(mean_squared_error(target, pred))


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(pred, target)))


def regression_metrics(pred: Any, target: Any) -> dict[str, float]:
    """All regression metrics: srcc, krcc, plcc, plcc_logistic, mse, rmse."""
    pred, target = _regression_pair(pred, target)
    return {"srcc": srcc(pred, target), "krcc": krcc(pred, target), "plcc": plcc(pred, target),
            "plcc_logistic": plcc_logistic(pred, target), "mse": mse(pred, target), "rmse": rmse(pred, target)}


# ----------------------------------------------------------------------------- classification
def accuracy(pred_labels: Any, labels: Any) -> float:
    """Fraction of correctly predicted class labels (paper §4.3, Table 4)."""
    pred_labels, labels = _label_pair(pred_labels, labels)
    return float(accuracy_score(labels, pred_labels))


def mean_average_precision(probs: Any, labels: Any, num_classes: int) -> float:
    """Macro one-vs-rest average precision (mAP, Appendix A.2.2).

    ``probs`` has shape ``(N, num_classes)`` (class scores, e.g. softmax probabilities). This is
    sklearn's ``average_precision_score(one_hot(labels), probs, average="macro")``; a class with no
    sample in ``labels`` gets AP 0 (with sklearn's warning) and still counts in the mean.
    """
    probs = _as_probs(probs, num_classes)
    labels = _as_label_vector(labels, "labels", num_classes)
    _check_lengths(probs, labels, "probs and labels", 1)
    one_hot = np.eye(num_classes, dtype=np.int64)[labels]
    return float(average_precision_score(one_hot, probs, average="macro"))


def macro_f1(pred_labels: Any, labels: Any) -> float:
    """Unweighted mean of per-class F1 over the classes present (Appendix A.2.2, m-F1)."""
    pred_labels, labels = _label_pair(pred_labels, labels)
    return float(f1_score(labels, pred_labels, average="macro", zero_division=0))


def weighted_f1(pred_labels: Any, labels: Any) -> float:
    """Per-class F1 averaged with weights equal to class support (Appendix A.2.2, w-F1)."""
    pred_labels, labels = _label_pair(pred_labels, labels)
    return float(f1_score(labels, pred_labels, average="weighted", zero_division=0))


# ----------------------------------------------------------------------------- valence (ACC-2)
def valence_of(class_names: Sequence[str]) -> np.ndarray:
    """Valence of each emotion class name: 1 positive, 0 negative (paper §4.3; case-insensitive)."""
    if isinstance(class_names, str):
        raise ValueError(f"class_names must be a sequence of names, got the single string {class_names!r}")
    names = [str(name).strip().lower() for name in class_names]
    unknown = [name for name in names if name not in POSITIVE_EMOTIONS | NEGATIVE_EMOTIONS]
    if unknown:
        raise ValueError(f"class_names has unknown emotions {unknown}; known: "
                         f"{sorted(POSITIVE_EMOTIONS | NEGATIVE_EMOTIONS)}")
    return np.array([int(name in POSITIVE_EMOTIONS) for name in names], dtype=np.int64)


def binary_valence_accuracy(pred_labels: Any, labels: Any, class_names: Sequence[str]) -> float:
    """ACC-2 of Table 4: map predicted and true multi-class labels to valence, then take accuracy."""
    valence = valence_of(class_names)
    pred_labels, labels = _label_pair(pred_labels, labels, len(valence))
    return accuracy(valence[pred_labels], valence[labels])


def classification_metrics(probs: Any, labels: Any, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """accuracy, mAP, macro_f1, weighted_f1 (and acc_2 if ``class_names`` given) from ``(N, C)`` scores.

    The predicted label is ``argmax`` over classes.
    """
    probs = _to_numpy(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {probs.shape}")
    num_classes = probs.shape[1] if class_names is None else len(class_names)
    probs = _as_probs(probs, num_classes)
    labels = _as_label_vector(labels, "labels", num_classes)
    _check_lengths(probs, labels, "probs and labels", 1)
    pred_labels = probs.argmax(axis=1)
    results = {"accuracy": accuracy(pred_labels, labels),
               "mAP": mean_average_precision(probs, labels, num_classes),
               "macro_f1": macro_f1(pred_labels, labels), "weighted_f1": weighted_f1(pred_labels, labels)}
    if class_names is not None:
        results["acc_2"] = binary_valence_accuracy(pred_labels, labels, class_names)
    return results
