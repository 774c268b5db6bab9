"""Datasets as the training engine sees them: a prepared manifest + its splits + the task's recipe.

A :class:`DataConfig` names a dataset and where it lives; :func:`open_source` turns it into a
:class:`DatasetSource`: the manifest rows with split columns ``split1..splitK`` attached, the task
(``iqa`` / ``memorability`` / ``emotion``: transforms and loss), the label column, the class names,
and the IQA training replicas from the dataset card (LoDa's pre-resize: :func:`dataset_transform`). ``source.dataset(k, part)``
returns the :class:`~percept.data.dataset.ManifestDataset` of split ``k``'s ``part`` with the task's
transform (App. A.1).

Real datasets come from ``percept prepare NAME --root ROOT`` (manifest at ``ROOT/percept_manifest.csv``
by default); their splits are the pinned files in ``data_manifests/splits`` where they exist, else the
protocol of :mod:`percept.data.splits` computed from the manifest (LaMem and EmoSet: the official
split columns the preparer copied).

The embedded demo sets (generated on first use, offline, deterministic; see
:mod:`percept.data.synthetic`) are *not* human judgements and are named for what they are:

* ``synthetic_iqa`` — IQA pipeline (PLCC loss, 15-crop test) on ``synthetic_quality``, a fixed
  function of the distortion level;
* ``synthetic_strength`` — memorability pipeline (MSE) on ``distortion_strength`` = (level − 1) / 4
  in [0, 1] (a regression target in the memorability score range);
* ``synthetic_distortion`` — emotion pipeline (cross-entropy) on the distortion *type* (4 classes).

All three split by reference image (as synthetic IQA datasets, paper §4.1): no reference in two parts.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.images import CLIP_MEAN, CLIP_STD
from ..core.tasks import get_task
from .cache import ImageCache
from .cards import CARDS, SYNTHETIC_TASKS, get_card
from .dataset import LODA_IQA_PRESETS, ManifestDataset
from .manifest import read_manifest
from .pinned import splits_for_manifest
from .preprocessing import (
    N_TEST_CROPS,
    TaskTransform,
    TestPreprocessing,
    build_transform,
)
from .splits import iqa_synthetic_splits, split_columns
from .synthetic import DISTORTIONS, generate_synthetic_iqa
from .user_csv import (
    CSV_PREFIX,
    csv_card,
    csv_dataset_name,
    open_csv_dataset,
    read_user_csv,
)

SYNTHETIC = {
    # name: (task, label column, class names)
    "synthetic_iqa": (SYNTHETIC_TASKS["synthetic_iqa"], "synthetic_quality", None),
    "synthetic_strength": (SYNTHETIC_TASKS["synthetic_strength"], "distortion_strength", None),
    "synthetic_distortion": (SYNTHETIC_TASKS["synthetic_distortion"], "distortion_id", tuple(DISTORTIONS)),
}
SYNTHETIC_REFERENCES = 12   # 12 references x 4 distortions x 5 levels = 240 images (the demo default)
SYNTHETIC_SPLITS = 5


def is_synthetic(name: str) -> bool:
    """True for the embedded demo sets (labels computed from distortion parameters, not human judgements)."""
    return str(name) in SYNTHETIC


def dataset_task(name: str) -> str:
    """``iqa``, ``memorability`` or ``emotion``: the task of a dataset (its card, or the embedded set's)."""
    if name in SYNTHETIC:
        return SYNTHETIC[name][0]
    return get_card(name).task


def dataset_facts(entry: dict) -> tuple[str, str, tuple[str, ...] | None, tuple[float, float] | None]:
    """``(name, task, class names, training-label range)`` of one dataset of a run (an entry of its config.json
    ``data``): a card's, a CSV dataset's (registered from the entry, so that the CSV need not be here) or an
    embedded demo set's (range None: not human judgements)."""
    config = DataConfig(**entry)
    if config.dataset in SYNTHETIC:
        task, _, classes = SYNTHETIC[config.dataset]
        return config.dataset, task, classes, None
    card = get_card(config.dataset)
    return card.name, card.task, card.classes, card.label_range


def dataset_transform(name: str, train: bool, *, test_crops: int = N_TEST_CROPS,
                      normalization: tuple | None = None) -> TaskTransform:
    """The App. A.1 transform of dataset ``name``: its task's, with LoDa's pre-resize and interpolation for
    an IQA dataset (``LODA_IQA_PRESETS``), normalised with ``normalization`` = ``(mean, std)`` of the run's
    backbone (``percept.model.backbones.normalization``; None: CLIP's). The one place a dataset's transform is
    made: training, validation, test, cross-dataset evaluation, head fine-tuning (via
    :meth:`DatasetSource.dataset`) and ``percept predict`` on a run all use it (the test transform through
    :func:`dataset_test_preprocessing`, which exports carry)."""
    if not train:
        return dataset_test_preprocessing(name, test_crops=test_crops, normalization=normalization).transform()
    task = dataset_task(name)
    preset = LODA_IQA_PRESETS.get(name, {}) if task == "iqa" else {}
    mean, std = normalization if normalization is not None else (CLIP_MEAN, CLIP_STD)
    return build_transform(task, train, preset.get("resize"), resize_interpolation=preset.get("interpolation"),
                           n_crops=test_crops, mean=mean, std=std)


def dataset_test_preprocessing(name: str, *, test_crops: int = N_TEST_CROPS,
                               normalization: tuple | None = None) -> TestPreprocessing:
    """The test transform of dataset ``name`` as data (:class:`TestPreprocessing`; see :func:`dataset_transform`)."""
    task = dataset_task(name)
    preset = LODA_IQA_PRESETS.get(name, {}) if task == "iqa" else {}
    mean, std = normalization if normalization is not None else (CLIP_MEAN, CLIP_STD)
    return TestPreprocessing(task, preset.get("resize"), preset.get("interpolation") or "bicubic",
                             n_crops=int(test_crops), mean=tuple(float(v) for v in mean),
                             std=tuple(float(v) for v in std))


@dataclass
class DataConfig:
    """One dataset of a run. ``root``: the folder the manifest's image paths are relative to.

    A CSV of your own (:mod:`percept.data.user_csv`): ``dataset="csv:PATH"`` with ``task`` (and for emotion
    ``classes``, else the sorted names of its ``label`` column); it becomes ``dataset="csv-<stem>"`` with ``csv``
    = the absolute path, so that the run's config.json says everything needed to rebuild its model."""

    dataset: str
    root: str
    manifest: str | None = None      # default ROOT/percept_manifest.csv (synthetic: ROOT/manifest.csv)
    label_column: str | None = None  # default: the card's training column
    csv: str | None = None           # a CSV dataset's file (set from dataset="csv:PATH")
    task: str | None = None          # a CSV dataset's task: iqa, memorability or emotion
    classes: list[str] | None = None             # a CSV emotion dataset's class names, in order
    label_range: list[float] | None = None       # a CSV regression dataset's valid label range

    def __post_init__(self):
        self.root = str(self.root)
        if str(self.dataset).startswith(CSV_PREFIX):
            self.csv, self.dataset = str(Path(self.dataset[len(CSV_PREFIX):]).resolve()), None
        if self.csv is not None:
            self._csv_card()
        elif self.task or self.classes or self.label_range:
            raise ValueError(f"task/classes/label_range are for a CSV dataset (csv:PATH); {self.dataset!r} has a card")
        elif self.dataset not in CARDS and self.dataset not in SYNTHETIC:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join([*CARDS, *SYNTHETIC])}, "
                             f"or csv:PATH with a task")

    def _csv_card(self) -> None:
        if self.task is None:
            raise ValueError(f"csv:{self.csv}: say what its labels are with task= (--task iqa|memorability|emotion)")
        self.dataset = self.dataset or csv_dataset_name(self.csv)
        self.root = str(Path(self.root).resolve())       # stored absolute: a run must not depend on the cwd
        if self.task == "emotion" and self.classes is None:
            self.classes = read_user_csv(self.csv, self.task)[1]          # the sorted names of its label column
        self.classes = list(self.classes) if self.classes is not None else None
        self.label_range = list(self.label_range) if self.label_range is not None else None
        csv_card(self.dataset, self.task, self.classes, self.label_range)   # get_card(dataset) knows it now

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None or k in ("manifest", "label_column")}


