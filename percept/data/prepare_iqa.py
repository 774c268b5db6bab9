"""IQA preparers (paper §4.1) and the file-reading helpers shared by all preparers.

Each ``prepare_NAME(root, check_images=True, **options)`` reads the official download at ``root`` (layout:
the card's ``official_layout``) and returns the manifest rows as a DataFrame with ``image`` relative to
``root``. Missing images are handled by :func:`percept.data.prepare.prepare`, not here. The metadata
reading follows LoDa's ``scripts/process_*.py`` (Xu et al. 2024a), whose splits the paper uses.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .cards import get_card
from .manifest import ManifestError


# ----------------------------------------------------------------------------- shared helpers
def require(root: Path, rel: str, dataset: str) -> Path:
    """``root / rel`` if it is a file, else :class:`ManifestError` naming it and the expected layout."""
    path = Path(root) / rel
    if not path.is_file():
        raise ManifestError(f"{dataset}: label file {str(path)!r} not found. Expected layout under "
                            f"{str(root)!r}: {get_card(dataset).official_layout}")
    return path


def load_mat(path: Path, keys: Iterable[str], dataset: str, **kwargs) -> dict:
    """``scipy.io.loadmat(path, **kwargs)`` restricted to ``keys``; ManifestError if unreadable or a key is
    missing."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(str(path), **kwargs)
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise ManifestError(f"{dataset}: {str(path)!r} is a MATLAB v7.3 file, which scipy cannot read; "
                            f"re-save it with MATLAB `save(..., '-v7')` ({err})") from err
    except Exception as err:  # scipy raises ValueError/TypeError/OSError on corrupt files
        raise ManifestError(f"{dataset}: cannot read {str(path)!r} ({type(err).__name__}: {err}); the file is "
                            f"corrupt or not the official one - download it again") from err
    missing = [k for k in keys if k not in mat]
    if missing:
        found = [k for k in mat if not k.startswith("__")]
        raise ManifestError(f"{dataset}: {str(path)!r} lacks variable(s) {', '.join(missing)} "
                            f"(found: {', '.join(found) or 'none'}); is it the official file?")
    return {k: mat[k] for k in keys}


def mat_strings(value) -> list[str]:
    """A MATLAB cell array of strings (as loaded by scipy) as a flat list of Python strings."""
    out = []
    for item in np.ravel(value):
        while isinstance(item, np.ndarray):
            item = item.ravel()[0] if item.size else ""
        out.append(str(item).strip())
    return out


