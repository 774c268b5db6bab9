"""Pinned, seeded train/val/test splits for every benchmark of the paper (§4.1–4.3, Appendix A.2).

A split table is a :class:`pandas.DataFrame` with a column ``image`` and one column per split,
``split1`` … ``splitK``, whose values are ``"train"``, ``"val"``, ``"test"`` or ``""`` (not used).

The random protocols all use one recipe, that of LoDa (Xu et al., 2024a, "Boosting image quality
assessment through efficient transformer adaptation with local feature enhancement", CVPR 2024;
github.com/NeosXu/LoDa, ``scripts/process_*.py::get_random_splits``), whose splits the paper reuses
(§4.1, "the standard 10 splits provided by Xu et al. (2024a)"):

* one RNG seeded once with 3407 (we use ``random.Random(3407)``, whose stream is the same as LoDa's
  ``random.seed(3407)`` followed by module-level ``random.shuffle``);
* for split ``k = 1..K`` the *same* list ``list(range(n))`` is shuffled again **in place** (so split
  ``k`` starts from split ``k-1``'s permutation) and cut in order: the first ``int(round(0.8 * n))``
  are train, the rest test. LoDa's ``split_info[0..9]`` is our ``split1..split10``.

The indices are positions in the list we are given, so **order matters**: pass the images in the
row order of the dataset's manifest, as the project's preparation code writes it (for the
synthetic-distortion sets the units are the *sorted* reference ids instead; the image order is
then irrelevant). Exact equality with LoDa's pickles also needs the manifest to hold the same
images in the same order as LoDa's ``meta_info_*.csv`` files.

Our additions, which LoDa does not have (LoDa trains without a validation set): the paper reserves
10% of the training set for validation (§4.1). For split ``k`` we sort that split's train units by
position, shuffle them with a separate ``random.Random(3407 + k)`` and move the first
``int(round(0.1 * n_train))`` to ``"val"``; the test part is exactly LoDa's.

Pinning (:mod:`percept.data.pinned`): ``write_splits`` writes the CSV atomically with a JSON sidecar
holding counts and the SHA-256 of the CSV bytes; ``read_splits`` refuses a file that no longer matches it.
Which protocol a dataset uses (:data:`DATASET_PROTOCOLS`, keyed by card name), the committed split
files in ``data_manifests/splits`` and the splits of a given manifest are in :mod:`percept.data.pinned`.
"""
from __future__ import annotations

import random
import re
from typing import Hashable, Sequence

import numpy as np
import pandas as pd

PARTS = ("train", "val", "test")
SEED = 3407  # LoDa's seed (scripts/process_*.py: get_random_splits(seed=3407))
SPLIT_COLUMN = re.compile(r"^split(\d+)$")
_FORMAT = 1

