"""The three perceptual tasks of the paper, as data: one registry that every other module reads.

=============  ==============  ==============  ==================  ===========  ==========================
task           kind            loss            validation score    over splits  paper
=============  ==============  ==============  ==================  ===========  ==========================
``iqa``        regression      PLCC (LoDa)     SRCC                median       §4.1, Table 1 ("median")
``memorability`` regression    MSE             SRCC                mean         §4.2, Table 3 ("mean")
``emotion``    classification  cross-entropy   accuracy            mean         §4.3, Table 4 ("mean")
=============  ==============  ==============  ==================  ===========  ==========================

* loss: §4.1 "we use the PLCC loss", §4.2 "MSE", §4.3 "cross-entropy";
* validation score: §3.1 "the final model is selected based on the highest validation score" — SRCC for
  the regression tasks (the paper's headline metric), accuracy for classification;
* statistic over splits: Table 1 "median SRCC and PLCC across 10 splits" (as LoDa); Table 3 "mean SRCC
  ... across 5 folds", Table A.2 "average ... across 25 splits"; Table 4 EmotionROI "mean over five splits".
  Tables that do not say repeat Tables 1, 3 and 4 in their single-dataset rows, so they use the same.

* transforms (App. A.1), by the name of the plan that :mod:`percept.data.preprocessing` implements:
  IQA trains on LoDa's random crops with horizontal and vertical flips (``loda_crop_flips``) and tests on 15
  crops (``loda_test_crops``); memorability trains and tests on shorter side 224 + centre crop
  (``resize_center_crop``); emotion trains on RandomResizedCrop + horizontal flip
  (``random_resized_crop_flip``) and tests on ``resize_center_crop``. This module imports nothing heavy: results, tables and the CLI
read it without loading torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One task's protocol: what kind of output, which loss, how runs are selected and aggregated."""

    name: str
    kind: str            # "regression" (one output) or "classification" (one logit per class)
    loss: str            # a name of percept.engine.losses.LOSSES
    select_metric: str   # validation metric that picks the epoch and the learning rate (higher is better)
    statistic: str       # over splits: "median" or "mean"
    paper: str           # where the paper states it
    train_transform: str  # App. A.1 plans, implemented in percept.data.preprocessing (TRANSFORM_PLANS)
    test_transform: str

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"

    def transform(self, train: bool) -> str:
        """The name of the App. A.1 plan of this task's training (``train``) or test transform."""
        return self.train_transform if train else self.test_transform


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("iqa", "regression", "plcc", "srcc", "median", "§4.1, Table 1", "loda_crop_flips", "loda_test_crops"),
    Task("memorability", "regression", "mse", "srcc", "mean", "§4.2, Table 3", "resize_center_crop",
         "resize_center_crop"),
    Task("emotion", "classification", "cross_entropy", "accuracy", "mean", "§4.3, Table 4",
         "random_resized_crop_flip", "resize_center_crop"),
)}
TASK_NAMES = tuple(TASKS)
KINDS = ("regression", "classification")
# Metrics where lower is better; every other selection metric is higher-is-better.
LOWER_IS_BETTER = ("mse", "rmse")


# The emotion task's label vocabularies (EmoSet's 8 classes in its info.json order, EmotionROI's 6) and their
# valence (the ACC-2 metric of Tables 4 and A.3: positive vs negative); plain data, imported without scipy/sklearn.
EMOSET_CLASSES = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
EMOTIONROI_CLASSES = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
POSITIVE_EMOTIONS = frozenset({"amusement", "awe", "contentment", "excitement", "joy", "surprise"})
NEGATIVE_EMOTIONS = frozenset({"anger", "disgust", "fear", "sadness"})


def get_task(name: str) -> Task:
    """The task called ``name``; a clear error listing the valid names otherwise."""
    try:
        return TASKS[str(name)]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}") from None


def selection_score(value: float, metric: str) -> float:
    """A validation value turned into higher-is-better; NaN (e.g. SRCC of constant predictions) never wins."""
    if not math.isfinite(float(value)):
        return -math.inf
    return -value if metric in LOWER_IS_BETTER else value
