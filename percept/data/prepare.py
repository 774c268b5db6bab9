"""``percept prepare``: turn a user's official download into a verified manifest (see :mod:`.manifest`).

:func:`prepare` runs the dataset's preparer from :data:`PREPARERS` (IQA ones in :mod:`.prepare_iqa`,
memorability and emotion ones here), checks that every listed image exists under ``root`` and that its
header is readable and within the size limits of :func:`percept.core.images.check_size` (missing
images are an error naming them, unless ``allow_partial=True``: then the manifest keeps the present
images and its sidecar records ``partial: true`` and how many rows were ``dropped``), and writes
``out`` (default ``root/percept_manifest.csv``) with its sidecar. Each card (:mod:`.cards`) documents
the layout its preparer reads, with formats taken from documentation alone marked as assumed.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from ..core.images import header_problem
from .cards import get_card
from .manifest import ManifestError, write_manifest
from .prepare_iqa import (
    IQA_PREPARERS,
    check_columns,
    join,
    load_mat,
    numbers,
    read_table,
    require,
)

DEFAULT_MANIFEST = "percept_manifest.csv"


def _locate(root: Path, assumed: list[str], dataset: str) -> list[str]:
    """``assumed`` paths, each replaced by the unique file of the same name found under ``root`` when the
    assumed one does not exist (for datasets whose image layout is not documented with certainty)."""
    exists = [(root / p).is_file() for p in assumed]
    wanted = {PurePosixPath(p).name for p, e in zip(assumed, exists) if not e}
    if not wanted:
        return assumed
    found: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f in wanted:
                found.setdefault(f, []).append(Path(dirpath, f).relative_to(root).as_posix())
    twice = sorted(n for n, v in found.items() if len(v) > 1)
    if twice:
        raise ManifestError(f"{dataset}: image name {twice[0]!r} occurs at {', '.join(found[twice[0]][:3])} under "
                            f"{str(root)!r} ({len(twice)} ambiguous name(s)); keep one copy in the official layout")
    return [p if e else found.get(PurePosixPath(p).name, [p])[0] for p, e in zip(assumed, exists)]


def _emotion_frame(images, names, card, **extra) -> pd.DataFrame:
    index = {c: i for i, c in enumerate(card.classes)}
    df = pd.DataFrame({"image": list(images), "label": [index[n] for n in names], "label_name": list(names)})
    for k, v in extra.items():
        df[k] = list(v)
    return df


# ----------------------------------------------------------------------------- memorability (§4.2)
def prepare_lamem(root: Path, check_images: bool = True) -> pd.DataFrame:
    """LaMem: union of ``splits/{train,val,test}_{1..5}.txt``. Columns ``split1..5`` (the part holding the
    image in split k) and ``memorability_split1..5`` (the official score in that split's file - scores
    differ between splits); ``memorability`` = their mean. Each image must be in exactly one part of every
    split."""
    frames = []
    for k in range(1, 6):
        for part in ("train", "val", "test"):
            path = require(root, f"splits/{part}_{k}.txt", "lamem")
            df = read_table(path, [], "lamem", sep=r"\s+", header=None, names=["file", "score"], dtype={"file": str})
            df["score"] = numbers(df["score"], path, "score", "lamem", names=df["file"])
            out = np.flatnonzero(~df["score"].between(0.0, 1.0).to_numpy())
            if len(out):
                i = int(out[0])
                raise ManifestError(f"lamem: {str(path)!r} line {i + 1}: score {df['score'].iloc[i]:g} of "
                                    f"{df['file'].iloc[i]} is outside lamem's range [0, 1]")
            frames.append(df.assign(part=part, k=k))
    d = pd.concat(frames, ignore_index=True)
    twice = d[d.duplicated(["file", "k"], keep=False)].sort_values(["k", "file"])
    if len(twice):
        r = twice.iloc[0]
        parts = sorted(set(twice[(twice.file == r.file) & (twice.k == r.k)].part))
        raise ManifestError(f"lamem: {r.file} appears more than once in split {r.k} ({', '.join(parts)}); "
                            f"{twice.file.nunique()} such file(s) - the split files are corrupt")
    counts = d.groupby("file").k.nunique()
    partial = counts[counts < 5]
    if len(partial):
        f = partial.index[0]
        absent = sorted(set(range(1, 6)) - set(d[d.file == f].k))
        raise ManifestError(f"lamem: {f} is missing from split(s) {absent}; every image must be in one part "
                            f"of each of the 5 splits ({len(partial)} such file(s))")
    part = d.pivot(index="file", columns="k", values="part").sort_index()
    score = d.pivot(index="file", columns="k", values="score").sort_index()
    out = pd.DataFrame({"image": ["images/" + f for f in part.index], "memorability": score.mean(axis=1).to_numpy()})
    for k in range(1, 6):
        out[f"split{k}"] = part[k].to_numpy()
    for k in range(1, 6):
        out[f"memorability_split{k}"] = score[k].to_numpy()
    return out


def prepare_memcat(root: Path, check_images: bool = True, labels_file: str = "memcat_image_data.csv",
                   image_dir: str = "images", score: str = "memorability_w_fa_correction") -> pd.DataFrame:
    """MemCat: ``memorability`` = ``score`` (FA-corrected by default); other official columns kept."""
    path = require(root, labels_file, "memcat")
    df = read_table(path, ["image_file", "category", "subcategory", score], "memcat")
    df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed")])
    mem = numbers(df[score], path, score, "memcat", names=df["image_file"])
    images = [join(image_dir, c, s, f) for c, s, f in zip(df.category, df.subcategory, df.image_file.astype(str))]
    if check_images:
        images = _locate(root, images, "memcat")
    out = pd.DataFrame({"image": images, "memorability": mem})
    keep = [c for c in df.columns if c not in out.columns]  # every official column, the raw score included
    out = pd.concat([out, df[keep].reset_index(drop=True)], axis=1)
    out.attrs["sidecar"] = {"score_source": score}
    return out


# THINGS memorability (Kramer et al. 2023, scores on OSF, osf.io/5a7z6): the header percept reads. The score
# is corrected recognition, CR = hit rate - false-alarm rate, the memorability score of Kramer et al.; the paper
# says only "the memorability score", so taking CR is our reading (docs/deviations.md, "Assumed");
# `hr` (hit rate) and any other column are used only when named explicitly (option `score`), never by fallback.
THINGS_SCORE = "cr"
THINGS_IMAGE = ("image", "image_name", "filename", "file")   # exactly one must be present


def _things_column(df: pd.DataFrame, path: Path, name: str) -> str | None:
    """The column of ``df`` called ``name`` (exact, else the one equal ignoring case); None if absent;
    refuses two columns that differ only in case."""
    if name in df.columns:
        return name
    hits = [c for c in df.columns if str(c).lower() == name.lower()]
    if len(hits) > 1:
        raise ManifestError(f"things: {str(path)!r} has {len(hits)} columns named {name!r} up to case "
                            f"({', '.join(map(str, hits))}); keep one")
    return hits[0] if hits else None


def prepare_things(root: Path, check_images: bool = True, labels_file: str = "things_memorability.csv",
                   image_dir: str = "object_images", score: str = THINGS_SCORE) -> pd.DataFrame:
    """THINGS memorability: ``memorability`` = column ``score`` (default ``cr``, corrected recognition) of
    the CSV ``labels_file``, images named by its one image column (see :data:`THINGS_IMAGE`); file name and
    image folder ASSUMED (see the card)."""
    path = require(root, labels_file, "things")
    df = read_table(path, [], "things")
    found = ", ".join(map(str, df.columns))
    imgs = [c for c in df.columns if str(c).lower() in THINGS_IMAGE]
    if len(imgs) != 1:
        raise ManifestError(f"things: {str(path)!r} must have exactly one image column of {', '.join(THINGS_IMAGE)}"
                            f"; found {len(imgs)} ({found}){'; keep one of them' if imgs else ''}")
    img_col = imgs[0]
    score_col = _things_column(df, path, score)
    if score_col is None:
        what = ("corrected-recognition column `cr` (CR = hit rate - false-alarm rate, Kramer et al.'s memorability score)"
                if score == THINGS_SCORE else f"score column {score!r} (given as score=)")
        raise ManifestError(f"things: {str(path)!r} has no {what}; columns found: {found}. Pass the column that "
                            f"holds corrected recognition with score=COLUMN (CLI --option score=COLUMN); `hr` "
                            f"(hit rate) is a different score")
    if score_col == img_col:
        raise ManifestError(f"things: score={score!r} in {str(path)!r} is the image column; columns found: {found}")
    if str(score_col).lower() != THINGS_SCORE:
        warnings.warn(f"things: memorability taken from column {score_col!r} (score=), not the corrected "
                      f"recognition `cr` of Kramer et al.; results are comparable with the paper's only if it "
                      f"holds the score the paper used (CR, by our reading)", stacklevel=3)
    mem = numbers(df[score_col], path, score_col, "things", names=df[img_col])
    values = df[img_col].astype(str).str.replace("\\", "/", regex=False)
    concepts = [v.rsplit("/", 1)[0] if "/" in v else v.rsplit("_", 1)[0] for v in values]
    images = [join(image_dir, v) if "/" in v else join(image_dir, c, v) for v, c in zip(values, concepts)]
    if check_images:
        images = _locate(root, images, "things")
    out = pd.DataFrame({"image": images, "memorability": mem, "concept": concepts})
    out.attrs["sidecar"] = {"score_source": str(score_col)}
    return out


def prepare_sun_memorability(root: Path, check_images: bool = True, n_images: int = 2222,
                             image_dir: str = "percept_images") -> pd.DataFrame:
    """SUN memorability (Isola 2011), ASSUMED layout (see the card): hit rate per target from
    ``sorted_target_data.mat``, 25 train/test splits, images extracted from ``target_images.mat``."""
    data = "Data/Experiment data/sorted_target_data.mat"
    path = require(root, data, "sun_memorability")
    recs = np.atleast_1d(load_mat(path, ["sorted_target_data"], "sun_memorability", squeeze_me=True,
                                  struct_as_record=False)["sorted_target_data"])
    if len(recs) < n_images:
        raise ManifestError(f"sun_memorability: {str(path)!r} has {len(recs)} targets, expected at least {n_images}")
    rows = []
    for i, rec in enumerate(recs[:n_images]):
        try:
            hits, misses = float(rec.hits), float(rec.misses)
        except (AttributeError, TypeError, ValueError) as err:
            raise ManifestError(f"sun_memorability: target {i + 1} in {str(path)!r} has no numeric hits/misses "
                                f"fields ({err}); not the official file?") from err
        if hits + misses <= 0:
            raise ManifestError(f"sun_memorability: target {i + 1} in {str(path)!r} has no responses")
        rows.append({"image": f"{image_dir}/{i + 1:04d}.png", "memorability": hits / (hits + misses),
                     "hits": hits, "misses": misses,
                     "source_file": PurePosixPath(str(getattr(rec, "filepath", "")).replace("\\", "/")).name})
    out = pd.DataFrame(rows)
    split_paths = {s: require(root, f"Data/Random splits/image_{s}_indices.mat", "sun_memorability")
                   for s in ("train", "test")}
    idx = {s: np.atleast_2d(load_mat(p, [f"image_{s}_indices"], "sun_memorability")[f"image_{s}_indices"])
           for s, p in split_paths.items()}
    if idx["train"].shape[0] != idx["test"].shape[0]:
        raise ManifestError("sun_memorability: image_train_indices and image_test_indices have different "
                            "numbers of splits")
    for k in range(idx["train"].shape[0]):
        col = np.full(n_images, "none", dtype=object)
        for part in ("train", "test"):
            ids = idx[part][k].astype(int) - 1
            if ids.min() < 0 or ids.max() >= n_images or (col[ids] != "none").any():
                raise ManifestError(f"sun_memorability: split {k + 1} of {split_paths[part].name} has indices "
                                    f"outside 1..{n_images} or shared between train and test")
            col[ids] = part
        out[f"split{k + 1}"] = col
    if check_images:
        _extract_sun_images(root, image_dir, n_images)
    return out


def _extract_sun_images(root: Path, image_dir: str, n: int) -> None:
    todo = [i for i in range(n) if not (root / image_dir / f"{i + 1:04d}.png").is_file()]
    if not todo:
        return
    path = require(root, "Data/Image data/target_images.mat", "sun_memorability")
    img = load_mat(path, ["img"], "sun_memorability")["img"]
    if img.ndim != 4 or img.shape[2] != 3 or img.shape[3] < n:
        raise ManifestError(f"sun_memorability: `img` in {str(path)!r} has shape {img.shape}, expected HxWx3x>={n}")
    try:
        (root / image_dir).mkdir(exist_ok=True)
        for i in todo:
            Image.fromarray(np.ascontiguousarray(img[:, :, :, i]).astype(np.uint8)).save(
                root / image_dir / f"{i + 1:04d}.png")
    except OSError as err:
        raise ManifestError(f"sun_memorability: cannot write the extracted images to {str(root / image_dir)!r} "
                            f"({err}); copy the release to a writable folder and prepare it there") from err


# ----------------------------------------------------------------------------- emotion (§4.3)
def prepare_emoset(root: Path, check_images: bool = True) -> pd.DataFrame:
    """EmoSet-118K: ``{train,val,test}.json`` items ``[emotion, image_id, image_path, annotation_path]``;
    ``label`` in the card's (info.json) order; ``split`` from the file."""
    card = get_card("emoset")
    info_path = root / "info.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            l2i = {k: int(v) for k, v in info["emotion"]["label2idx"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ManifestError(f"emoset: cannot read emotion.label2idx from {str(info_path)!r} ({err!r})") from err
        if l2i != {c: i for i, c in enumerate(card.classes)}:
            raise ManifestError(f"emoset: {str(info_path)!r} orders the classes {sorted(l2i, key=l2i.get)}, percept "
                                f"expects {list(card.classes)}; not the official EmoSet-118K?")
    images, names, parts, ids, annotations = [], [], [], [], []
    for part in ("train", "val", "test"):
        path = require(root, f"{part}.json", "emoset")
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ManifestError(f"emoset: {str(path)!r} is not valid JSON ({err}); download it again") from err
        for j, item in enumerate(items if isinstance(items, list) else [items]):
            if not (isinstance(item, list) and len(item) in (3, 4) and item[0] in card.classes):
                raise ManifestError(f"emoset: item {j + 1} of {str(path)!r} is {item!r}; expected [emotion, image_id, "
                                    f"image_path, annotation_path] with emotion in {', '.join(card.classes)}")
            image = str(item[2] if len(item) == 4 else item[1]).replace("\\", "/").removeprefix("./")
            images.append(image)
            names.append(item[0])
            parts.append(part)
            ids.append(str(item[1]) if len(item) == 4 else PurePosixPath(image).stem)
            annotations.append(str(item[-1]))
    # column `split`: the official release's own name for the part (train/val/test) of its one split
    return _emotion_frame(images, names, card, split=parts, image_id=ids, annotation=annotations)


