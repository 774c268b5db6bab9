"""The per-dataset writers of :mod:`percept.data.fixtures` (see its docstring for what each one writes):
small generated images and label/split files in each dataset's official layout, and the choice of image
names from the committed split files for the datasets that have one."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .cards import CARDS, get_card
from .fixture_files import (
    _cells,
    _levels,
    _pixels,
    _save,
    _savemat,
    _scale,
    _tint,
    _write_text,
)
from .pinned import PINNED_DATASETS, load_pinned_splits, pinned_split_path
from .prepare_iqa import LIVE_FOLDERS

# Images taken from a committed split file, by their parts in (split1, split2) -> how many. Gives
# train 19 / val 3 / test 10 in both splits 1 and 2 (32 images).
PINNED_PLAN: tuple[tuple[tuple[str, str], int], ...] = (
    (("train", "train"), 16), (("train", "test"), 3), (("val", "test"), 3),
    (("test", "train"), 3), (("test", "val"), 3), (("test", "test"), 4))

class FixtureError(RuntimeError):
    """A fixture cannot be written (e.g. the target folder holds something that is not a fixture)."""


@dataclass(frozen=True)
class FixtureSpec:
    """How to prepare a written fixture: ``prepare(name, root, allow_partial=allow_partial, **options)``.
    ``rows``: the number of manifest rows that gives."""

    rows: int
    options: Mapping[str, object] = field(default_factory=dict)
    allow_partial: bool = False

    def prepare_kwargs(self) -> dict:
        return {"allow_partial": self.allow_partial, **self.options}


# ----------------------------------------------------------------------------- pinned split files
def pinned_fixture_images(name: str, splits: pd.DataFrame | None = None) -> list[str]:
    """The split keys (as in ``data_manifests/splits/NAME.csv``) of the images a pinned dataset's fixture
    holds: :data:`PINNED_PLAN` images per (split1, split2) part pair, evenly spaced over the file (so
    EmotionROI's are spread over its classes), in file order. ``splits`` defaults to the committed file."""
    name = get_card(name).name
    if name not in PINNED_DATASETS:
        raise ValueError(f"{name} has no committed split file (those that do: {', '.join(PINNED_DATASETS)})")
    if splits is None:
        splits = load_pinned_splits(name)
    where = pinned_split_path(name)
    missing = [c for c in ("image", "split1", "split2") if c not in splits.columns]
    if missing:
        raise FixtureError(f"{name}: the pinned split table {str(where)!r} lacks column(s) {', '.join(missing)}; "
                           f"a fixture needs splits 1 and 2")
    s1, s2 = splits["split1"].astype(str).to_numpy(), splits["split2"].astype(str).to_numpy()
    chosen: list[int] = []
    for (p1, p2), n in PINNED_PLAN:
        pool = np.flatnonzero((s1 == p1) & (s2 == p2))
        if len(pool) < n:
            raise FixtureError(f"{name}: the pinned split file {str(where)!r} has {len(pool)} image(s) with "
                               f"split1={p1} and split2={p2}; the fixture needs {n} (fixtures.PINNED_PLAN). "
                               f"Was the split file regenerated with other fractions? Adapt PINNED_PLAN")
        chosen.extend(int(i) for i in pool[np.round(np.linspace(0, len(pool) - 1, n)).astype(int)])
    return splits["image"].astype(str).to_numpy()[sorted(chosen)].tolist()


def _pinned_sha(name: str) -> str | None:
    if name not in PINNED_DATASETS:
        return None
    return str(load_pinned_splits(name).attrs.get("splits", {}).get("sha256"))


# ----------------------------------------------------------------------------- IQA, authentic
def _write_livec(root: Path, rng: np.random.Generator) -> FixtureSpec:
    names = [f"t{i}.bmp" for i in range(1, 8)]
    names += [PurePosixPath(k).name for k in pinned_fixture_images("livec")]
    n = len(names)
    level = _levels(rng, n)
    base = root / "ChallengeDB_release"
    _savemat(base / "Data/AllImages_release.mat", {"AllImages_release": _cells(names, column=True)})
    _savemat(base / "Data/AllMOS_release.mat", {"AllMOS_release": np.round(_scale(level, 0, 100, rng), 4)[None]})
    _savemat(base / "Data/AllStdDev_release.mat", {"AllStdDev_release": np.round(rng.uniform(10, 25, (1, n)), 4)})
    for i, f in enumerate(names):
        _save(base / ("Images/trainingImages" if i < 7 else "Images") / f, _pixels(rng, level[i], i))
    return FixtureSpec(rows=n - 7)


def _write_koniq10k(root: Path, rng: np.random.Generator) -> FixtureSpec:
    names = pinned_fixture_images("koniq10k")
    n = len(names)
    level = _levels(rng, n)
    centre = _scale(level, 1, 5, rng)
    c = np.exp(-((np.arange(1, 6)[None, :] - centre[:, None]) ** 2) / 1.2)
    c /= c.sum(axis=1, keepdims=True)
    mean = c @ np.arange(1, 6)
    sd = np.sqrt(c @ np.arange(1, 6) ** 2 - mean ** 2)
    df = pd.DataFrame({"image_name": names, **{f"c{i + 1}": np.round(c[:, i], 6) for i in range(5)},
                       "c_total": rng.integers(80, 130, n), "MOS": np.round(1 + 99 * (mean - 1) / 4, 4),
                       "SD": np.round(sd, 6),
                       "set": rng.choice(["training", "validation", "test"], n, p=[0.7, 0.1, 0.2])})
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "koniq10k_distributions_sets.csv", index=False, lineterminator="\n")
    for i, f in enumerate(names):
        _save(root / "1024x768" / f, _pixels(rng, level[i], i))
    return FixtureSpec(rows=n)