def read_table(path: Path, columns: Iterable[str], dataset: str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with ManifestError on unreadable files or missing ``columns``."""
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise ManifestError(f"{dataset}: cannot parse {str(path)!r} ({err}); the file is corrupt or not the "
                            f"official one - download it again") from err
    return check_columns(df, columns, path, dataset)


def check_columns(df: pd.DataFrame, columns: Iterable[str], path, dataset: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(f"{dataset}: {str(path)!r} lacks column(s) {', '.join(missing)} (found: "
                            f"{', '.join(map(str, df.columns))}). Expected: {get_card(dataset).official_layout}")
    return df


def numbers(values, path, column: str, dataset: str, names=None) -> np.ndarray:
    """Values as floats; ManifestError naming the first entry that is not a number."""
    series = pd.Series(np.ravel(values))
    out = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(out) & series.notna().to_numpy())
    if len(bad):
        i = int(bad[0])
        what = f" ({names[i]})" if names is not None else ""
        raise ManifestError(f"{dataset}: {str(path)!r}: `{column}` entry {i + 1}{what} is {series.iloc[i]!r}, "
                            f"not a number")
    return out


def join(*parts: str) -> str:
    """POSIX path from non-empty parts (``image_dir`` may be "")."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def case_insensitive_index(directory: Path) -> dict[str, str]:
    """Lower-case file name -> name on disk, for files directly in ``directory`` (empty if absent)."""
    if not directory.is_dir():
        return {}
    return {n.lower(): n for n in os.listdir(directory) if not n.startswith(".")}


def iqa_frame(images, score, score_column: str, sign: float, **extra) -> pd.DataFrame:
    score = np.asarray(score, dtype=float)
    df = pd.DataFrame({"image": list(images), score_column: score, "quality": sign * score})
    for k, v in extra.items():
        df[k] = list(v) if not np.isscalar(v) else v
    return df


# ----------------------------------------------------------------------------- authentic distortions
def prepare_livec(root: Path, check_images: bool = True) -> pd.DataFrame:
    """LIVEC: 1,169 .mat entries minus the 7 subject-training images t1..t7 (LoDa/IQA-PyTorch
    ``meta_info[7:]``) = 1,162 rows, image ``[ChallengeDB_release/]Images/NAME``."""
    base = "ChallengeDB_release" if (root / "ChallengeDB_release").is_dir() else ""
    files = {k: require(root, join(base, f"Data/{k}.mat"), "livec")
             for k in ("AllImages_release", "AllMOS_release", "AllStdDev_release")}
    names = mat_strings(load_mat(files["AllImages_release"], ["AllImages_release"], "livec")["AllImages_release"])
    mos = numbers(load_mat(files["AllMOS_release"], ["AllMOS_release"], "livec")["AllMOS_release"],
                  files["AllMOS_release"], "AllMOS_release", "livec")
    std = numbers(load_mat(files["AllStdDev_release"], ["AllStdDev_release"], "livec")["AllStdDev_release"],
                  files["AllStdDev_release"], "AllStdDev_release", "livec")
    if not len(names) == len(mos) == len(std):
        raise ManifestError(f"livec: the .mat files disagree in length (names {len(names)}, MOS {len(mos)}, "
                            f"std {len(std)}); they must come from the same release")
    training = [f"t{i}.bmp" for i in range(1, 8)]
    if [n.lower() for n in names[:7]] != training:
        raise ManifestError(f"livec: expected the first 7 entries of AllImages_release.mat to be the training "
                            f"images t1.bmp..t7.bmp, found {names[:7]}; not the official release?")
    names, mos, std = names[7:], mos[7:], std[7:]
    return iqa_frame([join(base, "Images", n) for n in names], mos, "mos", 1.0, std=std)


def prepare_koniq10k(root: Path, check_images: bool = True, image_dir: str = "1024x768",
                     labels_file: str = "koniq10k_distributions_sets.csv") -> pd.DataFrame:
    """KonIQ-10k: one row per line of the official CSV; keeps ``set``, ``std`` (SD) and ``c_total``."""
    path = require(root, labels_file, "koniq10k")
    df = read_table(path, ["image_name", "MOS", "SD"], "koniq10k")
    mos = numbers(df["MOS"], path, "MOS", "koniq10k", names=df["image_name"])
    extra = {"std": df["SD"].to_numpy()}
    for col in ("c_total", "set"):
        if col in df:
            extra[col] = df[col].to_numpy()
    return iqa_frame([join(image_dir, n) for n in df["image_name"].astype(str)], mos, "mos", 1.0, **extra)


SPAQ_LABELS = "Annotations/MOS and Image attribute scores"


def prepare_spaq(root: Path, check_images: bool = True, image_dir: str = "TestImage") -> pd.DataFrame:
    """SPAQ: the MOS sheet (.xlsx via openpyxl, or a .csv export of it) -> MOS + 5 attribute scores."""
    xlsx, csv = root / f"{SPAQ_LABELS}.xlsx", root / f"{SPAQ_LABELS}.csv"
    if csv.is_file():
        df = read_table(csv, ["Image name", "MOS"], "spaq")
        path = csv
    elif xlsx.is_file():
        try:
            import openpyxl  # noqa: F401  (pandas' .xlsx engine)
        except ImportError as err:
            raise ManifestError(f"spaq: reading {str(xlsx)!r} needs the optional package openpyxl "
                                f"(`pip install openpyxl`); or export the sheet as {str(csv)!r}") from err
        try:
            df = check_columns(pd.read_excel(xlsx), ["Image name", "MOS"], xlsx, "spaq")
        except ManifestError:
            raise
        except Exception as err:
            raise ManifestError(f"spaq: cannot read {str(xlsx)!r} ({err}); download it again") from err
        path = xlsx
    else:
        raise ManifestError(f"spaq: neither {str(xlsx)!r} nor its CSV export {str(csv)!r} exists. "
                            f"Expected: {get_card('spaq').official_layout}")
    mos = numbers(df["MOS"], path, "MOS", "spaq", names=df["Image name"])
    attrs = {c.lower(): df[c].to_numpy() for c in df.columns
             if c in ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")}
    return iqa_frame([join(image_dir, str(n)) for n in df["Image name"]], mos, "mos", 1.0, **attrs)


def prepare_flive(root: Path, check_images: bool = True, image_dir: str = "database",
                  labels_file: str = "labels_image.csv") -> pd.DataFrame:
    """FLIVE: whole-image labels only (``labels_image.csv``: ``name``, ``mos``), as LoDa."""
    path = require(root, labels_file, "flive")
    df = read_table(path, ["name", "mos"], "flive")
    mos = numbers(df["mos"], path, "mos", "flive", names=df["name"])
    return iqa_frame([join(image_dir, str(n)) for n in df["name"]], mos, "mos", 1.0)


# ----------------------------------------------------------------------------- synthetic distortions
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def prepare_live(root: Path, check_images: bool = True, realigned: bool = True) -> pd.DataFrame:
    """LIVE Release 2: the 982 entries in folder order jp2k, jpeg, wn, gblur, fastfading (imgN.bmp);
    keeps the 779 with ``orgs == 0``; ``quality`` = -DMOS; ``reference`` = reference name without .bmp."""
    name, key = ("dmos_realigned.mat", "dmos_new") if realigned else ("dmos.mat", "dmos")
    dmos_path = require(root, name, "live")
    mat = load_mat(dmos_path, [key, "orgs"], "live")
    dmos = numbers(mat[key], dmos_path, key, "live")
    orgs = numbers(mat["orgs"], dmos_path, "orgs", "live")
    ref_path = require(root, "refnames_all.mat", "live")
    refs = mat_strings(load_mat(ref_path, ["refnames_all"], "live")["refnames_all"])
    folders = [f for f, n in LIVE_FOLDERS for _ in range(n)]
    files = [f"{f}/img{i}.bmp" for f, n in LIVE_FOLDERS for i in range(1, n + 1)]
    if not len(dmos) == len(orgs) == len(refs) == len(files):
        raise ManifestError(f"live: expected {len(files)} entries in {name} ({key}, orgs) and refnames_all.mat, "
                            f"found {len(dmos)}, {len(orgs)} and {len(refs)}; not the Release 2 files?")
    keep = orgs == 0
    df = iqa_frame(np.array(files)[keep], dmos[keep], "dmos", -1.0,
                   reference=[os.path.splitext(r)[0] for r, k in zip(refs, keep) if k],
                   distortion=np.array(folders)[keep])
    df.attrs["sidecar"] = {"dmos_file": name}
    return df


_TID_NAME = re.compile(r"^i(\d\d)_(\d\d)_(\d)\.bmp$", re.IGNORECASE)


def prepare_tid2013(root: Path, check_images: bool = True) -> pd.DataFrame:
    """TID2013: ``mos_with_names.txt`` lines ``MOS name``; names matched case-insensitively against
    ``distorted_images/``; ``reference`` = lower-case ``iNN``; distortion type and level from the name."""
    path = require(root, "mos_with_names.txt", "tid2013")
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8", errors="strict").splitlines() if ln.strip()]
    except UnicodeDecodeError as err:
        raise ManifestError(f"tid2013: {str(path)!r} is not a text file ({err}); download it again") from err
    bad = [i for i, parts in enumerate(lines) if len(parts) != 2 or not _TID_NAME.match(parts[1])]
    if bad:
        i = bad[0]
        raise ManifestError(f"tid2013: {str(path)!r} line {i + 1} is {' '.join(lines[i])!r}; expected "
                            f"'MOS iNN_DD_L.bmp' ({len(bad)} such line(s))")
    names = [parts[1] for parts in lines]
    mos = numbers([parts[0] for parts in lines], path, "MOS", "tid2013", names=names)
    on_disk = case_insensitive_index(root / "distorted_images")
    files = [on_disk.get(n.lower(), n) for n in names]
    parsed = [_TID_NAME.match(n).groups() for n in names]
    extra = {"reference": [f"i{p[0]}" for p in parsed], "distortion": [int(p[1]) for p in parsed],
             "level": [int(p[2]) for p in parsed]}
    std_path = root / "mos_std.txt"
    if std_path.is_file():
        std = numbers(std_path.read_text(encoding="utf-8").split(), std_path, "std", "tid2013")
        if len(std) != len(names):
            raise ManifestError(f"tid2013: {str(std_path)!r} has {len(std)} values for {len(names)} images")
        extra["std"] = std
    return iqa_frame([f"distorted_images/{f}" for f in files], mos, "mos", 1.0, **extra)


def prepare_kadid10k(root: Path, check_images: bool = True) -> pd.DataFrame:
    """KADID-10k: ``dmos.csv``; its ``dmos`` is MOS-like (1-5, higher = better), so ``quality`` = dmos."""
    path = require(root, "dmos.csv", "kadid10k")
    df = read_table(path, ["dist_img", "ref_img", "dmos"], "kadid10k")
    dmos = numbers(df["dmos"], path, "dmos", "kadid10k", names=df["dist_img"])
    extra = {"reference": [os.path.splitext(str(r))[0] for r in df["ref_img"]]}
    if "var" in df:
        extra["var"] = df["var"].to_numpy()
    return iqa_frame([f"images/{n}" for n in df["dist_img"].astype(str)], dmos, "dmos", 1.0, **extra)


IQA_PREPARERS = {"livec": prepare_livec, "koniq10k": prepare_koniq10k, "spaq": prepare_spaq,
                 "flive": prepare_flive, "live": prepare_live, "tid2013": prepare_tid2013,
                 "kadid10k": prepare_kadid10k}
