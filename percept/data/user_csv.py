"""Your own labelled images as a dataset: ``percept train --dataset csv:LABELS.csv --task iqa --root IMAGES``.

The CSV has a column ``image`` (paths relative to the root, as a manifest's) and a column ``label``:

* ``iqa`` / ``memorability``: a number per image (IQA: higher = better, as every training column of percept;
  negate a DMOS first). Any finite value is accepted for IQA (its loss, PLCC, ignores the scale); memorability
  labels must lie in [-1, 1] (hit rates, or SUN's corrected rates) unless ``label_range`` says otherwise;
* ``emotion``: a class per image, by name (``classes`` gives the order; without it the names are sorted) or by
  index into ``classes``.

Image paths are normalised before anything else (``./a.png``, ``sub/../a.png`` and ``a.png`` are one image), so
that one image can never be two rows — nor land in train and test.

An optional column ``group`` ties rows that must stay together, e.g. the distorted versions of one reference image:
no group is ever in two parts of a split (the paper splits its synthetic IQA sets by reference image, §4.1).

Optional split columns ``split1..splitK`` (or one ``split``) with values ``train``/``val``/``test`` (empty = in
no part) are used as they are (checked against ``group``). Without them percept draws the task's protocol once,
seeded (LoDa's recipe, seed 3407, :mod:`percept.data.splits`): IQA 10 splits 80 % train / 20 % test with 10 % of
each train part as validation (§4.1; with ``group``: over the sorted groups, as the synthetic IQA sets by
reference); memorability and emotion 5 splits 75 / 5 / 20 % (the LaMem / EmotionROI shape, §4.2-4.3; with
``group``: over the groups).
They are written beside the CSV (``LABELS.splits.csv`` + sidecar) and read back on every later run, so every
run of the study sees the same parts; a CSV whose images changed afterwards is refused until that file is
deleted (new splits would make results incomparable).

The same checks as a prepared dataset (:func:`percept.data.manifest.validate_manifest`): the row and CSV line of
a missing column, an empty/NaN label, a label outside the range, a class not in the list, a duplicate image or
an absolute path; every image file must exist under the root (the missing ones are named). The manifest percept
reads is written beside the CSV (``LABELS.percept_manifest.csv`` with its sha256 sidecar) and rewritten only
when the CSV changes.

The dataset's name (a run's head, its results' ``dataset``) is ``csv-<file stem>``.
"""
from __future__ import annotations

import hashlib
import math
import os
import posixpath
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.images import header_problem
from .cards import DatasetCard, register_card
from .manifest import (
    ManifestError,
    read_manifest,
    read_sidecar,
    validate_manifest,
    write_manifest,
)
from .pinned import read_splits, write_splits
from .splits import (
    SplitError,
    iqa_authentic_splits,
    iqa_synthetic_splits,
    random_splits,
    split_columns,
    validate_split_columns,
)

CSV_PREFIX = "csv:"
LABEL_COLUMNS = {"iqa": "quality", "memorability": "memorability", "emotion": "label"}
DEFAULT_RANGES = {"iqa": (-math.inf, math.inf), "memorability": (-1.0, 1.0)}
PROTOCOL = {"iqa": "iqa_authentic", "memorability": "user_random", "emotion": "user_random"}
GROUPED_PROTOCOL = {"iqa": "iqa_synthetic", "memorability": "user_grouped", "emotion": "user_grouped"}
GROUP = "group"


def csv_dataset_name(path) -> str:
    """``csv-<stem>``: the dataset (and head) name of a CSV dataset; never the name of a card."""
    return "csv-" + (re.sub(r"[^a-z0-9_-]+", "_", Path(path).stem.lower()).strip("_") or "data")


