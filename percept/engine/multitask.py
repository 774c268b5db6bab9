"""One adapter for several tasks (beyond the paper): quality, memorability and emotion datasets in one
run, a shared LoRA encoder and one head per dataset with its own task's loss.

The paper trains multi-dataset models within one task (§3.2, §5.4), where a batch's loss is the plain mean of the
datasets' losses. Across tasks the losses live on different scales (PLCC loss ½(1 − ρ) in [0, 1], MSE of
memorability scores ~0.01, cross-entropy ~ln C ≈ 2), so a plain mean would let emotion dominate and memorability
vanish. Two rules, ours (the paper is silent), both reducing to the paper's when every dataset has the same task:

* **Loss normalisation** (:func:`loss_scales`): each dataset's loss is divided by the loss of the best
  *constant* prediction on its training labels — ½ for PLCC (correlation 0), the labels' variance for MSE, the
  entropy of the class frequencies for cross-entropy. A normalised loss is 1 for a model that ignores the image
  and 0 for a perfect one, whatever the task. The batch loss is then the mean over the datasets present,
  weighted by ``task_weights`` (per task name; default equal). With one task the scales are all 1 and the
  weights equal: the paper's mean, unchanged.
* **Model selection** (:func:`selection_value`): the epoch (and, in ``percept results``, the learning rate)
  with the highest mean over datasets of each one's own selection metric, chance-corrected so that 0 is chance
  and 1 perfect on every task: SRCC as it is (chance 0); accuracy as ``(acc − 1/C) / (1 − 1/C)`` (chance 1/C for
  C classes). Relative to each dataset's single-task run would need those runs first; rank-based selection
  discards how far apart epochs are. With one task, the plain mean of its metric (as before).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..core.tasks import get_task

MIXED_METRIC = "chance_corrected_mean"   # the selection value's name in logs and metrics.json of a mixed-task run


def is_mixed(sources) -> bool:
    """True when the datasets of a run belong to more than one task."""
    return len({s.task for s in sources}) > 1


def constant_prediction_loss(task: str, labels) -> float:
    """The task loss of the best prediction that ignores the image, on ``labels`` (a dataset's training labels)."""
    labels = np.asarray(labels, dtype=float)
    loss = get_task(task).loss
    if loss == "plcc":
        return 0.5                                          # ½ (1 − ρ) at correlation 0
    if loss == "mse":
        return float(labels.var())                          # predicting the mean
    if loss == "cross_entropy":
        freq = np.bincount(labels.astype(int)) / len(labels)
        freq = freq[freq > 0]
        return float(-(freq * np.log(freq)).sum())          # predicting the class frequencies
    raise ValueError(f"no constant-prediction loss for task {task!r} (loss {loss!r})")


def loss_scales(sources, train_labels: Mapping[str, np.ndarray]) -> list[float]:
    """Per dataset, what its loss is divided by: 1 for a single-task run (the paper's plain mean), else the
    constant-prediction loss of its training labels (:func:`constant_prediction_loss`)."""
    if not is_mixed(sources):
        return [1.0] * len(sources)
    scales = []
    for s in sources:
        value = constant_prediction_loss(s.task, train_labels[s.name])
        if not value > 0:
            raise ValueError(f"{s.name}: its training labels are constant, so no loss scale can be set; "
                             f"check its label column")
        scales.append(value)
    return scales


def loss_weights(sources, task_weights: Mapping[str, float] | None) -> list[float]:
    """Per dataset, its task's weight (``task_weights`` by task name; default 1)."""
    task_weights = dict(task_weights or {})
    unknown = set(task_weights) - {s.task for s in sources}
    if unknown:
        raise ValueError(f"task_weights names {sorted(unknown)}, which no dataset of this run has (its tasks: "
                         f"{sorted({s.task for s in sources})})")
    if any(not (float(w) > 0 and math.isfinite(float(w))) for w in task_weights.values()):
        raise ValueError(f"task_weights must be positive numbers; got {task_weights}")
    return [float(task_weights.get(s.task, 1.0)) for s in sources]


def chance_corrected(value: float, metric: str, classes: int | None) -> float:
    """``metric``'s value with chance at 0 and perfect at 1 (SRCC/PLCC as they are; accuracy over C classes
    ``(acc − 1/C) / (1 − 1/C)``)."""
    if metric == "accuracy":
        chance = 1.0 / classes
        return (value - chance) / (1.0 - chance)
    if metric in ("srcc", "plcc", "plcc_logistic", "krcc"):
        return value
    raise ValueError(f"no chance correction for metric {metric!r}; a mixed-task run selects on srcc / accuracy")


def selection_metrics(sources, select_metric: str | None) -> dict[str, str]:
    """The validation metric of each dataset: ``select_metric`` for a single-task run (default the task's), each
    dataset's own task's for a mixed-task run (where one metric cannot fit every dataset)."""
    if is_mixed(sources):
        if select_metric is not None:
            raise ValueError(f"select_metric={select_metric!r} cannot apply to datasets of different tasks "
                             f"({', '.join(f'{s.name}: {s.task}' for s in sources)}); leave it unset")
        return {s.name: get_task(s.task).select_metric for s in sources}
    metric = select_metric or get_task(sources[0].task).select_metric
    return {s.name: metric for s in sources}


def selection_value(val: Mapping[str, Mapping[str, float]], sources, metrics: Mapping[str, str]) -> float:
    """The one number that picks the epoch: the plain mean of the metric (single task), or the mean of the
    chance-corrected metrics (mixed tasks)."""
    if not is_mixed(sources):
        return float(np.mean([val[s.name][metrics[s.name]] for s in sources]))
    return float(np.mean([chance_corrected(val[s.name][metrics[s.name]], metrics[s.name], s.num_outputs)
                          for s in sources]))