def _write_spaq(root: Path, rng: np.random.Generator, n: int = 36) -> FixtureSpec:
    names = [f"{i:05d}.jpg" for i in sorted(rng.choice(np.arange(1, 11126), n, replace=False))]
    level = _levels(rng, n)
    df = pd.DataFrame({"Image name": names, "MOS": np.round(_scale(level, 0, 100, rng), 2),
                       "Brightness": np.round(_scale(level, 0, 100, rng, 0.1), 2)})
    for attr in ("Colorfulness", "Contrast", "Noisiness", "Sharpness"):
        df[attr] = np.round(rng.uniform(20, 80, n), 2)
    _write_text(root / "Annotations/MOS and Image attribute scores.csv", df.to_csv(index=False, lineterminator="\n"))
    for i, f in enumerate(names):
        _save(root / "TestImage" / f, _pixels(rng, level[i], i))
    return FixtureSpec(rows=n)


def _write_flive(root: Path, rng: np.random.Generator, n: int = 36) -> FixtureSpec:
    pattern = ("voc_emotic_ava/VOC2012__2008_{:06d}.jpg", "AVA__{}.jpg", "blur_dataset/motion{:04d}.jpg",
               "EE371R/img{:03d}.jpg")
    ids = rng.choice(np.arange(1, 1000), n, replace=False)
    names = [pattern[i % len(pattern)].format(int(j)) for i, j in enumerate(ids)]
    level = _levels(rng, n)
    pixels = [_pixels(rng, level[i], i) for i in range(n)]
    df = pd.DataFrame({"name": names, "mos": np.round(_scale(level, 0, 100, rng), 4),
                       "height": [p.shape[0] for p in pixels], "width": [p.shape[1] for p in pixels]})
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "labels_image.csv", index=False, lineterminator="\n")
    for f, p in zip(names, pixels):
        _save(root / "database" / f, p)
    return FixtureSpec(rows=n)


# ----------------------------------------------------------------------------- IQA, synthetic
LIVE_REFERENCES = ("bikes", "building2", "buildings", "caps", "carnivaldolls", "cemetry", "churchandcapitol",
                   "coinsinfountain", "dancers", "flowersonih35", "house", "lighthouse", "lighthouse2",
                   "manfishing", "monarch", "ocean", "paintedhouse", "parrots", "plane", "rapids", "sailing1",
                   "sailing2", "sailing3", "sailing4", "statue", "stream", "studentsculpture", "woman", "womanhat")


