"""Split tables for a dataset's manifest: committed (pinned) split files, or the protocol computed.

The recipes live in :mod:`percept.data.splits`; this module decides which one a dataset uses and
where its splits come from:

* **Committed files** (:data:`PINNED_DATASETS`: LIVEC, KonIQ-10k, EmotionROI) are
  ``data_manifests/splits/NAME.csv`` with their ``NAME.csv.json`` sidecars, written by
  ``python -m percept.data.pin_splits --data-root PATH`` from the official label files and verified
  on every read (:func:`load_pinned_splits`). They make the parts independent of the user's copy: a
  partial download keeps each of its images in the part the full dataset gives it.
* **Computed** (:func:`compute_splits`) for every other dataset: the protocol of
  :data:`percept.data.splits.DATASET_PROTOCOLS` run over the manifest rows (random protocols), or the
  official splits the manifest already carries (LaMem ``split1..5``, SUN ``split1..25``, EmoSet
  ``split``), checked.

Split tables here are keyed by the image's **split key**, not always its manifest path: the manifest
path with the part that depends on how the download was unpacked or which preparer option was used
removed (LIVEC: without a leading ``ChallengeDB_release/``, so ``Images/NAME``; KonIQ-10k: the file
name alone, so ``1024x768/`` and ``512x384/`` agree; all others: the manifest path itself). See
:func:`split_key`.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Callable

import pandas as pd

from ..resources import resource_path
from .split_files import read_splits
from .splits import (DATASET_PROTOCOLS, SplitError, attach_splits, carve_validation_parts, emotionroi_splits,
                     iqa_authentic_splits, iqa_synthetic_splits, split_columns, sun_memorability_splits,
                     things_splits, validate_split_columns)

PINNED_SPLITS_DIR = resource_path("data_manifests", "splits")   # package data (see percept.resources)
PINNED_DATASETS = ("livec", "koniq10k", "emotionroi")  # datasets with a committed split file
REGENERATE = "python -m percept.data.pin_splits --data-root PATH"
# protocols whose splits are official ones that the prepared manifest already carries as split columns
MANIFEST_SPLITS = ("lamem", "sun_memorability")

_SPLIT_KEYS: dict[str, Callable[[str], str]] = {
    "livec": lambda p: p.removeprefix("ChallengeDB_release/"),
    "koniq10k": lambda p: PurePosixPath(p).name,
}


def _protocol(dataset: str) -> str:
    if dataset not in DATASET_PROTOCOLS:
        raise SplitError(f"no split protocol for dataset {dataset!r}; known datasets: "
                         f"{', '.join(sorted(DATASET_PROTOCOLS))}")
    return DATASET_PROTOCOLS[dataset]


def split_key(dataset: str, image: str) -> str:
    """The key under which ``image`` (a manifest path) is listed in ``dataset``'s split tables."""
    return _SPLIT_KEYS.get(dataset, str)(str(image))


def _keys(dataset: str, manifest_df: pd.DataFrame) -> pd.Series:
    if "image" not in manifest_df.columns:
        raise SplitError(f"{dataset}: manifest has no 'image' column")
    keys = manifest_df["image"].astype(str).map(lambda p: split_key(dataset, p))
    dup = keys[keys.duplicated()].unique()
    if len(dup):
        raise SplitError(f"{dataset}: {len(dup)} split key(s) occur more than once in the manifest, e.g. "
                         f"{list(dup[:5])}; each image must appear once")
    return keys.reset_index(drop=True)


def pinned_split_path(dataset: str, directory: str | os.PathLike | None = None) -> Path:
    """``data_manifests/splits/DATASET.csv`` (or under ``directory``); the file may not exist."""
    _protocol(dataset)
    return Path(directory if directory is not None else PINNED_SPLITS_DIR) / f"{dataset}.csv"


