"""Training losses of PerceptCLIP, one per task (paper §4.1 – §4.3).

* image quality (IQA, §4.1): the PLCC-induced loss ``L = ½ (1 − PLCC(ŷ, y))``;
* image memorability (§4.2): mean squared error;
* visual emotion analysis (§4.3): cross-entropy over the emotion classes.

:func:`batch_loss` is the loss of one training batch of one or several datasets (§3.2: each dataset's rows go
through its own head and its task's loss).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.tasks import get_task
from .runtime import autocast

PLCC_EPSILON = 1e-8


def _as_batch_vector(values: Tensor, name: str) -> Tensor:
    """Return ``values`` of shape ``(B,)`` or ``(B, 1)`` as a float32 vector of shape ``(B,)``."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.reshape(-1)
    if values.ndim != 1:
        raise ValueError(f"{name} must have shape (B,) or (B, 1), got {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError(f"{name} is empty; a loss needs at least one sample")
    return values.float()


def _as_matching_vectors(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    pred, target = _as_batch_vector(pred, "pred"), _as_batch_vector(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target lengths differ: {pred.shape[0]} vs {target.shape[0]}")
    return pred, target.to(pred.device)


def plcc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """PLCC-induced loss ``½ (1 − PLCC(ŷ, y))`` over the batch (paper §4.1, IQA).

    ``pred`` and ``target`` have shape ``(B,)`` or ``(B, 1)``; the loss is computed in float32.

    NaN guard: the correlation is ``cov / sqrt((var_p + ε)(var_y + ε))`` with ``ε = 1e-8`` and
    population (biased) variances. The ε keeps both the value and the gradient finite for a batch of
    one sample and for zero variance in either argument, where the plain formula gives 0/0: such a
    batch has correlation 0 and loss 0.5. For constant predictions with varying targets the gradient
    is still non-zero (it points along ``y − mean(y)``) but large, ``∝ 1 / sqrt(ε)``, as PLCC is scale
    invariant. For ordinary batches (variances ≫ ε) the ε changes the loss by a negligible
    ``≈ ε / var`` relative amount.
    """
    pred, target = _as_matching_vectors(pred, target)
    pred_centered = pred - pred.mean()
    target_centered = target - target.mean()
    covariance = (pred_centered * target_centered).mean()
    pred_variance = pred_centered.square().mean()
    target_variance = target_centered.square().mean()
    correlation = covariance / torch.sqrt((pred_variance + PLCC_EPSILON) * (target_variance + PLCC_EPSILON))
    return 0.5 * (1.0 - correlation)


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error for memorability regression (paper §4.2); ``(B, 1)`` is flattened to ``(B,)``."""
    pred, target = _as_matching_vectors(pred, target)
    return F.mse_loss(pred, target)


def cross_entropy_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy for emotion classification (paper §4.3).

    ``logits`` has shape ``(B, C)``; ``target`` holds integer class indices in ``[0, C)``, shape ``(B,)``.
    The range of ``target`` is checked here only when it lives on the CPU: on a GPU the check would stop the
    host for every batch; there the training engine has checked every label when it opened the
    dataset (:func:`percept.data.sources.check_trainable`), and PyTorch still fails loudly (device-side
    assert) on an index out of range.
    """
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must have shape (B, C) with B >= 1, got {tuple(logits.shape)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.device.type == "cpu" and (target.min() < 0 or target.max() >= logits.shape[1]):
        raise ValueError(f"target labels must lie in [0, {logits.shape[1]}), got range "
                         f"[{int(target.min())}, {int(target.max())}]")
    return F.cross_entropy(logits.float(), target.long().to(logits.device))


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "plcc": plcc_loss,
    "mse": mse_loss,
    "cross_entropy": cross_entropy_loss,
}


def get_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Return the loss function registered under ``name`` in :data:`LOSSES`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names are {sorted(LOSSES)}")
    return LOSSES[name]


def batch_loss(model, sources, embedding: Tensor, y: Tensor, which: Tensor, losses=None, *, device, precision: str,
               weights=None, scales=None) -> Tensor | None:
    """The loss of one batch: each dataset ``d`` present (``which == d``, at least two rows for PLCC, whose value
    on one sample is undefined) through its head, its task's loss (``losses[d]``, default :func:`get_loss` of its
    task) divided by ``scales[d]`` and weighted by
    ``weights[d]`` (:mod:`percept.engine.multitask`), summed and divided by the present weights; None when no
    dataset is present."""
    weights = list(weights or [1.0] * len(sources))
    scales = list(scales or [1.0] * len(sources))
    terms, present = [], []
    for d, source in enumerate(sources):
        task = get_task(source.task)
        rows = torch.nonzero(which == d).flatten()
        if len(rows) < (2 if task.loss == "plcc" else 1):
            continue   # that dataset sits this batch out
        rows = rows.to(device, non_blocking=True)
        with autocast(device, precision):
            out = model.heads[source.name](embedding[rows]).float()
        target = y[rows] if source.kind == "regression" else y[rows].long()
        loss = losses[d] if losses is not None else get_loss(task.loss)
        terms.append(loss(out, target) * (weights[d] / scales[d]))
        present.append(weights[d])
    return torch.stack(terms).sum() / sum(present) if terms else None
