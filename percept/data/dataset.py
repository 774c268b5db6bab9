"""One manifest-driven dataset class for every task and dataset (IQA, memorability, emotion).

A manifest (written by ``percept.data.manifest``) has one row per image: ``image`` (POSIX path relative to
the dataset root), label columns (``quality``, ``memorability``, ``label``) and split columns
``split1..splitK`` holding "train"/"val"/"test"/"".

IQA training repeats every image ``replicas`` times per epoch, each replica independently augmented
(App. A.1: "each image is augmented into 3 to 10 replicas, depending on the dataset", following LoDa, whose
``train.patch_num`` per dataset is in :data:`LODA_IQA_PRESETS` together with its per-dataset pre-resize).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..core.images import load_rgb
from ..core.tasks import get_task
from .cards import CARDS
from .preprocessing import build_transform

DEFAULT_LABEL_COLUMN = {"iqa": "quality", "memorability": "memorability", "emotion": "label"}

# LoDa (Xu et al. 2024a, github.com/NeosXu/LoDa) per IQA dataset: the pre-resize its loaders read with the
# interpolation its scripts/process_*.py used and the replicas per epoch (config/job/train_loda_*.yaml
# ``train.patch_num``) -- all facts of the dataset cards (percept.data.cards is the one source).
LODA_IQA_PRESETS = {card.name: {"resize": card.pre_resize, "interpolation": card.pre_resize_interpolation,
                                "replicas": card.train_replicas} for card in CARDS.values() if card.task == "iqa"}


class ManifestDataset(Dataset):
    """Rows of ``manifest`` whose split column ``split<split>`` says ``part`` (``split=None``: every row).
    ``split`` is the split's number (1-based) everywhere in percept; ``part`` is train/val/test.

    Item ``i`` is row ``i % n_rows`` (``replicas`` passes over the rows), returned as
    ``{"image": (3, 224, 224) tensor, or (15, 3, 224, 224) IQA test crops, "label": float32 scalar
    (int64 for emotion), "index": the row's position in ``manifest``, "id": the relative image path}``.

    ``transform`` defaults to ``build_transform(task, train=(part == "train"))`` (the IQA test crops' positions
    are a function of the image's size alone, ``preprocessing.iqa_crop_positions``).  With
    ``cache`` (an :class:`~percept.data.cache.ImageCache`) images come pre-resized from the cache instead of
    being decoded; its resize spec must be the transform's ``pre_resize`` stage, which makes the result
    identical to reading the files.
    """

    def __init__(self, manifest: pd.DataFrame | str | os.PathLike, root: str | os.PathLike,
                 split: int | None = 1, part: str = "train", *, task: str, label_column: str | None = None,
                 transform=None, replicas: int = 1, cache=None):
        get_task(task)
        if isinstance(replicas, bool) or not isinstance(replicas, (int, np.integer)) or replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas!r}")
        if not isinstance(manifest, pd.DataFrame):
            manifest = pd.read_csv(manifest, dtype={"image": str}, keep_default_na=False, na_values={})
        self.root, self.task, self.split, self.part, self.replicas = Path(root), task, split, part, int(replicas)
        self.label_column = label_column or DEFAULT_LABEL_COLUMN[task]
        for column in ("image", self.label_column):
            if column not in manifest.columns:
                raise ValueError(f"manifest has no column {column!r}; columns: {', '.join(map(str, manifest.columns))}")

        if split is None:
            rows = np.arange(len(manifest))
        else:
            if isinstance(split, bool) or not isinstance(split, (int, np.integer)) or split < 1:
                raise ValueError(f"split must be a split number >= 1 (or None for every row), got {split!r}")
            column = f"split{split}"
            split_columns = [c for c in manifest.columns if str(c).startswith("split")]
            if column not in manifest.columns:
                raise ValueError(f"manifest has no split column {column!r}; available: {', '.join(split_columns) or 'none'}")
            values = manifest[column].fillna("").astype(str)
            rows = np.flatnonzero((values == part).to_numpy())
            if len(rows) == 0:
                parts = sorted({v for v in values if v})
                raise ValueError(f"split column {column!r} has no rows with part {part!r}; "
                                 f"parts present: {', '.join(parts) or 'none'}")
        self.rows = rows
        self.ids: list[str] = [str(p) for p in manifest["image"].iloc[rows]]
        self._labels = self._read_labels(manifest[self.label_column].iloc[rows])

        self.transform = transform if transform is not None else build_transform(task, train=(part == "train"))
        self.cache = cache
        if cache is not None:
            expected = getattr(self.transform, "pre_resize", None)
            if expected is not None and cache.spec != expected:
                raise ValueError(f"image cache {cache.index_path} holds images resized by {cache.spec}, but this "
                                 f"transform resizes by {expected}; build the cache with transform.pre_resize")
            absent = [p for p in self.ids if p not in cache]
            if absent:
                raise ValueError(f"{len(absent)} image(s) of this dataset are not in the image cache "
                                 f"{cache.index_path}, e.g. {absent[0]!r}; rebuild it with these images")

    def _read_labels(self, column: pd.Series) -> np.ndarray:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        classes = get_task(self.task).is_classification
        if classes:
            bad = np.union1d(bad, np.flatnonzero(np.isfinite(values) & (values != np.round(values))))
        if len(bad):
            shown = ", ".join(f"row {self.rows[i]} ({self.ids[i]}: {column.iloc[i]!r})" for i in bad[:5])
            kind = "integer class indices" if classes else "finite numbers"
            raise ValueError(f"column {self.label_column!r} must hold {kind}; bad values in {len(bad)} row(s): {shown}")
        return values.astype(np.int64) if classes else values.astype(np.float32)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the selected rows (one per image, not per replica): float32, or int64 for emotion."""
        return self._labels.copy()

    @property
    def n_rows(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return self.replicas * self.n_rows

    def load_image(self, row: int):
        """The RGB image of selected row ``row`` (from the cache when there is one)."""
        relative = self.ids[row]
        if self.cache is not None:
            return self.cache.get(relative)
        path = self.root / relative
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} not found (manifest row {self.rows[row]}, "
                                    f"image={relative!r}, root={self.root})")
        return load_rgb(path)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        row = int(i) % self.n_rows
        image = self.load_image(row)
        if self.transform is not None:
            image = self.transform(image)
        dtype = torch.int64 if self._labels.dtype == np.int64 else torch.float32
        return {"image": image, "label": torch.tensor(self._labels[row], dtype=dtype),
                "index": int(self.rows[row]), "id": self.ids[row]}

    def __repr__(self) -> str:
        return (f"ManifestDataset(task={self.task!r}, root={str(self.root)!r}, split={self.split!r}, "
                f"part={self.part!r}, rows={self.n_rows}, replicas={self.replicas})")
