"""Split tables for a dataset's manifest: committed (pinned) split files, or the protocol computed.

The recipes live in :mod:`percept.data.splits`; this module decides which one a dataset uses and
where its splits come from:

* **Committed files** (:data:`PINNED_DATASETS`: LIVEC, KonIQ-10k, EmotionROI) are
  ``data_manifests/splits/NAME.csv`` with their ``NAME.csv.json`` sidecars, written by
  ``python tools/pin_splits.py --data-root PATH`` from the official label files and verified
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

Split files: a split table written as ``NAME.csv`` (``image,split1,...``) with a JSON sidecar (counts,
protocol, SHA-256), both atomically, and read back only when it matches its sidecar. The committed (pinned)
files are in ``percept/core/resources/data_manifests/splits``.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
from pathlib import Path, PurePosixPath
from typing import Callable, Hashable, Sequence

import pandas as pd

from ..core.files import atomic_write_bytes
from ..core.resources import resource_path
from .splits import (
    _FORMAT,
    DATASET_PROTOCOLS,
    PARTS,
    PROTOCOLS,
    SplitError,
    attach_splits,
    carve_validation_parts,
    emotionroi_splits,
    iqa_authentic_splits,
    iqa_synthetic_splits,
    split_columns,
    sun_memorability_splits,
    things_splits,
    validate_split_columns,
)


def sidecar_path(path: str | Path) -> Path:
    """``splits.csv`` → ``splits.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _part_counts(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {c: {p: int((df[c] == p).sum()) for p in PARTS} for c in split_columns(df)}


def write_splits(df: pd.DataFrame, path: str | Path, dataset: str, protocol: str,
                 groups: Sequence[Hashable] | None = None) -> Path:
    """Validate and write ``image,split1,...`` to ``path`` and a JSON sidecar (counts, SHA-256), both atomically."""
    validate_split_columns(df, groups)
    if protocol not in PROTOCOLS:
        raise SplitError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    cols = split_columns(df)
    table = df[["image", *cols]].copy()
    table[cols] = table[cols].fillna("").astype(str)
    data = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    meta = {"format": _FORMAT, "generator": "percept.data.splits", "dataset": dataset, "protocol": protocol,
            "n_images": len(table), "n_splits": len(cols), "counts": _part_counts(table),
            "sha256": hashlib.sha256(data).hexdigest()}
    path = Path(path)
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return path


def read_splits(path: str | Path, dataset: str | None = None, protocol: str | None = None) -> pd.DataFrame:
    """Read a split file written by :func:`write_splits`, refusing it unless it matches its sidecar.

    The sidecar's metadata is returned in ``df.attrs["splits"]``.
    """
    path = Path(path)
    side = sidecar_path(path)
    fix = ("The split file was edited or corrupted; do not edit split files by hand — regenerate it "
           "with the project's code (a protocol function of percept.data.splits, then "
           "percept.data.pinned.write_splits).")
    if not path.is_file():
        raise FileNotFoundError(f"split file {str(path)!r} does not exist")
    if not side.is_file():
        raise SplitError(f"split file {path} has no sidecar {side.name}. {fix}")
    data, side_text = path.read_bytes(), side.read_text(encoding="utf-8")
    digest = hashlib.sha256(data).hexdigest()
    cache_key = (digest, side_text, dataset, protocol)
    if cache_key in _VERIFIED:   # these very bytes passed every check below already (in this process)
        return _copy_table(_VERIFIED[cache_key])
    try:
        meta = json.loads(side_text)
        expected_sha = meta["sha256"]
    except (ValueError, KeyError) as e:
        raise SplitError(f"sidecar {side} of split file {path} is unreadable ({e}). {fix}") from None
    if digest != expected_sha:
        raise SplitError(f"split file {path}: SHA-256 does not match its sidecar {side.name}. {fix}")
    df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    problems = []
    if meta.get("n_images") != len(df):
        problems.append(f"{len(df)} images, sidecar says {meta.get('n_images')}")
    if meta.get("n_splits") != len(split_columns(df)):
        problems.append(f"{len(split_columns(df))} splits, sidecar says {meta.get('n_splits')}")
    if meta.get("counts") != _part_counts(df):
        problems.append("train/val/test counts differ from the sidecar's")
    for key, want in (("dataset", dataset), ("protocol", protocol)):
        if want is not None and meta.get(key) != want:
            problems.append(f"{key} is {meta.get(key)!r}, expected {want!r}")
    if problems:
        raise SplitError(f"split file {path} does not match its sidecar {side.name}: {'; '.join(problems)}. {fix}")
    try:
        validate_split_columns(df)
    except SplitError as e:
        raise SplitError(f"split file {path}: {e}. {fix}") from None
    df.attrs["splits"] = meta
    if len(_VERIFIED) >= 16:
        _VERIFIED.clear()
    _VERIFIED[cache_key] = _copy_table(df)
    return df


# Verified split tables by (SHA-256 of the file's bytes, its sidecar's text, dataset, protocol): a file is read
# and hashed at every call, but parsed and validated (0.1 s for KonIQ-10k's 10,073 rows) once per content.
_VERIFIED: dict[tuple, pd.DataFrame] = {}


def _copy_table(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.attrs = copy.deepcopy(df.attrs)
    return out


PINNED_SPLITS_DIR = resource_path("data_manifests", "splits")   # package data (see percept.core.resources)
PINNED_DATASETS = ("livec", "koniq10k", "emotionroi")  # datasets with a committed split file
REGENERATE = "python tools/pin_splits.py --data-root PATH"
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
    how = (f"restore it (`git checkout -- percept/core/resources/data_manifests/splits`, or reinstall percept) or "
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