def _write_live(root: Path, rng: np.random.Generator, n_refs: int = 12, per_ref: int = 3) -> FixtureSpec:
    files, folders, refs, orgs = [], [], [], []
    for folder, count in LIVE_FOLDERS:
        order = rng.permutation(len(LIVE_REFERENCES))
        for i in range(count):
            files.append(f"{folder}/img{i + 1}.bmp")
            folders.append(folder)
            refs.append(LIVE_REFERENCES[order[i % len(order)]])
            orgs.append(1.0 if i < len(order) else 0.0)   # first entry of each reference: its undistorted copy
    orgs = np.array(orgs)
    dmos = np.where(orgs == 1, 0.0, np.round(rng.uniform(15, 85, len(files)), 4))
    chosen_refs = sorted(rng.choice(LIVE_REFERENCES, n_refs, replace=False))
    chosen = []
    for ref in chosen_refs:
        for folder in rng.choice([f for f, _ in LIVE_FOLDERS], per_ref, replace=False):
            chosen.append(next(i for i in range(len(files))
                               if refs[i] == ref and folders[i] == folder and orgs[i] == 0))
    level = _levels(rng, len(chosen))
    dmos[chosen] = np.round(_scale(1 - level, 5, 95, rng), 4)     # DMOS: lower = better = brighter
    root.mkdir(parents=True, exist_ok=True)
    _savemat(root / "dmos_realigned.mat", {"dmos_new": dmos[None], "orgs": orgs[None]})
    _savemat(root / "dmos.mat", {"dmos": np.round(np.where(orgs == 1, 0.0, dmos * 0.9 + 3), 4)[None],
                                 "orgs": orgs[None]})
    _savemat(root / "refnames_all.mat", {"refnames_all": _cells(f"{r}.bmp" for r in refs)})
    for j, i in enumerate(chosen):
        _save(root / files[i], _pixels(rng, level[j], j))
    return FixtureSpec(rows=len(chosen), allow_partial=True)


def _distorted(rng: np.random.Generator, n_available: int, n_refs: int, n_types: int, n_levels: int,
               per_ref: int) -> list[tuple[int, int, int]]:
    """(reference, distortion type, level), 1-based, for ``per_ref`` distortions of ``n_refs`` references."""
    out = []
    for r in sorted(rng.choice(np.arange(1, n_available + 1), n_refs, replace=False)):
        for t in sorted(rng.choice(np.arange(1, n_types + 1), per_ref, replace=False)):
            out.append((int(r), int(t), int(rng.integers(1, n_levels + 1))))
    return out


def _write_tid2013(root: Path, rng: np.random.Generator) -> FixtureSpec:
    items = _distorted(rng, 25, 12, 24, 5, 3)
    names = [f"i{r:02d}_{t:02d}_{lv}.bmp" for r, t, lv in items]
    level = _levels(rng, len(names))
    mos = _scale(level, 0.5, 7.5, rng)
    _write_text(root / "mos_with_names.txt", "".join(f"{m:.5f} {f}\n" for m, f in zip(mos, names)))
    _write_text(root / "mos_std.txt", "".join(f"{s:.5f}\n" for s in rng.uniform(0.5, 1.5, len(names))))
    for i, f in enumerate(names):
        _save(root / "distorted_images" / f, _pixels(rng, level[i], i))
    return FixtureSpec(rows=len(names))


def _write_kadid10k(root: Path, rng: np.random.Generator) -> FixtureSpec:
    items = _distorted(rng, 81, 12, 25, 5, 3)
    level = _levels(rng, len(items))
    df = pd.DataFrame({"dist_img": [f"I{r:02d}_{t:02d}_{lv:02d}.png" for r, t, lv in items],
                       "ref_img": [f"I{r:02d}.png" for r, _, _ in items],
                       "dmos": np.round(_scale(level, 1, 5, rng), 2),
                       "var": np.round(rng.uniform(0.2, 1.0, len(items)), 3)})
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "dmos.csv", index=False, lineterminator="\n")
    for i, f in enumerate(df["dist_img"]):
        _save(root / "images" / f, _pixels(rng, level[i], i))
    return FixtureSpec(rows=len(df))


