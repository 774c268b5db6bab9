"""A run's identity, one definition: the configuration fields that make two runs the same experiment.

:func:`run_key` reads them from a run's configuration (a ``TrainConfig`` or its ``config.json``): the datasets, the
model's identity fields (:data:`percept.model.config.MODEL_KEY_FIELDS`: every ``ModelConfig`` field but those it
lists as not identity, so a new model field joins the key by being declared there) and the training fields below.
Run names (:func:`percept.study.sweep.run_name`), the results tables' configuration columns, the paper cells a run
fills (:mod:`percept.study.paper_specs`, :mod:`percept.study.paper`), the unified table and the notebooks read it
from here. Split and learning rate are not in it: a table aggregates over splits and selects the learning rate on
validation. Torch-free.
"""
from __future__ import annotations

from typing import Mapping

from ..model.config import MODEL_KEY_FIELDS, PAPER_MODEL, model_key

# TrainConfig fields in the key, with the value a config.json written before the field existed meant
TRAIN_KEY_DEFAULTS = {"head_finetune": False, "seed": 0, "task_weights": None}
RUN_KEY_FIELDS = ("datasets", *MODEL_KEY_FIELDS, *TRAIN_KEY_DEFAULTS)

__all__ = ["MODEL_KEY_FIELDS", "PAPER_MODEL", "RUN_KEY_FIELDS", "run_key", "task_weights_text", "is_paper_model", "same_value"]


def task_weights_text(weights: Mapping | None) -> str:
    """A mixed-task run's ``task_weights`` as one table cell (``emotion=2,iqa=1``; '' for equal weights)."""
    return ",".join(f"{k}={float(v):g}" for k, v in sorted((weights or {}).items()))


def run_key(config) -> dict:
    """The identity of the run configured by ``config`` (a ``TrainConfig`` or a ``config.json`` dict):
    ``{field: value}`` for every field of :data:`RUN_KEY_FIELDS`, values that compare and group in a table."""
    config = config.to_dict() if hasattr(config, "to_dict") else config
    train = {name: config.get(name, default) for name, default in TRAIN_KEY_DEFAULTS.items()}
    train["task_weights"] = task_weights_text(train["task_weights"])
    datasets = "+".join(entry["dataset"] for entry in config.get("data", []))
    return {"datasets": datasets, **model_key(config.get("model", {})), **train}


def same_value(a, b) -> bool:
    """``a`` (a run's value, maybe read back from a table) equals ``b`` (a configuration's): numbers as numbers
    (``8`` = ``8.0``), booleans as booleans, anything else exactly."""
    if isinstance(b, bool) or isinstance(a, bool):
        return bool(a) == bool(b)
    if isinstance(b, (int, float)):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


def is_paper_model(row: Mapping) -> bool:
    """Whether a run (its key, or a results row) is the paper's model (§3.1) in every model field."""
    return all(same_value(row.get(name), value) for name, value in PAPER_MODEL.items())