@dataclass
class DatasetSource:
    name: str
    task: str
    label_column: str
    class_names: tuple[str, ...] | None
    root: Path
    frame: pd.DataFrame          # manifest rows + split1..splitK
    replicas: int = 1            # IQA: LoDa's per-dataset repeats of each training image per epoch
    split_label_column: str | None = None   # LaMem: "memorability_split{k}", split k's own official scores

    @property
    def kind(self) -> str:
        return get_task(self.task).kind

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.class_names else 1

    @property
    def n_splits(self) -> int:
        return len(split_columns(self.frame))

    def label_column_for(self, split: int | None) -> str:
        """The target column of split ``split``: LaMem's split k is trained, validated and tested on the
        official scores of split k's files (``memorability_split{k}``, the card's ``split_label_column``;
        scores differ between splits); every other dataset, and LaMem without a split (the whole dataset),
        uses ``label_column``."""
        if split is None or self.split_label_column is None:
            return self.label_column
        column = self.split_label_column.format(k=split)
        if column not in self.frame.columns:
            raise ValueError(f"{self.name}: the manifest of {self.root} has no column {column!r} (split {split}'s "
                             f"official scores); prepare the dataset again with `percept prepare {self.name} "
                             f"--root {self.root}`")
        return column

    def split_digest(self, split: int) -> str:
        """The SHA-256 of split ``split``'s assignment (each image and its part, by image): what a run on it
        trains, selects and tests on (``RunDir.check_splits``)."""
        table = self.frame[["image", f"split{split}"]].sort_values("image")
        return hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()

    def group_split(self, split: int) -> int:
        """Split ``split`` of a multi-dataset group (paper §3.2/§5.4): a dataset with several splits uses
        its split ``split``; a dataset with one official split (EmoSet) uses that one in every split of the
        group. A group's split k therefore pairs, e.g., EmotionROI split k with EmoSet's official split."""
        if self.n_splits == 1:
            return 1
        if not 1 <= split <= self.n_splits:
            raise ValueError(f"{self.name} has {self.n_splits} splits; split {split} of the group does not exist "
                             f"for it (choose 1..{self.n_splits})")
        return split

    def dataset(self, split: int | None, part: str, *, train_transform: bool | None = None,
                test_crops: int = N_TEST_CROPS, cache_dir: str | None = None,
                normalization: tuple | None = None) -> ManifestDataset:
        """Split ``split``'s ``part`` (``split=None``: every row, e.g. THINGS or cross-dataset use).

        Training items use the task's training transform and ``replicas``; val/test items the test
        transform (15 deterministic crops for IQA); both from :func:`dataset_transform`, normalised with
        ``normalization`` = ``(mean, std)`` of the model's backbone (None: CLIP's). With ``cache_dir``,
        images come from the pre-resized uint8 cache (:mod:`percept.data.cache`; built on first use, same
        pixels as decoding the files)."""
        train = part == "train" if train_transform is None else train_transform
        if split is not None and f"split{split}" not in self.frame.columns:
            raise ValueError(f"{self.name} has no split {split} (it has {self.n_splits}); choose 1..{self.n_splits}")
        transform = dataset_transform(self.name, train, test_crops=test_crops, normalization=normalization)
        cache = self._cache(transform.pre_resize, cache_dir) if cache_dir else None
        return ManifestDataset(self.frame, self.root, split, part,
                               task=self.task, label_column=self.label_column_for(split), transform=transform,
                               replicas=self.replicas if train else 1, cache=cache)

    def _cache(self, spec, cache_dir: str):
        """One cache per resize spec holding every image of the dataset (built once, then reused)."""
        caches = self.__dict__.setdefault("_caches", {})
        if spec not in caches:
            caches[spec] = ImageCache.build(self.root, self.frame["image"].tolist(), spec, cache_dir)
        return caches[spec]