# ----------------------------------------------------------------------------- memorability
def _write_lamem(root: Path, rng: np.random.Generator, n: int = 40, parts=(29, 3, 8)) -> FixtureSpec:
    names = [f"{i:08d}.jpg" for i in sorted(rng.choice(np.arange(1, 100000), n, replace=False))]
    level = _levels(rng, n)
    for k in range(1, 6):
        order = rng.permutation(n)
        score = np.clip(0.4 + 0.55 * level + rng.normal(0, 0.03, n), 0, 1)   # differs between splits
        cuts = np.cumsum((0,) + parts)
        for part, a, b in zip(("train", "val", "test"), cuts[:-1], cuts[1:]):
            _write_text(root / "splits" / f"{part}_{k}.txt",
                        "".join(f"{names[i]} {score[i]:.6f}\n" for i in order[a:b]))
    for i, f in enumerate(names):
        _save(root / "images" / f, _pixels(rng, level[i], i))
    return FixtureSpec(rows=n)


THINGS_CONCEPTS = ("aardvark", "accordion", "acorn", "air_conditioner", "airplane", "alligator", "altar", "anchor",
                   "antelope", "apple", "apron", "aquarium", "armadillo", "arrow", "ashtray", "asparagus", "avocado",
                   "axe", "backpack", "bagel")


def _write_things(root: Path, rng: np.random.Generator, per_concept: int = 2) -> FixtureSpec:
    files = [(c, f"{c}_{j + 1:02d}{rng.choice(list('bnsx'))}.jpg") for c in THINGS_CONCEPTS for j in range(per_concept)]
    n = len(files)
    level = _levels(rng, n)
    hr = np.clip(0.45 + 0.5 * level + rng.normal(0, 0.03, n), 0, 1)
    far = rng.uniform(0.1, 0.15, n)
    df = pd.DataFrame({"image_name": [f for _, f in files], "hr": np.round(hr, 4), "far": np.round(far, 4),
                       "cr": np.round(hr - far, 4)})
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "things_memorability.csv", index=False, lineterminator="\n")
    for i, (c, f) in enumerate(files):
        _save(root / "object_images" / c / f, _pixels(rng, level[i], i))
    return FixtureSpec(rows=n)


def _write_sun_memorability(root: Path, rng: np.random.Generator, n: int = 40, textures: int = 4,
                            parts=(20, 18)) -> FixtureSpec:
    total = n + textures
    level = np.concatenate([_levels(rng, n), rng.uniform(0, 1, textures)])
    subjects = rng.integers(40, 90, total)
    hits = np.round(subjects * np.clip(0.35 + 0.55 * level + rng.normal(0, 0.03, total), 0, 1))
    recs = np.empty((1, total), dtype=object)
    for i in range(total):
        fa = int(rng.integers(0, 10))
        recs[0, i] = {"hits": float(hits[i]), "misses": float(subjects[i] - hits[i]), "false_alarms": float(fa),
                      "correct_rejections": float(60 - fa),
                      "filepath": f"Images/{'scene' if i < n else 'texture'}/sun_{i + 1:04d}.jpg"}
    _savemat(root / "Data/Experiment data/sorted_target_data.mat", {"sorted_target_data": recs})
    img = np.stack([_pixels(rng, level[i], i, size=(64, 64)) for i in range(total)], axis=-1)
    _savemat(root / "Data/Image data/target_images.mat", {"img": img})
    train, test = [], []
    for _ in range(25):
        order = rng.permutation(n) + 1                      # 1-based, as MATLAB; the rest is in neither half
        train.append(np.sort(order[:parts[0]]))
        test.append(np.sort(order[parts[0]:parts[0] + parts[1]]))
    _savemat(root / "Data/Random splits/image_train_indices.mat", {"image_train_indices": np.array(train, float)})
    _savemat(root / "Data/Random splits/image_test_indices.mat", {"image_test_indices": np.array(test, float)})
    return FixtureSpec(rows=n, options={"n_images": n})


MEMCAT_SUBCATEGORIES = {"animal": ("bear", "bird"), "food": ("pizza", "salad"), "landscape": ("mountain", "beach"),
                        "sports": ("tennis", "skiing"), "vehicle": ("bus", "bicycle")}