def _number_key(name: str):
    stem = PurePosixPath(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def prepare_emotionroi(root: Path, check_images: bool = True) -> pd.DataFrame:
    """EmotionROI (Emotion6 layout): ``images/{class}/N.jpg``; rows from ``ground_truth.txt`` (keeping
    valence, arousal, prob_*) or, without it, from the class folders; sorted by class then N."""
    card = get_card("emotionroi")
    gt = root / "ground_truth.txt"
    extra = pd.DataFrame()
    if gt.is_file():
        df = read_table(gt, [], "emotionroi", sep="\t")
        df.columns = [re.sub(r"[^a-z0-9]+", "_", str(c).lower().strip("[] ").replace("prob. ", "prob_")).strip("_")
                      for c in df.columns]
        check_columns(df, ["image_filename", "valence", "arousal"], gt, "emotionroi")
        files = df["image_filename"].astype(str).str.replace("\\", "/", regex=False).tolist()
        extra = df.drop(columns=["image_filename"])
    elif (root / "images").is_dir():
        files = [f"{c}/{f}" for c in card.classes if (root / "images" / c).is_dir()
                 for f in os.listdir(root / "images" / c) if not f.startswith(".")]
    else:
        raise ManifestError(f"emotionroi: neither {str(gt)!r} nor {str(root / 'images')!r} exists. "
                            f"Expected: {card.official_layout}")
    names = [f.split("/")[0] for f in files]
    unknown = [f for f, n in zip(files, names) if n not in card.classes or "/" not in f]
    if unknown:
        raise ManifestError(f"emotionroi: {unknown[0]!r} is not in a class folder ({', '.join(card.classes)}); "
                            f"{len(unknown)} such entries")
    df = _emotion_frame([f"images/{f}" for f in files], names, card, **{c: extra[c] for c in extra.columns})
    order = sorted(range(len(df)), key=lambda i: (df.label[i], _number_key(files[i])))
    return df.iloc[order].reset_index(drop=True)


PREPARERS = {**IQA_PREPARERS, "lamem": prepare_lamem, "things": prepare_things,
             "sun_memorability": prepare_sun_memorability, "memcat": prepare_memcat,
             "emoset": prepare_emoset, "emotionroi": prepare_emotionroi}


def prepare(name: str, root: str | os.PathLike, out: str | os.PathLike | None = None, allow_partial: bool = False,
            check_images: bool = True, **options) -> tuple[pd.DataFrame, Path]:
    """Prepare dataset ``name`` from its official download at ``root``; returns (manifest, manifest path).

    ``check_images=False`` skips the image check for labels-only downloads (the sidecar records
    ``images_checked: false``). ``options`` go to the dataset's preparer (e.g. KonIQ ``image_dir``).
    """
    card = get_card(name)
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{card.name}: dataset root {str(root)!r} is not a folder. Expected layout: "
                            f"{card.official_layout}")
    fn = PREPARERS[card.name]
    accepted = [p for p in inspect.signature(fn).parameters if p not in ("root", "check_images")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ManifestError(f"{card.name}: unknown option(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(accepted) or 'none'}")
    df = fn(root, check_images=check_images, **options)
    sidecar = dict(df.attrs.get("sidecar", {}))
    df = df.reset_index(drop=True)
    dropped = 0
    if check_images:
        exists = np.array([(root / p).is_file() for p in df["image"]], dtype=bool)
        missing = df["image"][~exists].tolist()
        if missing and (not allow_partial or not exists.any()):
            hint = ("none of them exist - is `root` the dataset folder?" if not exists.any() else
                    f"complete the download, or pass allow_partial=True (CLI --allow-partial) to write a manifest "
                    f"of the {int(exists.sum())} present images, recorded as partial in its sidecar")
            raise ManifestError(f"{card.name}: {len(missing)} of {len(df)} images listed in the labels are missing "
                                f"under {str(root)!r}: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}; "
                                f"{hint}")
        if missing:
            dropped = len(missing)
            df = df[exists].reset_index(drop=True)
            warnings.warn(f"{card.name}: partial manifest - {dropped} rows dropped because their images are missing "
                          f"(first: {missing[0]}); results on it are not comparable with the paper's", stacklevel=2)
        problems = [header_problem(root / p) for p in df["image"]]       # named now, not hours into training
        bad = [why for why in problems if why]
        if bad and not allow_partial:
            raise ManifestError(f"{card.name}: {len(bad)} of {len(df)} image(s) cannot be used: {bad[0]}"
                                f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; replace them from the "
                                f"official download, or pass allow_partial=True (CLI --allow-partial) to leave them out")
        if bad:
            dropped += len(bad)
            df = df[[not why for why in problems]].reset_index(drop=True)
            warnings.warn(f"{card.name}: partial manifest - {len(bad)} unusable image(s) left out ({bad[0]}); "
                          f"results on it are not comparable with the paper's", stacklevel=2)
    if not dropped and len(df) != card.expected_images:
        warnings.warn(f"{card.name}: {len(df)} rows, but the paper uses {card.expected_images} images; check "
                      f"that the download is complete and official", stacklevel=2)
    path = Path(out) if out is not None else root / DEFAULT_MANIFEST
    extra = {"partial": bool(dropped), "dropped": dropped, "images_checked": bool(check_images),
             "root": str(root.resolve()),
             "expected_images": card.expected_images, "options": {k: options[k] for k in sorted(options)}, **sidecar}
    try:
        write_manifest(df, path, card, extra)
    except PermissionError as err:
        raise ManifestError(f"{card.name}: cannot write {str(path)!r} ({err}); pass out= (CLI --out) to write "
                            f"the manifest elsewhere") from err
    return df, path