def _synthetic_frame(name: str, root: Path) -> pd.DataFrame:
    if not (root / "manifest.csv").is_file():
        generate_synthetic_iqa(root, n_references=SYNTHETIC_REFERENCES, seed=0)
    frame = pd.read_csv(root / "manifest.csv", dtype={"image": str, "reference": str})
    frame["distortion_strength"] = (frame["level"] - 1) / 4.0
    splits = iqa_synthetic_splits(frame["image"].tolist(), frame["reference"].tolist(), n_splits=SYNTHETIC_SPLITS)
    return frame.merge(splits, on="image", how="left", validate="one_to_one")


def _real_frame(config: DataConfig) -> pd.DataFrame:
    manifest = Path(config.manifest) if config.manifest else Path(config.root) / "percept_manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{config.dataset}: no manifest at {manifest}; create it with "
                                f"`percept prepare {config.dataset} --root {config.root}` (or pass --manifest)")
    frame = read_manifest(manifest, get_card(config.dataset))
    return splits_for_manifest(config.dataset, frame)   # pinned file, official columns, or the protocol


def open_source(config: DataConfig) -> DatasetSource:
    """Load ``config``'s manifest with its splits (generating a synthetic set on first use)."""
    root = Path(config.root)
    if config.dataset in SYNTHETIC:
        task, label, classes = SYNTHETIC[config.dataset]
        frame = _synthetic_frame(config.dataset, root)
        return DatasetSource(config.dataset, task, config.label_column or label, classes, root, frame)
    if config.csv is not None:
        card, frame = open_csv_dataset(config.csv, config.task, root, config.classes, config.label_range,
                                       name=config.dataset)
        return DatasetSource(card.name, card.task, card.label_column, card.classes, root, frame)
    card = get_card(config.dataset)
    if not root.is_dir():
        raise FileNotFoundError(f"{card.name}: dataset root {root} is not a folder")
    frame = _real_frame(config)
    return DatasetSource(card.name, card.task, config.label_column or card.label_column, card.classes, root, frame,
                         replicas=int(card.train_replicas or 1),
                         split_label_column=None if config.label_column else card.split_label_column)