PROTOCOLS: dict[str, str] = {
    "iqa_authentic": (
        "LIVEC, KonIQ-10k, SPAQ, FLIVE (§4.1): 10 splits, 80% train / 20% test over the images in manifest "
        "order, LoDa's recipe (random.seed(3407) once, successive in-place random.shuffle of list(range(n)), "
        "train = first int(round(0.8 n))); then 10% of each split's train images (int(round(0.1 n_train))) "
        "become val, chosen with random.Random(3407 + k) (our choice; LoDa has no val set)."),
    "iqa_synthetic": (
        "LIVE, TID2013, KADID-10k (§4.1): split by reference image, no reference in two parts. The unique "
        "reference ids are sorted, then LoDa's recipe runs over references (seed 3407, successive shuffles, "
        "train = first int(round(0.8 n_refs))); 10% of the train references become val with "
        "random.Random(3407 + k). LoDa's LIVE/TID2013 scripts shuffled list(set(refs)), an order that depends "
        "on string hashing (PYTHONHASHSEED), so those splits are not reproducible; its KADID-10k script sorts "
        "first, as we do for all three."),
    "lamem": (
        "LaMem (§4.2): the 5 official splits of Khosla et al. (2015), ~75% train / 5% val / 20% test, read "
        "from the official split files by the preparation code; only checked here (validate_split_columns)."),
    "emotionroi": (
        "EmotionROI (§4.3): 5 random splits 75% train / 5% val / 20% test ('randomly divided'); LoDa's "
        "recipe with seed 3407 (successive shuffles of one random.Random(3407)); optionally stratified by "
        "emotion label (off by default; the paper does not say it stratifies)."),
    "emoset": (
        "EmoSet (§4.3): the authors' official 80% train / 15% test / 5% val split (Yang et al., 2023), read "
        "from its files by the preparation code; only checked here (validate_split_columns)."),
    "sun_memorability": (
        "SUN memorability (Table A.2): 25 half/half train/test splits of the 2,222 images, as in Isola et al. "
        "(2011): the official ones (Data/Random splits/image_{train,test}_indices.mat), which the preparation "
        "code reads into split1..split25 ('none' = in neither part, used as ''). The official splits have no "
        "validation part, which model selection needs (§3.1): 10% of each split's train images "
        "(int(round(0.1 n_train))) become val, chosen with random.Random(3407 + k) as for IQA (our choice). "
        "Only for a manifest without split columns are 25 splits drawn instead with LoDa's recipe, seed 3407, "
        "fractions (0.5, 0, 0.5), then the same validation part - an assumption, not the original splits."),
    "things": (
        "THINGS memorability (§4.2): Table A.1 evaluates on the whole set (no split: `split=None`); Tables 5, "
        "A.5 and A.9 also train on THINGS without stating a split. Ours: 5 seeded splits 75% train / 5% val / "
        "20% test of the sorted THINGS concepts (LoDa's recipe, seed 3407), every image following its "
        "concept, so that no concept is in two parts (as LaMem has 5 splits)."),
    "user_random": (
        "A CSV dataset of your own (percept.data.user_csv), memorability or emotion: 5 seeded splits 75% train / "
        "5% val / 20% test of its images, LoDa's recipe with seed 3407 (the shape of LaMem's and EmotionROI's). "
        "An IQA CSV uses iqa_authentic."),
    "user_grouped": (
        "A CSV dataset of your own with a `group` column, memorability or emotion: user_random over the sorted "
        "groups (every row follows its group, no group in two parts). An IQA CSV with groups uses iqa_synthetic "
        "over its groups, as the synthetic IQA sets split by reference image."),
}

DATASET_PROTOCOLS: dict[str, str] = {
    "livec": "iqa_authentic", "koniq10k": "iqa_authentic", "spaq": "iqa_authentic", "flive": "iqa_authentic",
    "live": "iqa_synthetic", "tid2013": "iqa_synthetic", "kadid10k": "iqa_synthetic",
    "lamem": "lamem", "emotionroi": "emotionroi", "emoset": "emoset", "sun_memorability": "sun_memorability",
    "things": "things",
}


class SplitError(ValueError):
    """A split table or split file is invalid, leaks between parts, or does not match its sidecar."""


# --------------------------------------------------------------------------------------------- recipes

def _check_images(images: Sequence[Hashable]) -> list:
    images = list(images)
    if not images:
        raise SplitError("no images to split")
    dup = pd.Series(images)[pd.Series(images).duplicated()].unique()
    if len(dup):
        raise SplitError(f"{len(dup)} image id(s) appear more than once, e.g. {list(dup[:5])}")
    return images


