"""Split files: a split table written as ``NAME.csv`` (``image,split1,...``) with a JSON sidecar (counts,
protocol, SHA-256), both atomically, and read back only when it matches its sidecar. The committed (pinned)
files are in ``percept/resources/data_manifests/splits`` (:mod:`percept.data.pinned`); the recipes that make
the tables are in :mod:`percept.data.splits`."""
from __future__ import annotations

import copy
import hashlib
import io
import json
from pathlib import Path
from typing import Hashable, Sequence

import pandas as pd

from ..files import atomic_write_bytes
from .splits import _FORMAT, PARTS, PROTOCOLS, SplitError, split_columns, validate_split_columns


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
           "percept.data.split_files.write_splits).")
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