def check_trainable(source: DatasetSource, split: int, batch_size: int) -> None:
    """Refuse splits a run cannot learn from: too few training items for one batch, one class only, class
    indices outside the card's classes (checked here once, so that the loss need not check every batch)."""
    train = source.dataset(split, "train")
    if len(train) < batch_size:
        raise ValueError(f"{source.name} split {split}: the train part has {train.n_rows} images "
                         f"(x{train.replicas} replicas = {len(train)} items per epoch), fewer than batch_size="
                         f"{batch_size}; lower the batch size")
    if source.kind == "classification" and len(np.unique(train.labels)) < 2:
        raise ValueError(f"{source.name} split {split}: every training image has class "
                         f"{source.class_names[int(train.labels[0])]!r}; a classifier cannot be trained on one "
                         f"class - check the manifest's labels and split column")
    if source.kind == "regression" and np.ptp(train.labels) == 0:
        raise ValueError(f"{source.name} split {split}: all training labels equal {train.labels[0]:g}; "
                         f"nothing to learn - check the manifest's `{source.label_column_for(split)}` column")
    for part in ("train", "val", "test"):
        labels = train.labels if part == "train" else source.dataset(split, part).labels   # raises on an empty part
        outside = labels[(labels < 0) | (labels >= source.num_outputs)] if source.kind == "classification" else []
        if len(outside):
            raise ValueError(f"{source.name} split {split} {part}: {len(outside)} label(s) outside the class indices "
                             f"0..{source.num_outputs - 1} ({', '.join(source.class_names)}), e.g. {int(outside[0])}, "
                             f"in the manifest's `{source.label_column_for(split)}` column; fix the labels or the card's classes")

