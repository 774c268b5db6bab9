"""Manifests: one CSV per prepared dataset, one row per image, plus a JSON sidecar with its checksum.

Format (fixed; the Dataset classes read it):

* ``image``: path relative to the dataset root, POSIX separators, unique;
* the card's label columns (:attr:`DatasetCard.label_columns`): the official score on the dataset's own
  scale (``mos``, ``dmos``, ``memorability`` or ``label``), the training target when it differs (IQA:
  ``quality``, higher = better), ``label_name`` for emotion classes;
* ``reference`` for synthetic IQA datasets (LIVE, TID2013, KADID-10k);
* optional extra official columns (KonIQ ``set``, LaMem ``split1``..``split5``, ...).

The sidecar ``NAME.json`` next to ``NAME.csv`` records ``dataset``, ``task``, ``rows``, ``sha256`` of the
CSV bytes, ``label_columns`` and ``created_by: "percept"`` (plus ``partial``/``dropped`` when images were
missing), so that :func:`read_manifest` notices a manifest edited after preparation.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..core.files import atomic_write_bytes
from .cards import DatasetCard, get_card

FORMAT_VERSION = 1
_TEXT_COLUMNS = ("image", "reference", "label_name")


class ManifestError(ValueError):
    """A manifest (or the official files it is built from) is missing, malformed or was modified."""


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def _where(df: pd.DataFrame, i: int) -> str:
    image = df["image"].iloc[i] if "image" in df.columns else "?"
    return f"row {i + 1} (CSV line {i + 2}, image {image!r})"


def _shown(items: list, n: int = 5) -> str:
    return ", ".join(str(x) for x in items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def validate_manifest(df: pd.DataFrame, card: DatasetCard, source: str) -> None:
    """Raise :class:`ManifestError` (naming ``source``, the row and the column) unless ``df`` is a valid
    manifest for ``card``: required columns present, ``image`` unique relative POSIX paths, labels finite
    and within ``card.label_range``, class labels integral and consistent with ``label_name``, IQA
    ``quality`` = ``quality_sign`` x score, non-empty ``reference`` for synthetic datasets."""
    fix = ("fix that row of your CSV" if card.name.startswith("csv-")      # a CSV of your own (data/user_csv.py)
           else f"re-run `percept prepare {card.name}` on the official download")
    missing = [c for c in card.required_columns if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing column(s) {', '.join(missing)} required for {card.name} "
                            f"(found: {', '.join(map(str, df.columns)) or 'none'}); {fix}")
    if len(df) == 0:
        raise ManifestError(f"{source}: the manifest has no rows; {fix}")

    images = df["image"]
    text = images.where(images.map(lambda v: isinstance(v, str)), "").astype(str)
    empty = np.flatnonzero((text.str.strip() == "").to_numpy())
    if len(empty):
        raise ManifestError(f"{source}: {_where(df, int(empty[0]))} has an empty `image` path; {fix}")
    bad = (text.str.contains("\\", regex=False) | text.str.startswith("/") | text.str.match(r"[A-Za-z]:")
           | text.str.contains(r"(?:^|/)\.\.(?:/|$)"))
    if bad.any():
        raise ManifestError(f"{source}: {_where(df, int(np.flatnonzero(bad.to_numpy())[0]))}: `image` must be a "
                            f"POSIX path relative to the dataset root, without '..' or backslashes; {fix}")
    dup = images[images.duplicated(keep=False)]
    if len(dup):
        rows = [i + 1 for i in np.flatnonzero(images.duplicated(keep=False).to_numpy())]
        raise ManifestError(f"{source}: duplicate image path(s) {_shown(sorted(set(dup)))} "
                            f"(rows {_shown(rows)}); each image must appear once - {fix}")

    numeric = [c for c in dict.fromkeys((card.score_column, card.label_column))]
    values = {}
    for col in numeric:
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            i = int(bad[0])
            raw = df[col].iloc[i]
            shown = "empty/NaN" if pd.isna(raw) else repr(raw.item() if hasattr(raw, "item") else raw)
            raise ManifestError(f"{source}: column `{col}` at {_where(df, i)} is {shown}, not a finite number "
                                f"({len(bad)} such row(s)); fix the label file or {fix}")
        values[col] = v
    lo, hi = card.label_range
    score = values[card.score_column]
    out = np.flatnonzero((score < lo) | (score > hi))
    if len(out):
        i = int(out[0])
        raise ManifestError(f"{source}: `{card.score_column}` = {score[i]:g} at {_where(df, i)} is outside "
                            f"{card.name}'s range [{lo:g}, {hi:g}] ({len(out)} such row(s)); check that the "
                            f"right label file/column was used, or {fix}")
    if card.quality_sign is not None:
        expected = card.quality_sign * score
        off = np.flatnonzero(~np.isclose(values[card.label_column], expected, rtol=0, atol=1e-9))
        if len(off):
            i = int(off[0])
            raise ManifestError(f"{source}: `{card.label_column}` at {_where(df, i)} should be "
                                f"{'' if card.quality_sign > 0 else '-'}{card.score_column} = {expected[i]:g} "
                                f"(higher = better); {fix}")
    if card.classes is not None:
        labels = values[card.label_column]
        nonint = np.flatnonzero(labels != np.round(labels))
        if len(nonint):
            i = int(nonint[0])
            raise ManifestError(f"{source}: `{card.label_column}` = {labels[i]:g} at {_where(df, i)} is not an "
                                f"integer class index; {fix}")
        names = df["label_name"].astype(str).to_numpy()
        expected_names = np.array(card.classes, dtype=object)[labels.astype(int)]
        wrong = np.flatnonzero(names != expected_names)
        if len(wrong):
            i = int(wrong[0])
            raise ManifestError(f"{source}: `label_name` {names[i]!r} at {_where(df, i)} does not match label "
                                f"{int(labels[i])} = {expected_names[i]!r} in {card.name}'s class order "
                                f"({', '.join(card.classes)}); {fix}")
    if card.synthetic:
        ref = df["reference"]
        empty = np.flatnonzero(ref.isna().to_numpy() | (ref.astype(str).str.strip() == "").to_numpy())
        if len(empty):
            raise ManifestError(f"{source}: `reference` is empty at {_where(df, int(empty[0]))}; synthetic IQA "
                                f"manifests need the reference image id of every row; {fix}")


def _ordered(df: pd.DataFrame, card: DatasetCard) -> pd.DataFrame:
    first = [c for c in card.required_columns if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike, card: DatasetCard,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Validate ``df`` against ``card`` and write it atomically as UTF-8 CSV at ``path``, with the JSON
    sidecar ``path.with_suffix('.json')``; ``extra`` adds keys to the sidecar. Returns ``path``."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise ManifestError(f"manifest path {str(path)!r} must end in .csv (the sidecar is the .json beside it)")
    df = _ordered(df, card)
    validate_manifest(df, card, str(path))
    data = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    meta = {"dataset": card.name, "task": card.task, "rows": int(len(df)),
            "sha256": hashlib.sha256(data).hexdigest(), "label_columns": list(card.label_columns),
            "created_by": "percept", "format_version": FORMAT_VERSION}
    meta.update(dict(extra or {}))
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar of manifest ``path``; :class:`ManifestError` if it is missing or not valid JSON."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ManifestError(f"manifest {str(path)!r} has no sidecar {side.name!r}, so it cannot be verified; "
                            f"re-run `percept prepare` to recreate both")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"sidecar {str(side)!r} is not valid JSON ({err}); re-run `percept prepare`") from err
    if not isinstance(meta, dict) or meta.get("created_by") != "percept":
        raise ManifestError(f"sidecar {str(side)!r} was not written by percept; re-run `percept prepare`")
    return meta


def read_manifest(path: str | os.PathLike, card: DatasetCard | None = None, verify: bool = True) -> pd.DataFrame:
    """Read and validate a manifest. With ``verify`` (default) the CSV bytes must match the sidecar's
    sha256 and row count, else :class:`ManifestError` (the file was modified after preparation).
    ``card`` defaults to the sidecar's dataset (required when ``verify`` is False and there is no sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {str(path)!r} does not exist; create it with `percept prepare`")
    data = path.read_bytes()
    meta = read_sidecar(path) if verify or sidecar_path(path).is_file() else {}
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.get("sha256"):
            raise ManifestError(f"manifest {str(path)!r} was modified after preparation (sha256 {digest[:12]}... "
                                f"!= {str(meta.get('sha256'))[:12]}... recorded in {sidecar_path(path).name}); "
                                f"re-run `percept prepare {meta.get('dataset', 'NAME')}`")
    if card is None:
        if "dataset" not in meta:
            raise ManifestError(f"manifest {str(path)!r}: no sidecar names its dataset; pass the card")
        card = get_card(meta["dataset"])
    elif meta.get("dataset") not in (None, card.name):
        raise ManifestError(f"manifest {str(path)!r} was prepared for {meta['dataset']!r}, not {card.name!r}")
    try:
        text_cols = {c: str for c in _TEXT_COLUMNS}
        df = pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values={
            c: ["", "NaN", "nan"] for c in card.label_columns if c != "label_name"}, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ManifestError(f"manifest {str(path)!r} is not a readable UTF-8 CSV ({err}); "
                            f"re-run `percept prepare {card.name}`") from err
    if verify and len(df) != meta.get("rows"):
        raise ManifestError(f"manifest {str(path)!r} has {len(df)} rows but its sidecar records {meta.get('rows')}: "
                            f"it was modified after preparation; re-run `percept prepare {card.name}`")
    validate_manifest(df, card, str(path))
    return df