def csv_card(name: str, task: str, classes=None, label_range=None) -> DatasetCard:
    """The card of a CSV dataset, registered under ``name`` (what :func:`~percept.data.cards.get_card` finds)."""
    if task not in LABEL_COLUMNS:
        raise ValueError(f"{name}: --task must be one of {', '.join(LABEL_COLUMNS)} for a CSV dataset; got {task!r}")
    if task == "emotion":
        if not classes or len(classes) < 2:
            raise ValueError(f"{name}: an emotion dataset needs at least 2 classes; got {classes!r}")
        label_range = (0.0, float(len(classes) - 1))
    elif classes:
        raise ValueError(f"{name}: classes are only for --task emotion (task {task!r} predicts a number)")
    lo, hi = DEFAULT_RANGES[task] if label_range is None else (float(label_range[0]), float(label_range[1]))
    column = LABEL_COLUMNS[task]
    card = DatasetCard(
        name=name, paper_name=name, title=f"{name} (your CSV)", task=task, label_column=column, score_column=column,
        label_range=(lo, hi), classes=tuple(classes) if task == "emotion" else None, expected_images=0,
        synthetic=False, train_replicas=1, quality_sign=1.0 if task == "iqa" else None, official_url="",
        licence="yours", citation="", split_protocol=PROTOCOL[task], preprocessing=f"the {task} task's (App. A.1)",
        official_layout="a CSV with columns image,label[,split1..splitK] (percept.data.user_csv)")
    return register_card(card)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _line(i: int) -> str:
    return f"CSV line {i + 2}"


