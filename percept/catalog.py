"""What exists and whether its files are here: the official checkpoints (with what their scores mean), the
backbones and the datasets (``percept list models|backbones|datasets``, :func:`list_models`).

"Cached" means the file is already in the Hugging Face cache (``HF_HOME``), so the model loads offline; nothing
here downloads anything. A dataset is "prepared" when ``DATA_ROOT/<name>/percept_manifest.csv`` exists
(``percept prepare NAME --root DATA_ROOT/<name>``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

TIMM_WEIGHTS_FILE = "model.safetensors"   # what timm reads from a `timm/<name>` hub repo


def _in_hub_cache(repo_id: str, filename: str, cache_dir: str | os.PathLike | None) -> bool:
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo_id, filename, cache_dir=None if cache_dir is None else str(cache_dir))
    return isinstance(found, str) and Path(found).is_file()


def list_models(cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The released PerceptCLIP checkpoints: the name ``percept predict --model`` takes, hub repo, task, what it
    was trained on, what its score means, and whether it is cached."""
    from .official import OFFICIAL_CHECKPOINTS
    return pd.DataFrame([{"model": f"official-{key}", "repo_id": card.repo_id, "task": card.task,
                          "trained_on": card.trained_on, "score": card.outputs,
                          "cached": _in_hub_cache(card.repo_id, card.filename, cache_dir)}
                         for key, card in OFFICIAL_CHECKPOINTS.items()])


def list_backbones(cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The encoders ``--backbone`` takes: timm name, where the paper uses it, where its weights come from, and
    whether they are here (hub cache, or the shipped file with a matching hash)."""
    from .backbones import BACKBONES, PretrainedWeightsUnavailable, shipped_weights_path
    rows = []
    for spec in BACKBONES.values():
        if spec.shipped_weights:
            try:
                here, source = shipped_weights_path(spec).is_file(), "shipped with percept"
            except PretrainedWeightsUnavailable:
                here, source = False, "shipped with percept (missing or modified)"
        elif spec.has_pretrained:
            here, source = _in_hub_cache(spec.hub_id, TIMM_WEIGHTS_FILE, cache_dir), f"HF hub {spec.hub_id}"
        else:
            here, source = True, "random weights only (tests)"
        rows.append({"backbone": spec.name, "timm_name": spec.timm_name, "family": spec.family,
                     "used_for": spec.reference, "weights": source, "available": here})
    return pd.DataFrame(rows)


def list_datasets(data_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The datasets of the study (their cards): name in the paper, task, training label, images, and with
    ``data_root`` whether ``DATA_ROOT/<name>`` holds a prepared manifest."""
    from .data.cards import CARDS
    rows = []
    for card in CARDS.values():
        row = {"dataset": card.name, "paper_name": card.paper_name, "task": card.task, "label": card.label_column,
               "images": card.expected_images}
        if data_root is not None:
            row["prepared"] = (Path(data_root) / card.name / "percept_manifest.csv").is_file()
        rows.append(row)
    return pd.DataFrame(rows)


LISTS = {"models": list_models, "backbones": list_backbones, "datasets": list_datasets}