def _counts(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    """(n_train, n_val) for ``n`` units, rounded as LoDa does (``int(round(f * n))``); test gets the rest."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise SplitError(f"fractions must be three non-negative numbers (train, val, test) summing to 1, "
                         f"got {fractions}")
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    if n_train + n_val > n:
        raise SplitError(f"fractions {tuple(fractions)} leave no room for the test part of {n} units")
    return n_train, n_val


def _unit_parts(n_units: int, n_splits: int, fractions: Sequence[float], seed: int,
                strata: np.ndarray | None = None) -> list[np.ndarray]:
    """LoDa's recipe over ``n_units`` units: one part label per unit for each split.

    Without ``strata``: one ``random.Random(seed)``; for each split the same list is shuffled in
    place and cut into train / val / test by ``_counts``. With ``strata`` (one code per unit) the
    same is done inside each stratum (strata in sorted order), all from that one RNG.
    """
    if n_splits < 1:
        raise SplitError(f"n_splits must be >= 1, got {n_splits}")
    rng = random.Random(seed)
    pools = ([list(range(n_units))] if strata is None
             else [list(np.flatnonzero(strata == s)) for s in np.unique(strata)])
    out = []
    for _ in range(n_splits):
        parts = np.empty(n_units, dtype=object)
        for pool in pools:
            rng.shuffle(pool)
            n_train, n_val = _counts(len(pool), fractions)
            parts[pool[:n_train]] = "train"
            parts[pool[n_train:n_train + n_val]] = "val"
            parts[pool[n_train + n_val:]] = "test"
        out.append(parts)
    return out


def _carve_validation(unit_parts: list[np.ndarray], fraction: float, seed: int) -> list[np.ndarray]:
    """Move ``int(round(fraction * n_train))`` train units of split k to val, chosen by ``random.Random(seed + k)``.

    The train units are taken in position order before the shuffle, so the choice depends only on
    which units are in train. The paper (§4.1) reserves 10% of train for validation; LoDa has none.
    """
    out = []
    for k, parts in enumerate(unit_parts, start=1):
        train = [int(i) for i in np.flatnonzero(parts == "train")]
        random.Random(seed + k).shuffle(train)
        parts = parts.copy()
        parts[train[:int(round(fraction * len(train)))]] = "val"
        out.append(parts)
    return out


def _frame(images: list, codes: np.ndarray, unit_parts: list[np.ndarray]) -> pd.DataFrame:
    cols = {"image": images}
    cols.update({f"split{k}": parts[codes].astype(str) for k, parts in enumerate(unit_parts, start=1)})
    return pd.DataFrame(cols)


def _units(images: list, groups: Sequence[Hashable] | None) -> tuple[int, np.ndarray]:
    """(number of units, unit index of each image): images themselves, or their sorted unique groups."""
    if groups is None:
        return len(images), np.arange(len(images))
    groups = list(groups)
    if len(groups) != len(images):
        raise SplitError(f"{len(groups)} group ids for {len(images)} images")
    keys = sorted(set(groups))  # sorted: a set's iteration order is not reproducible
    index = {g: i for i, g in enumerate(keys)}
    return len(keys), np.array([index[g] for g in groups])


def random_splits(images: Sequence[Hashable], n_splits: int, fractions: Sequence[float] = (0.8, 0.0, 0.2),
                  seed: int = SEED, groups: Sequence[Hashable] | None = None,
                  strata: Sequence[Hashable] | None = None) -> pd.DataFrame:
    """``n_splits`` random splits with LoDa's recipe (see the module docstring).

    ``fractions = (train, val, test)``; sizes are ``int(round(f * n))`` for train and val, the rest
    is test. With ``groups`` (e.g. reference ids) the units are the sorted unique groups and every
    image follows its group, so no group spans two parts. With ``strata`` (e.g. labels) the cut is
    made inside each stratum. ``images`` must be in manifest order (the order is part of the split).
    """
    images = _check_images(images)
    if groups is not None and strata is not None:
        raise SplitError("give groups or strata, not both")
    n_units, codes = _units(images, groups)
    strata_codes = None
    if strata is not None:
        strata = list(strata)
        if len(strata) != len(images):
            raise SplitError(f"{len(strata)} strata labels for {len(images)} images")
        strata_codes = np.unique(np.array([str(s) for s in strata]), return_inverse=True)[1]
    return _frame(images, codes, _unit_parts(n_units, n_splits, fractions, seed, strata_codes))


def iqa_authentic_splits(images: Sequence[Hashable], n_splits: int = 10, seed: int = SEED,
                         val_fraction: float = 0.1) -> pd.DataFrame:
    """LIVEC / KonIQ-10k / SPAQ / FLIVE (§4.1): LoDa's 10 splits 80/20, then 10% of train → val.

    ``images`` in manifest order. Train ∪ val and test equal LoDa's ``split_info[k-1]`` train / test
    when the manifest lists the same images in the same order as LoDa's meta-info file. LIVEC: LoDa
    splits ``range(1162)`` and its loader reads ``meta_info[7:]`` (the release without the 7 LIVE
    Challenge training images), so index i is the i-th of the 1,162 test images in the release's order,
    the i-th row of our manifest: the same splits.
    """
    images = _check_images(images)
    parts = _unit_parts(len(images), n_splits, (0.8, 0.0, 0.2), seed)
    return _frame(images, np.arange(len(images)), _carve_validation(parts, val_fraction, seed))


def iqa_synthetic_splits(images: Sequence[Hashable], references: Sequence[Hashable], n_splits: int = 10,
                         seed: int = SEED, val_fraction: float = 0.1) -> pd.DataFrame:
    """LIVE / TID2013 / KADID-10k (§4.1): split by reference image, 80/20 of the references, 10% of train refs → val.

    The unique references are **sorted** and LoDa's recipe runs over them. LoDa's KADID-10k script
    sorts too (so ours equals it there); its LIVE and TID2013 scripts iterated ``list(set(refs))``,
    whose order depends on string hashing, and used ``int(0.8 n)`` rather than ``int(round(0.8 n))``
    (the same counts for LIVE's 29 and TID2013's 25 references).
    """
    images = _check_images(images)
    n_refs, codes = _units(images, references)
    parts = _unit_parts(n_refs, n_splits, (0.8, 0.0, 0.2), seed)
    return _frame(images, codes, _carve_validation(parts, val_fraction, seed))


def emotionroi_splits(images: Sequence[Hashable], labels: Sequence[Hashable] | None = None,
                      stratify: bool = False, n_splits: int = 5, seed: int = SEED) -> pd.DataFrame:
    """EmotionROI (§4.3): 5 random splits 75% train / 5% val / 20% test, LoDa's recipe with seed 3407.

    The paper says "randomly divided", so the default is plain random; ``stratify=True`` (needs
    ``labels``) makes the cut within each emotion class instead.
    """
    if stratify and labels is None:
        raise SplitError("stratify=True needs the emotion labels")
    return random_splits(images, n_splits, (0.75, 0.05, 0.20), seed, strata=labels if stratify else None)


def sun_memorability_splits(images: Sequence[Hashable], n_splits: int = 25, seed: int = SEED) -> pd.DataFrame:
    """SUN memorability (Table A.2): 25 random half/half train/test splits drawn with LoDa's recipe.

    A fallback (an assumption, not Isola et al.'s 2011 splits): the official 25 splits, which the
    preparation code reads into the manifest, are used whenever the manifest has them. Either way 10% of
    train becomes val (:func:`carve_validation_parts`).
    """
    return carve_validation_parts(random_splits(images, n_splits, (0.5, 0.0, 0.5), seed), seed=seed)


def things_splits(images: Sequence[Hashable], concepts: Sequence[Hashable], n_splits: int = 5,
                  seed: int = SEED) -> pd.DataFrame:
    """THINGS memorability, for training (Tables 5, A.5, A.9; the paper states no split, this is ours): 5
    seeded splits 75/5/20 of the concepts (LoDa's recipe over the sorted unique concepts), every image in
    its concept's part. Generalisation (Table A.1) uses the whole dataset instead (no split)."""
    return random_splits(images, n_splits, (0.75, 0.05, 0.20), seed, groups=concepts)


def carve_validation_parts(table: pd.DataFrame, fraction: float = 0.1, seed: int = SEED) -> pd.DataFrame:
    """``table`` with ``int(round(fraction * n_train))`` train images of each split k moved to ``val``
    (``random.Random(seed + k)``, as the IQA protocol): for official splits without a validation part
    (SUN memorability)."""
    columns = split_columns(table)
    parts = _carve_validation([table[c].fillna("").astype(str).to_numpy(dtype=object) for c in columns],
                              fraction, seed)
    out = table.copy()
    for c, p in zip(columns, parts):
        out[c] = p
    return out


# ---------------------------------------------------------------------------------------- validation

def split_columns(df: pd.DataFrame) -> list[str]:
    """The ``splitK`` columns of ``df``, in numeric order."""
    return sorted((c for c in df.columns if SPLIT_COLUMN.match(str(c))), key=lambda c: int(c[5:]))


def validate_split_columns(df: pd.DataFrame, groups: Sequence[Hashable] | str | None = None) -> None:
    """Check a split table (ours, or official splits such as LaMem's or EmoSet's); raise :class:`SplitError`.

    * ``image`` is present, non-empty and unique, and there is at least one ``splitK`` column;
    * every split value is ``train``, ``val``, ``test`` or ``""`` (missing values count as ``""``);
    * with ``groups`` (a column name or one id per row, e.g. reference images) no group is in two
      parts of one split;
    * ``test`` is non-empty in every split, and a part used by any split is non-empty in all of them.
    """
    if "image" not in df.columns:
        raise SplitError("split table has no 'image' column")
    images = df["image"]
    if images.isna().any() or (images.astype(str) == "").any():
        raise SplitError("split table has empty image ids")
    dup = images[images.duplicated()].unique()
    if len(dup):
        raise SplitError(f"{len(dup)} image(s) appear in more than one row, e.g. {list(dup[:5])}")
    cols = split_columns(df)
    if not cols:
        raise SplitError("split table has no 'splitK' columns")
    if isinstance(groups, str):
        groups = df[groups]
    if groups is not None:
        groups = list(groups)
        if len(groups) != len(df):
            raise SplitError(f"{len(groups)} group ids for {len(df)} rows")
        groups = pd.Series(groups, index=df.index)
    values = {c: df[c].fillna("").astype(str) for c in cols}
    for col, v in values.items():  # all values first, so an invalid one is reported as such
        bad = sorted(set(v.unique()) - set(PARTS) - {""})
        if bad:
            raise SplitError(f"{col}: invalid value(s) {bad}; allowed: train, val, test or empty")
    used = set().union(*(set(v.unique()) for v in values.values())) - {""}
    for col, v in values.items():
        for part in sorted(used | {"test"}):
            if not (v == part).any():
                raise SplitError(f"{col}: the {part!r} part is empty")
        if groups is not None:
            mask = v != ""
            spans = v[mask].groupby(groups[mask]).agg(lambda s: sorted(set(s)))
            leaks = spans[spans.map(len) > 1]
            if len(leaks):
                g, parts = leaks.index[0], leaks.iloc[0]
                raise SplitError(f"{col}: group {g!r} is in parts {parts} ({len(leaks)} leaking group(s) in all)")


def attach_splits(manifest_df: pd.DataFrame, splits_df: pd.DataFrame) -> pd.DataFrame:
    """The manifest (its row order kept) with the split columns of ``splits_df`` joined on ``image``.

    Every manifest image must have splits and every split image must be in the manifest.
    """
    for name, df in (("manifest", manifest_df), ("split table", splits_df)):
        if "image" not in df.columns:
            raise SplitError(f"{name} has no 'image' column")
        if df["image"].duplicated().any():
            raise SplitError(f"{name} lists some images more than once")
    cols = split_columns(splits_df)
    clash = [c for c in cols if c in manifest_df.columns]
    if clash:
        raise SplitError(f"manifest already has split columns {clash}")
    have, want = set(splits_df["image"]), set(manifest_df["image"])
    for what, missing in (("manifest images have no split entry", [i for i in manifest_df["image"] if i not in have]),
                          ("split images are not in the manifest", [i for i in splits_df["image"] if i not in want])):
        if missing:
            raise SplitError(f"{len(missing)} {what}, e.g. {missing[:5]}")
    return manifest_df.merge(splits_df[["image", *cols]], on="image", how="left", validate="one_to_one")