def read_user_csv(path: str | Path, task: str, classes=None) -> tuple[pd.DataFrame, list[str] | None]:
    """The CSV's rows as manifest columns (``image``, the task's label column, ``label_name`` for emotion,
    ``split1..``) and the class names; :class:`ManifestError` naming the CSV line of anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV dataset {str(path)!r} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not a readable UTF-8 CSV ({err})") from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("image", "label") if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(table.columns) or 'none'}"
                            f"); a CSV dataset needs `image` (path under --root) and `label`, optionally split1..splitK")
    if table.empty:
        raise ManifestError(f"{path}: no rows")
    if "split" in table.columns and not split_columns(table):
        table = table.rename(columns={"split": "split1"})
    frame = pd.DataFrame({"image": [_normalised(p) for p in table["image"]]})
    _refuse_duplicates(path, table["image"], frame["image"])
    raw = table["label"].str.strip()
    empty = np.flatnonzero((raw == "").to_numpy() | raw.str.lower().isin(["nan", "na", "null"]).to_numpy())
    if len(empty):
        raise ManifestError(f"{path}: `label` is empty/NaN at {_line(int(empty[0]))} (image "
                            f"{frame['image'].iloc[int(empty[0])]!r}; {len(empty)} such row(s)); give every image a label")
    column = LABEL_COLUMNS[task]
    if task == "emotion":
        classes, index = _class_indices(path, raw, classes, frame["image"])
        frame[column] = index
        frame["label_name"] = [classes[i] for i in index]
    else:
        values = pd.to_numeric(raw, errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))
        if len(bad):
            i = int(bad[0])
            raise ManifestError(f"{path}: `label` = {raw.iloc[i]!r} at {_line(i)} (image {frame['image'].iloc[i]!r}) "
                                f"is not a finite number; --task {task} needs a number per image")
        frame[column] = values.to_numpy(dtype=float)
        classes = None
    if GROUP in table.columns:
        groups = table[GROUP].str.strip()
        empty = np.flatnonzero((groups == "").to_numpy())
        if len(empty):
            raise ManifestError(f"{path}: `{GROUP}` is empty at {_line(int(empty[0]))} (image "
                                f"{frame['image'].iloc[int(empty[0])]!r}; {len(empty)} such row(s)); give every row "
                                f"its group (e.g. its reference image), or drop the column")
        frame[GROUP] = groups
    for c in split_columns(table):
        frame[c] = table[c].str.strip()
    return frame, classes


def _normalised(value: str) -> str:
    """An image path as one spelling: stripped, ``.`` and ``x/..`` resolved, doubled ``/`` merged (``./a.png``,
    ``sub/../a.png`` → ``a.png``). Absolute paths and paths that leave the root stay as they are, for
    :func:`~percept.data.manifest.validate_manifest` to refuse by name."""
    text = value.strip()
    if not text or text.startswith("/") or "\\" in text:
        return text
    normal = posixpath.normpath(text)
    return text if normal == ".." or normal.startswith("../") else normal


def _refuse_duplicates(path: Path, raw: pd.Series, images: pd.Series) -> None:
    """One image named twice (after normalisation) would be two rows, possibly in train and test: refused."""
    dup = images.duplicated(keep=False).to_numpy()
    if dup.any():
        first = images[dup].iloc[0]
        rows = np.flatnonzero((images == first).to_numpy())
        spellings = ", ".join(repr(raw.iloc[int(i)].strip()) for i in rows)
        raise ManifestError(f"{path}: CSV lines {', '.join(str(int(i) + 2) for i in rows)} name the same image "
                            f"{first!r} ({spellings}); {int(images.duplicated().sum())} duplicate row(s) in all - "
                            f"keep one row per image")


def _class_indices(path: Path, raw: pd.Series, classes, images: pd.Series) -> tuple[list[str], list[int]]:
    negative = np.flatnonzero(raw.str.fullmatch(r"-\d+").to_numpy())
    if len(negative):
        i = int(negative[0])
        raise ManifestError(f"{path}: {_line(i)} (image {images.iloc[i]!r}) has the class index {raw.iloc[i]}; class "
                            f"indices count from 0 (or give class names)")
    numeric = raw.str.fullmatch(r"\d+").all()
    if classes is None:
        if numeric:
            raise ManifestError(f"{path}: the labels are class indices; give the class names in order "
                                f"(--classes NAME,NAME,...) so that the results can name them")
        classes = sorted(raw.unique())
    classes = [str(c).strip() for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"the class list has duplicates: {classes}")
    if numeric:
        index = raw.astype(int).tolist()
        bad = [i for i, v in enumerate(index) if v >= len(classes)]
        what = lambda i: f"class index {index[i]} (there are {len(classes)} classes: {', '.join(classes)})"  # noqa: E731
    else:
        lookup = {c: k for k, c in enumerate(classes)}
        index = [lookup.get(v, -1) for v in raw]
        bad = [i for i, v in enumerate(index) if v < 0]
        what = lambda i: f"class {raw.iloc[i]!r}, which is not in the list ({', '.join(classes)})"  # noqa: E731
    if bad:
        i = bad[0]
        raise ManifestError(f"{path}: {_line(i)} (image {images.iloc[i]!r}) has {what(i)}; {len(bad)} such row(s). "
                            f"Fix the label or the class list (--classes)")
    return classes, index


def open_csv_dataset(path: str | Path, task: str, root: str | Path, classes=None, label_range=None,
                     name: str | None = None) -> tuple[DatasetCard, pd.DataFrame]:
    """The card and the manifest rows (with ``split1..splitK``) of a CSV dataset; see the module docstring."""
    path, root = Path(path).resolve(), Path(root)
    name = name or csv_dataset_name(path)
    frame, classes = read_user_csv(path, task, classes)
    card = csv_card(name, task, classes, label_range)
    given = split_columns(frame)
    validate_manifest(frame.drop(columns=given), card, str(path))    # paths, duplicates, NaN, range, classes
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: --root {root} is not a folder (the folder the CSV's image paths are under)")
    absent = [p for p in frame["image"] if not (root / p).is_file()]
    if absent:
        raise FileNotFoundError(f"{path}: {len(absent)} of {len(frame)} image(s) are not under {root}: "
                                f"{', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''}")
    problems = [why for why in (header_problem(root / p) for p in frame["image"]) if why]
    if problems:                                   # named now, not hours into training
        raise ManifestError(f"{path}: {len(problems)} image(s) cannot be used: {problems[0]}"
                            f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; fix or drop them")
    _write_manifest(frame.drop(columns=given), path, card)
    groups = GROUP if GROUP in frame.columns else None
    if given:
        try:
            validate_split_columns(frame, groups)
        except SplitError as err:
            raise SplitError(f"{path}: {err}") from err
        return card, frame
    return card, frame.merge(_protocol_splits(path, frame, card), on="image", how="left", validate="one_to_one")


def manifest_path(path: Path) -> Path:
    return sidecar_folder(path) / (path.stem + ".percept_manifest.csv")


def splits_path(path: Path) -> Path:
    return sidecar_folder(path) / (path.stem + ".splits.csv")


def sidecar_folder(path: Path) -> Path:
    """Where the CSV's manifest and splits live: beside it, or — when its folder cannot be written (read-only
    media, another user's folder) and holds none yet — in percept's cache (``$PERCEPT_CACHE`` or
    ``~/.cache/percept``), under a name made from the CSV's absolute path."""
    path = Path(path).resolve()
    beside = path.parent
    if (beside / (path.stem + ".splits.csv")).is_file() or _writable(beside):
        return beside
    cache = Path(os.environ.get("PERCEPT_CACHE") or Path.home() / ".cache" / "percept")
    return cache / "csv" / hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _writable(folder: Path) -> bool:
    """True when a file can be created in ``folder`` (tried, not guessed: root ignores permission bits, and a
    read-only filesystem is not in them)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _write_manifest(frame: pd.DataFrame, path: Path, card: DatasetCard) -> None:
    """The manifest as percept read it, beside the CSV, with the CSV's sha256; rewritten when the CSV changes."""
    out, digest = manifest_path(path), _sha256(path)
    if out.is_file():
        try:
            if read_sidecar(out).get("source_sha256") == digest:
                read_manifest(out, card)             # its own sha256 verified too
                return
        except ManifestError:
            pass                                     # stale or edited: written again from the CSV
    write_manifest(frame, out, card, extra={"source_csv": path.name, "source_sha256": digest,
                                            "classes": list(card.classes or [])})