def compute_splits(dataset: str, manifest_df: pd.DataFrame) -> pd.DataFrame:
    """The split table of ``dataset``'s protocol for ``manifest_df``, keyed by :func:`split_key`.

    * IQA authentic (LIVEC, KonIQ-10k, SPAQ, FLIVE): :func:`~.splits.iqa_authentic_splits` over the
      manifest rows **in manifest order** (the order is part of the split);
    * IQA synthetic (LIVE, TID2013, KADID-10k; also the demo's synthetic set): by the ``reference``
      column, no reference in two parts;
    * EmotionROI: :func:`~.splits.emotionroi_splits` (plain random, as the paper says);
    * LaMem: the manifest's official ``split1..split5`` (an error if it has none);
    * SUN: the manifest's official ``split1..split25`` (``none`` → ``""``, not used), or, when the
      manifest has no split columns, 25 half/half splits drawn with LoDa's recipe (an assumption); then
      10% of each split's train images become val (ours: the official splits have no val part);
    * EmoSet: the manifest's official ``split`` column as ``split1``;
    * THINGS: 5 splits 75/5/20 grouped by the ``concept`` column (ours; Table A.1 uses no split).

    The table is validated (with ``reference`` as groups for synthetic IQA) before it is returned.
    """
    protocol = _protocol(dataset)
    keys = _keys(dataset, manifest_df)
    manifest_df = manifest_df.reset_index(drop=True)
    own = split_columns(manifest_df)
    groups = None
    if protocol == "iqa_authentic":
        table = iqa_authentic_splits(keys.tolist())
    elif protocol == "iqa_synthetic":
        if "reference" not in manifest_df.columns:
            raise SplitError(f"{dataset}: synthetic IQA splits are by reference image, but the manifest has no "
                             f"'reference' column")
        groups = manifest_df["reference"].astype(str).tolist()
        table = iqa_synthetic_splits(keys.tolist(), groups)
    elif protocol == "emotionroi":
        table = emotionroi_splits(keys.tolist())
    elif protocol == "things":
        if "concept" not in manifest_df.columns:
            raise SplitError(f"{dataset}: THINGS splits are by concept, but the manifest has no 'concept' column; "
                             f"prepare it again with `percept prepare {dataset}`")
        groups = manifest_df["concept"].astype(str).tolist()
        table = things_splits(keys.tolist(), groups)
    elif protocol == "emoset":
        if "split" not in manifest_df.columns:
            raise SplitError(f"{dataset}: the manifest has no official 'split' column; prepare it with "
                             f"`percept prepare {dataset}`")
        table = pd.DataFrame({"image": keys, "split1": manifest_df["split"].fillna("").astype(str)})
    elif protocol == "sun_memorability" and not own:
        table = sun_memorability_splits(keys.tolist())
    else:  # official splits carried by the manifest: lamem, sun_memorability
        if not own:
            raise SplitError(f"{dataset}: the official splits are read by `percept prepare {dataset}` into "
                             f"split columns, but this manifest has none")
        table = pd.DataFrame({"image": keys})
        for c in own:
            values = manifest_df[c].fillna("").astype(str)
            table[c] = values.where(values != "none", "") if protocol == "sun_memorability" else values
        if protocol == "sun_memorability" and not (table[own] == "val").any().any():
            table = carve_validation_parts(table)   # the official splits are train/test only
    try:
        validate_split_columns(table, groups)
    except SplitError as e:
        raise SplitError(f"{dataset}: {e}") from None
    return table


def load_pinned_splits(dataset: str, directory: str | os.PathLike | None = None) -> pd.DataFrame:
    """The committed split table of ``dataset``, verified against its sidecar (checksum, counts, protocol)."""
    path = pinned_split_path(dataset, directory)
    how = (f"restore it (`git checkout -- percept/resources/data_manifests/splits`, or reinstall percept) or "
           f"regenerate it from the official label files with `{REGENERATE}`")
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: pinned split file {str(path)!r} is missing; {how}")
    try:
        return read_splits(path, dataset=dataset, protocol=DATASET_PROTOCOLS[dataset])
    except SplitError as e:
        raise SplitError(f"{dataset}: pinned split file refused: {e} To fix: {how}.") from None


def splits_for_manifest(dataset: str, manifest_df: pd.DataFrame,
                        directory: str | os.PathLike | None = None) -> pd.DataFrame:
    """``manifest_df`` (row order kept) with ``dataset``'s split columns ``split1..splitK`` attached.

    For the datasets with a committed split file (:data:`PINNED_DATASETS`; ``directory`` overrides
    ``data_manifests/splits``) the parts come from that file, verified, never recomputed (a missing
    or edited file is an error). Every manifest image must be listed there (matched by
    :func:`split_key`); images that are not raise :class:`SplitError` naming them. A **partial
    manifest** (e.g. LIVEC with only the 627 images present of 1,162) is allowed: its images keep
    the parts the full dataset gives them, so its split sizes differ from the paper's (and from
    ``round(0.8 n)``) and its results are not comparable with the paper's.

    Other datasets get :func:`compute_splits`. For LaMem and SUN, whose official splits the manifest
    already carries as ``splitK`` columns, those columns are kept (SUN's ``none`` becomes ``""``, and
    10% of each SUN split's train part becomes val, which the official splits lack); nothing else is
    recomputed over them. Any other manifest that already has ``splitK``
    columns is refused (:func:`~.splits.attach_splits`), so splits are never silently replaced.
    """
    protocol = _protocol(dataset)
    keys = _keys(dataset, manifest_df)
    manifest_df = manifest_df.reset_index(drop=True)
    if dataset in PINNED_DATASETS:
        table = load_pinned_splits(dataset, directory)
        listed = set(table["image"])
        unknown = [img for img, k in zip(manifest_df["image"], keys) if k not in listed]
        if unknown:
            raise SplitError(f"{dataset}: {len(unknown)} manifest image(s) are not in the pinned split file "
                             f"{pinned_split_path(dataset, directory)}: {', '.join(map(str, unknown[:5]))}"
                             f"{', ...' if len(unknown) > 5 else ''}; the manifest must come from the official "
                             f"release (`percept prepare {dataset}`)")
        table = table.set_index("image").loc[keys.tolist()].reset_index()
    else:
        table = compute_splits(dataset, manifest_df)
        if protocol in MANIFEST_SPLITS and split_columns(manifest_df):
            out = manifest_df.copy()
            for c in split_columns(table):
                out[c] = table[c].to_numpy()
            return out
    table["image"] = manifest_df["image"].to_numpy()  # keys → the manifest's own paths, same row order
    return attach_splits(manifest_df, table)
