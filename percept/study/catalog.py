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
    from ..model.official import OFFICIAL_CHECKPOINTS
    return pd.DataFrame([{"model": f"official-{key}", "repo_id": card.repo_id, "task": card.task,
                          "trained_on": card.trained_on, "score": card.outputs,
                          "cached": _in_hub_cache(card.repo_id, card.filename, cache_dir)}
                         for key, card in OFFICIAL_CHECKPOINTS.items()])


def list_backbones(cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The encoders ``--backbone`` takes: timm name, where the paper uses it, where its weights come from, and
    whether they are here (hub cache, or the shipped file with a matching hash)."""
    from ..model.backbones import (
        BACKBONES,
        PretrainedWeightsUnavailable,
        shipped_weights_path,
    )
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
    from ..data.cards import CARDS
    rows = []
    for card in CARDS.values():
        row = {"dataset": card.name, "paper_name": card.paper_name, "task": card.task, "label": card.label_column,
               "images": card.expected_images}
        if data_root is not None:
            row["prepared"] = (Path(data_root) / card.name / "percept_manifest.csv").is_file()
        rows.append(row)
    return pd.DataFrame(rows)


LISTS = {"models": list_models, "backbones": list_backbones, "datasets": list_datasets}


DEFAULT_DOWNLOADS = ("official-iqa", "official-memorability", "official-emotions", "clip_vit_l14")


def _hub_files(names) -> list[tuple[str, str, str]]:
    """``(name, repo_id, filename)`` for official checkpoint names (``official-iqa``, ``iqa``, a repo id) and
    backbone names (``clip_vit_l14``: timm's ``model.safetensors`` of ``timm/<timm name>``)."""
    from ..model.backbones import BACKBONES
    from ..model.official import ALIASES, OFFICIAL_CHECKPOINTS
    files = []
    for name in names:
        if name in ALIASES:
            card = OFFICIAL_CHECKPOINTS[ALIASES[name]]
            files.append((f"official-{ALIASES[name]}", card.repo_id, card.filename))
        elif name in BACKBONES and BACKBONES[name].has_pretrained and not BACKBONES[name].shipped_weights:
            files.append((name, BACKBONES[name].hub_id, TIMM_WEIGHTS_FILE))
        else:
            hub = [n for n, s in BACKBONES.items() if s.has_pretrained and not s.shipped_weights]
            raise ValueError(f"nothing to download for {name!r}: give official checkpoints "
                             f"({', '.join(f'official-{k}' for k in OFFICIAL_CHECKPOINTS)}) or hub backbones "
                             f"({', '.join(hub)})")
    return files


def download(names=DEFAULT_DOWNLOADS, cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Fetch official checkpoints and backbone weights into the Hugging Face cache (``HF_HOME``, or
    ``cache_dir``), so that a cluster without internet that shares the cache loads them offline
    (``HF_HUB_OFFLINE=1``). Files already cached are not fetched again. One row per file: name, repo, file,
    ``status`` (``cached`` / ``downloaded``), local path and size in MB."""
    import huggingface_hub
    rows = []
    for name, repo_id, filename in _hub_files(names):
        cached = _in_hub_cache(repo_id, filename, cache_dir)
        try:
            path = Path(huggingface_hub.hf_hub_download(repo_id, filename,
                                                        cache_dir=None if cache_dir is None else str(cache_dir)))
        except Exception as err:
            raise RuntimeError(f"could not fetch {filename} of {repo_id!r} ({type(err).__name__}: {err}); "
                               f"`percept download` needs internet access to the Hugging Face hub (unset "
                               f"HF_HUB_OFFLINE), then copy or share the cache (HF_HOME) with offline machines") from err
        rows.append({"name": name, "repo_id": repo_id, "file": filename,
                     "status": "cached" if cached else "downloaded", "path": str(path),
                     "size_mb": round(path.stat().st_size / 2**20, 1)})
    return pd.DataFrame(rows)