def _protocol_splits(path: Path, frame: pd.DataFrame, card: DatasetCard) -> pd.DataFrame:
    """The seeded protocol splits of the CSV's images (by ``group`` when it has one), drawn once and written
    beside it, then reused — after checking that they still hold the CSV's images and never split a group."""
    out = splits_path(path)
    groups = frame[GROUP].tolist() if GROUP in frame.columns else None
    if out.is_file():
        table = read_splits(out, dataset=card.name)
        if set(table["image"]) != set(frame["image"]):
            added = sorted(set(frame["image"]) - set(table["image"]))
            removed = sorted(set(table["image"]) - set(frame["image"]))
            raise SplitError(f"{path}: its images changed since {out.name} was drawn ({len(added)} added, e.g. "
                             f"{added[:3]}; {len(removed)} removed, e.g. {removed[:3]}). Runs on the old splits are "
                             f"not comparable with new ones: delete {out} (and its .json) to draw new splits, or "
                             f"restore the CSV")
        if groups is not None:
            try:
                validate_split_columns(frame[["image", GROUP]].merge(table, on="image"), GROUP)
            except SplitError as err:
                raise SplitError(f"{path}: {out.name} puts one group in two parts ({err}); it was drawn before the "
                                 f"`{GROUP}` column: delete {out} (and its .json) to draw grouped splits") from None
        return table
    images = frame["image"].tolist()
    if groups is not None and len(set(groups)) < 2:
        raise SplitError(f"{path}: every row is in group {groups[0]!r}; splitting by group needs several groups (one "
                         f"per reference image, say) so that train and test differ - fix the `{GROUP}` column or "
                         f"drop it")
    n, units = (len(set(groups)), "groups") if groups is not None else (len(images), "images")
    try:
        if card.task == "iqa":
            table = iqa_authentic_splits(images) if groups is None else iqa_synthetic_splits(images, groups)
        else:
            table = random_splits(images, 5, (0.75, 0.05, 0.20), groups=groups)
        for column in split_columns(table):          # model selection needs a validation part (§3.1)
            missing = [part for part in ("train", "val", "test") if not (table[column] == part).any()]
            if missing:
                raise SplitError(f"{column} has no {' and no '.join(missing)} part")
        protocol = (PROTOCOL if groups is None else GROUPED_PROTOCOL)[card.task]
        write_splits(table, out, dataset=card.name, protocol=protocol, groups=groups)
    except SplitError as err:
        need = "" if groups is None else (" (at least 7 groups for IQA, 11 otherwise, give every split a "
                                          "validation part)")
        raise SplitError(f"{path}: {n} {units} are too few for the protocol's splits ({err}){need}; add rows"
                         f"{' or groups' if groups is not None else ''}, or give split columns split1..splitK") from None
    return read_splits(out, dataset=card.name)