def _write_memcat(root: Path, rng: np.random.Generator, per_sub: int = 4) -> FixtureSpec:
    rows = [(c, s) for c, subs in MEMCAT_SUBCATEGORIES.items() for s in subs for _ in range(per_sub)]
    n = len(rows)
    ids = rng.choice(np.arange(1, 600000), n, replace=False)
    level = _levels(rng, n)
    pixels = [_pixels(rng, level[i], i) for i in range(n)]
    n_resp = rng.integers(70, 110, n)
    fa = rng.integers(0, 6, n)
    hits = np.round(n_resp * np.clip(0.35 + 0.55 * level + rng.normal(0, 0.03, n), 0, 1)).astype(int)
    hits = np.maximum(hits, fa)
    df = pd.DataFrame({"image_file": [f"{i:012d}.jpg" for i in ids], "category": [c for c, _ in rows],
                       "subcategory": [s for _, s in rows], "current_height": [p.shape[0] for p in pixels],
                       "current_width": [p.shape[1] for p in pixels], "source": "coco",
                       "searched_label": [s for _, s in rows], "resize_factor": 1, "H": hits, "FA": fa,
                       "n_resp": n_resp, "memorability_wo_fa_correction": hits / n_resp,
                       "memorability_w_fa_correction": (hits - fa) / n_resp})
    df.index = np.arange(1, n + 1).astype(str)
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "memcat_image_data.csv", index_label="", quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    for (c, s), f, p in zip(rows, df["image_file"], pixels):
        _save(root / "images" / c / s / f, p)
    return FixtureSpec(rows=n)


# ----------------------------------------------------------------------------- emotion
def _write_emoset(root: Path, rng: np.random.Generator,
                  per_class=(("train", 3), ("val", 1), ("test", 1))) -> FixtureSpec:
    classes = CARDS["emoset"].classes
    root.mkdir(parents=True, exist_ok=True)
    _write_text(root / "info.json", json.dumps({"emotion": {"label2idx": {c: i for i, c in enumerate(classes)},
                                                            "idx2label": {str(i): c for i, c in enumerate(classes)}}}))
    counter = dict.fromkeys(classes, 0)
    n = 0
    for split, count in per_class:
        items = []
        for ci, c in enumerate(classes):
            for _ in range(count):
                stem = f"{c}_{counter[c]:05d}"
                counter[c] += 1
                items.append([c, stem, f"image/{c}/{stem}.jpg", f"annotation/{c}/{stem}.json"])
                _save(root / "image" / c / f"{stem}.jpg",
                      _pixels(rng, rng.uniform(0.2, 0.8), n, _tint(ci, len(classes))))
                n += 1
        items = [items[i] for i in rng.permutation(len(items))]
        _write_text(root / f"{split}.json", json.dumps(items))
    return FixtureSpec(rows=n)


EMOTION6_HEADER = ("[image_filename]", "[valence]", "[arousal]", "[prob. anger]", "[prob. disgust]", "[prob. fear]",
                   "[prob. joy]", "[prob. sadness]", "[prob. surprise]", "[prob. neutral]")


def _write_emotionroi(root: Path, rng: np.random.Generator) -> FixtureSpec:
    classes = CARDS["emotionroi"].classes
    keys = pinned_fixture_images("emotionroi")          # images/{class}/N.jpg
    lines = ["\t".join(EMOTION6_HEADER)]
    for i in rng.permutation(len(keys)):
        rel = keys[i].removeprefix("images/")
        ci = classes.index(rel.split("/")[0])
        p = np.full(7, 0.3)
        p[ci] = 3.0
        probs = rng.multinomial(15, p / p.sum()) / 15
        valence, arousal = rng.uniform(1.5, 8.5), rng.uniform(2, 8)
        lines.append("\t".join([rel, f"{valence:.1f}", f"{arousal:.1f}", *(f"{v:.6g}" for v in probs)]))
        _save(root / keys[i], _pixels(rng, rng.uniform(0.2, 0.8), int(i), _tint(ci, len(classes))))
    _write_text(root / "ground_truth.txt", "\n".join(lines) + "\n")
    return FixtureSpec(rows=len(keys))


FIXTURE_WRITERS: dict[str, Callable[[Path, np.random.Generator], FixtureSpec]] = {
    "livec": _write_livec, "koniq10k": _write_koniq10k, "spaq": _write_spaq, "flive": _write_flive,
    "live": _write_live, "tid2013": _write_tid2013, "kadid10k": _write_kadid10k, "lamem": _write_lamem,
    "things": _write_things, "sun_memorability": _write_sun_memorability, "memcat": _write_memcat,
    "emoset": _write_emoset, "emotionroi": _write_emotionroi}
