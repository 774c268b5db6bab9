"""Fixture datasets: tiny stand-ins for every dataset card, written in the dataset's OFFICIAL layout.

A fixture is *plumbing data*. It has the file names, label files and split files that
:func:`percept.data.prepare.prepare` reads from the real download (each card's ``official_layout``), so
that ``percept prepare``, the split code, the training engine and every table of ``reproduce.yaml`` can
run end to end (``percept reproduce --smoke``, CI) without the real datasets. Its images are small
generated pictures (seeded noise + a gradient + a brightness level; emotion images also a tint per class)
and its labels are **not human judgements**: they are a noisy increasing function of each image's
brightness level (emotion: the class of the folder or item), inside the card's ``label_range``, so
that they vary and are learnable. Numbers computed on fixtures are never comparable with the paper's.

Everything is deterministic given ``seed`` (default 0). Images are 48x64 to 96x64 pixels (the
pipelines upscale them) and saved in the format the release uses (.bmp, .JPG, .jpg or .png, as the
file name says). What is generated, per dataset (train/val/test = parts of splits 1 and 2):

* ``livec``: ``ChallengeDB_release/Data/All{Images,MOS,StdDev}_release.mat`` listing the 7 subject-
  training images t1..t7.bmp (written to ``Images/trainingImages/``, dropped by the preparer) then 32
  images of ``Images/`` whose names are taken from the committed split file
  ``data_manifests/splits/livec.csv`` (:data:`PINNED_PLAN`: 19/3/10 in splits 1 and 2; .bmp and .JPG as
  named there).
* ``koniq10k``: ``koniq10k_distributions_sets.csv`` (``c1..c5`` rating distributions, ``MOS`` 1-100,
  ``SD``, ``set``) and ``1024x768/NAME.jpg``, 32 names from ``data_manifests/splits/koniq10k.csv``
  (19/3/10).
* ``spaq``: the CSV export ``Annotations/MOS and Image attribute scores.csv`` (``Image name``, ``MOS``,
  5 attribute scores) and ``TestImage/NNNNN.jpg``; 36 images (computed splits 26/3/7).
* ``flive``: ``labels_image.csv`` (``name,mos,height,width``) and ``database/<sub folder>/NAME.jpg``; 36
  images (26/3/7).
* ``live``: full ``dmos_realigned.mat`` (``dmos_new``, ``orgs``), ``dmos.mat`` and ``refnames_all.mat``
  with all 982 entries (29 reference names; the first entry of each reference in each distortion folder
  is its undistorted copy, ``orgs == 1``), but only 36 images: 3 distorted ``.bmp`` images (from 3
  folders) of each of 12 references, so it is prepared with ``allow_partial=True`` (27/3/6).
* ``tid2013``: ``mos_with_names.txt`` (``MOS iNN_DD_L.bmp``), ``mos_std.txt`` and
  ``distorted_images/``; 12 references x 3 distorted images (27/3/6).
* ``kadid10k``: ``dmos.csv`` (``dist_img,ref_img,dmos,var``; 1-5) and ``images/INN_TT_LL.png``; 12
  references x 3 (27/3/6).
* ``lamem``: ``splits/{train,val,test}_{1..5}.txt`` (``00012345.jpg 0.712345``; every image in exactly
  one part of each split, 29/3/8, with a score that differs between splits) and ``images/``; 40 images.
* ``things`` (assumed format, see its card): ``things_memorability.csv`` (``image_name,hr,far,cr``)
  and ``object_images/{concept}/{concept}_NNx.jpg``: 20 concepts x 2 images.
* ``sun_memorability`` (assumed layout): ``Data/Experiment data/sorted_target_data.mat`` (44 targets:
  40 scenes + 4 "textures"), ``Data/Image data/target_images.mat`` (``img``: 64x64x3x44 uint8) and
  ``Data/Random splits/image_{train,test}_indices.mat`` (25 rows: 20 train, 18 test, 2 in neither);
  prepared with the option ``n_images=40``.
* ``emoset``: ``train.json`` / ``val.json`` / ``test.json`` (items ``[emotion, image_id, image_path,
  annotation_path]``; 3 / 1 / 1 images of each of the 8 classes: 24/8/8) and ``info.json``
  (``emotion.label2idx`` in the card's class order); images ``image/{class}/{class}_NNNNN.jpg`` (the
  annotation files are not written: the preparer does not read them). One official split.
* ``emotionroi`` (folder ``emotion6``): ``images/{class}/N.jpg``, 32 names from
  ``data_manifests/splits/emotionroi.csv`` (19/3/10, several classes in every part), and
  ``ground_truth.txt`` in Emotion6's tab-separated format (valence, arousal, 7-way distribution).
* ``memcat``: ``memcat_image_data.csv`` (the official columns) and
  ``images/{category}/{subcategory}/NNNNNNNNNNNN.jpg``: 5 categories x 2 subcategories x 4 images.

Use :func:`prepare_fixtures` to write and prepare several datasets under one data root (the layout
``reproduce.yaml`` expects), or :func:`write_fixture` for one folder.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Iterable, Mapping

from .cards import CARDS, get_card
from .fixture_files import _rng, _write_text
from .fixture_writers import (  # noqa: F401 (public API)
    FIXTURE_WRITERS,
    PINNED_PLAN,
    FixtureError,
    FixtureSpec,
    _pinned_sha,
    pinned_fixture_images,
)
from .manifest import read_manifest
from .pinned import PINNED_DATASETS, load_pinned_splits, pinned_split_path, split_key
from .prepare import DEFAULT_MANIFEST, prepare

FIXTURE_VERSION = 1
MARKER = ".percept_fixture.json"           # written in each fixture folder by prepare_fixtures
DATASET_FOLDERS = {"emotionroi": "emotion6"}  # folder under the data root when not the name (reproduce.yaml)


# ----------------------------------------------------------------------------- public API
def write_fixture(name: str, root, *, seed: int = 0) -> FixtureSpec:
    """Write the fixture of dataset ``name`` into ``root`` (created; should be empty) in the dataset's
    official layout; returns how to prepare it (:class:`FixtureSpec`). Deterministic given ``seed``."""
    name = get_card(name).name
    return FIXTURE_WRITERS[name](Path(root), _rng(name, seed))


def fixture_folder(name: str, folders: Mapping[str, str] | None = None) -> str:
    """The folder of dataset ``name`` under a data root (``reproduce.yaml``'s ``dataset_roots``)."""
    name = get_card(name).name
    return {**DATASET_FOLDERS, **(folders or {})}.get(name, name)


def _stamp(name: str, seed: int) -> dict:
    return {"dataset": name, "seed": int(seed), "fixture_version": FIXTURE_VERSION,
            "pinned_sha256": _pinned_sha(name), "complete": True}


def _is_current(root: Path, stamp: dict) -> bool:
    try:
        if json.loads((root / MARKER).read_text(encoding="utf-8")) != stamp:
            return False
        read_manifest(root / DEFAULT_MANIFEST)
    except (OSError, ValueError):
        return False
    return True


def _clear(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise FixtureError(f"{str(root)!r} exists and is not a folder; cannot write a fixture there")
    if not any(root.iterdir()):
        return
    if not (root / MARKER).is_file():
        raise FixtureError(f"{str(root)!r} is not empty and has no fixture marker {MARKER}; refusing to overwrite "
                           f"what may be a real dataset - choose an empty data root for fixtures")
    shutil.rmtree(root)


def prepare_fixtures(data_root, names: Iterable[str] | None = None, *, seed: int = 0,
                     folders: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write and prepare (:func:`percept.data.prepare.prepare`) the fixture of each dataset in ``names``
    (default: every card) under ``data_root/<folder>`` (:func:`fixture_folder`; ``folders`` overrides,
    e.g. ``reproduce.yaml``'s ``dataset_roots``); returns name -> dataset root.

    Idempotent: a folder whose marker (``.percept_fixture.json``: dataset, seed, fixture version and the
    pinned split file's checksum) matches and whose manifest verifies is left as it is; a stale fixture
    folder is deleted and rewritten (deterministically). A non-empty folder without the marker is never
    touched (:class:`FixtureError`). The warnings ``prepare`` gives for fixtures - too few rows for the
    paper, partial manifest (LIVE) - are expected and suppressed here; other warnings pass through.
    """
    data_root = Path(data_root)
    out: dict[str, Path] = {}
    for name in (list(CARDS) if names is None else [get_card(n).name for n in names]):
        root = data_root / fixture_folder(name, folders)
        stamp = _stamp(name, seed)
        if not _is_current(root, stamp):
            _clear(root)
            root.mkdir(parents=True, exist_ok=True)
            _write_text(root / MARKER, json.dumps({**stamp, "complete": False}))
            spec = write_fixture(name, root, seed=seed)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*(but the paper uses|partial manifest - )",
                                        category=UserWarning)
                df, _ = prepare(name, root, **spec.prepare_kwargs())
            if len(df) != spec.rows:
                raise FixtureError(f"{name}: the prepared fixture has {len(df)} rows, expected {spec.rows}")
            if name in PINNED_DATASETS:
                listed = set(load_pinned_splits(name)["image"])
                stray = [p for p in df["image"] if split_key(name, p) not in listed]
                if stray:
                    raise FixtureError(f"{name}: fixture images not in the pinned split file "
                                       f"{str(pinned_split_path(name))!r}: {', '.join(stray[:5])}")
            _write_text(root / MARKER, json.dumps(stamp))
        out[name] = root
    return out
