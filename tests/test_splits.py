"""Tests for the pinned, seeded dataset splits (paper §4.1–4.3; LoDa's split recipe)."""
import json
import random

import numpy as np
import pandas as pd
import pytest

from percept.data.pinned import read_splits, sidecar_path, write_splits
from percept.data.splits import (
    PROTOCOLS,
    SplitError,
    attach_splits,
    emotionroi_splits,
    iqa_authentic_splits,
    iqa_synthetic_splits,
    random_splits,
    split_columns,
    sun_memorability_splits,
    things_splits,
    validate_split_columns,
)

IMAGES = [f"img{i:03d}" for i in range(50)]


def loda_reference(units, n_splits=10, seed=3407):
    """Independent re-implementation of LoDa's get_random_splits with the *global* random module."""
    state = random.getstate()
    try:
        random.seed(seed)
        order = list(range(len(units)))
        n_train = int(round(0.8 * len(units)))
        out = []
        for _ in range(n_splits):
            random.shuffle(order)  # same list, shuffled again
            out.append(({units[i] for i in order[:n_train]}, {units[i] for i in order[n_train:]}))
        return out
    finally:
        random.setstate(state)


def parts(df, col):
    return {p: set(df.loc[df[col] == p, "image"]) for p in ("train", "val", "test")}


def counts(df, col):
    return tuple(int((df[col] == p).sum()) for p in ("train", "val", "test"))


def test_authentic_equals_loda_recipe_and_pinned_ids():
    df = iqa_authentic_splits(IMAGES)
    assert list(df.columns) == ["image"] + [f"split{k}" for k in range(1, 11)]
    assert df["image"].tolist() == IMAGES
    for k, (train, test) in enumerate(loda_reference(IMAGES), start=1):
        p = parts(df, f"split{k}")
        assert p["test"] == test and p["train"] | p["val"] == train
        # validation: 10% of that split's train images, chosen by random.Random(3407 + k) over sorted train positions
        train_pos = sorted(IMAGES.index(i) for i in train)
        random.Random(3407 + k).shuffle(train_pos)
        assert p["val"] == {IMAGES[i] for i in train_pos[:4]}
    # pinned literals (also guard against a change of Python's random.shuffle)
    assert df.loc[df.split1 == "test", "image"].tolist()[:5] == ["img003", "img008", "img013", "img015", "img019"]
    assert df.loc[df.split2 == "test", "image"].tolist()[:5] == ["img000", "img002", "img005", "img010", "img011"]


def test_determinism_seed_and_order():
    a, b = iqa_authentic_splits(IMAGES), iqa_authentic_splits(list(IMAGES))
    assert a.equals(b)
    assert not a.equals(iqa_authentic_splits(IMAGES, seed=1))
    rev = iqa_authentic_splits(IMAGES[::-1]).set_index("image").loc[IMAGES].reset_index()
    assert not rev.equals(a)  # manifest order is part of the split
    assert emotionroi_splits(IMAGES).equals(emotionroi_splits(IMAGES))
    assert sun_memorability_splits(IMAGES).equals(sun_memorability_splits(IMAGES))


@pytest.mark.parametrize("n, expected", [(50, (36, 4, 10)), (1162, (837, 93, 232)), (10073, (7252, 806, 2015))])
def test_authentic_proportions(n, expected):
    df = iqa_authentic_splits([f"i{j}" for j in range(n)])
    assert all(counts(df, f"split{k}") == expected for k in range(1, 11))
    validate_split_columns(df)


def synthetic_set():
    refs = [f"ref{r:02d}.png" for r in range(25)]
    rows = [(f"{ref[:-4]}_d{d:03d}.png", ref) for ref in refs for d in range(120)]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]  # row order must not matter
    return [r[0] for r in rows], [r[1] for r in rows]


def test_synthetic_by_reference_no_leak():
    images, refs = synthetic_set()
    df = iqa_synthetic_splits(images, refs)
    validate_split_columns(df, groups=refs)
    ref_of = dict(zip(images, refs))
    loda = loda_reference(sorted(set(refs)))  # LoDa's KADID-10k script: sorted refs, int(round(0.8 n))
    for k in range(1, 11):
        p = parts(df, f"split{k}")
        ref_parts = {name: {ref_of[i] for i in imgs} for name, imgs in p.items()}
        assert not (ref_parts["train"] & ref_parts["val"] or ref_parts["train"] & ref_parts["test"]
                    or ref_parts["val"] & ref_parts["test"])
        assert tuple(len(ref_parts[x]) for x in ("train", "val", "test")) == (18, 2, 5)
        assert counts(df, f"split{k}") == (2160, 240, 600)
        assert ref_parts["train"] | ref_parts["val"] == loda[k - 1][0] and ref_parts["test"] == loda[k - 1][1]
    # the assignment depends on the references only, not on the image row order
    again = iqa_synthetic_splits(images[::-1], refs[::-1]).set_index("image").loc[images].reset_index()
    assert again.equals(df)


def test_validate_detects_reference_leak():
    images, refs = synthetic_set()
    df = iqa_synthetic_splits(images, refs)
    victim = df.index[df.split3 == "train"][0]
    df.loc[victim, "split3"] = "test"
    with pytest.raises(SplitError, match=rf"split3: group '{refs[victim]}' is in parts \['test', 'train'\]"):
        validate_split_columns(df, groups=refs)
    validate_split_columns(df)  # without groups the per-image check still passes


def test_emotionroi_proportions():
    images = [f"e{i}" for i in range(1980)]
    df = emotionroi_splits(images)
    assert df.shape == (1980, 6)
    assert all(counts(df, f"split{k}") == (1485, 99, 396) for k in range(1, 6))
    labels = [["joy", "surprise", "anger", "disgust", "fear", "sadness"][i % 6] for i in range(1980)]
    st = emotionroi_splits(images, labels, stratify=True)
    for k in range(1, 6):
        per_class = pd.crosstab(pd.Series(labels), st[f"split{k}"].values)
        assert (per_class["test"] == 66).all() and (per_class["val"] == 16).all()
    with pytest.raises(SplitError, match="labels"):
        emotionroi_splits(images, stratify=True)


def test_sun_and_things():
    images = [f"sun{i}" for i in range(2222)]
    df = sun_memorability_splits(images)
    assert len(split_cols := [c for c in df.columns if c != "image"]) == 25
    # 10% of each half/half train part becomes val (the official splits have none; model selection needs it)
    assert all(counts(df, c) == (1000, 111, 1111) for c in split_cols)
    plain = random_splits(images, 25, (0.5, 0.0, 0.5))
    for c in split_cols:
        assert set(parts(df, c)["train"]) | set(parts(df, c)["val"]) == set(parts(plain, c)["train"])
        assert set(parts(df, c)["test"]) == set(parts(plain, c)["test"])
    validate_split_columns(df)
    # THINGS: 5 splits 75/5/20 of the 40 concepts, every image with its concept
    concepts = [f"concept{i // 3:02d}" for i in range(120)]
    th = things_splits([f"t{i}" for i in range(120)], concepts)
    assert split_columns(th) == [f"split{k}" for k in range(1, 6)]
    validate_split_columns(th, concepts)
    for c in split_columns(th):
        per_part = pd.Series(concepts).groupby(th[c].to_numpy()).nunique()
        assert per_part.to_dict() == {"test": 8, "train": 30, "val": 2}
    assert len({frozenset(parts(th, c)["test"]) for c in split_columns(th)}) == 5
    assert {"iqa_authentic", "iqa_synthetic", "lamem", "emotionroi", "emoset", "sun_memorability",
            "things"} <= set(PROTOCOLS)


def test_splits_differ_from_each_other():
    images, refs = synthetic_set()
    for df in (iqa_authentic_splits(IMAGES), iqa_synthetic_splits(images, refs), emotionroi_splits(IMAGES),
               sun_memorability_splits([f"s{i}" for i in range(100)])):
        tests = [frozenset(parts(df, c)["test"]) for c in df.columns[1:]]
        assert len(set(tests)) == len(tests)


def test_random_splits_groups_and_bad_input():
    images, refs = synthetic_set()
    df = random_splits(images, 3, (0.6, 0.2, 0.2), seed=7, groups=refs)
    validate_split_columns(df, groups=refs)
    assert counts(df, "split1") == (15 * 120, 5 * 120, 5 * 120)
    with pytest.raises(SplitError, match="summing to 1"):
        random_splits(IMAGES, 2, (0.8, 0.1, 0.2))
    with pytest.raises(SplitError, match="more than once"):
        random_splits(IMAGES + ["img000"], 2)


def test_validate_errors():
    good = iqa_authentic_splits(IMAGES)
    bad = good.copy(); bad.loc[0, "split1"] = "training"
    with pytest.raises(SplitError, match="split1: invalid value"):
        validate_split_columns(bad)
    dup = pd.concat([good, good.iloc[:1]])
    with pytest.raises(SplitError, match="more than one row"):
        validate_split_columns(dup)
    no_test = good.copy(); no_test.loc[no_test.split4 == "test", "split4"] = ""
    with pytest.raises(SplitError, match="split4: the 'test' part is empty"):
        validate_split_columns(no_test)
    no_val = good.copy(); no_val.loc[no_val.split2 == "val", "split2"] = "train"
    with pytest.raises(SplitError, match="split2: the 'val' part is empty"):
        validate_split_columns(no_val)
    with pytest.raises(SplitError, match="no 'splitK' columns"):
        validate_split_columns(good[["image"]])
    late = good.copy(); late.loc[0, "split7"] = "training"  # an invalid value in a later column is named as such
    with pytest.raises(SplitError, match=r"split7: invalid value\(s\) \['training'\]"):
        validate_split_columns(late)


def test_write_read_roundtrip(tmp_path):
    images, refs = synthetic_set()
    df = iqa_synthetic_splits(images, refs)
    path = write_splits(df, tmp_path / "kadid" / "splits.csv", "kadid10k", "iqa_synthetic", groups=refs)
    meta = json.loads(sidecar_path(path).read_text())
    assert (meta["dataset"], meta["protocol"], meta["n_images"], meta["n_splits"]) == (
        "kadid10k", "iqa_synthetic", 3000, 10)
    assert meta["counts"]["split1"] == {"train": 2160, "val": 240, "test": 600}
    assert path.read_bytes().startswith(b"image,split1,split2,")
    back = read_splits(path, dataset="kadid10k", protocol="iqa_synthetic")
    assert back.equals(df) and back.attrs["splits"] == meta
    with pytest.raises(SplitError, match="dataset is 'kadid10k', expected 'live'"):
        read_splits(path, dataset="live")
    assert not list(tmp_path.rglob("*.tmp"))


def test_read_detects_edited_file(tmp_path):
    path = write_splits(iqa_authentic_splits(IMAGES), tmp_path / "livec.csv", "livec", "iqa_authentic")
    text = path.read_text()
    path.write_text(text.replace("img003,test", "img003,train", 1))
    with pytest.raises(SplitError, match=r"livec\.csv: SHA-256 does not match.*regenerate"):
        read_splits(path)


def test_verified_split_files_are_parsed_once_per_content_and_never_trusted_after_an_edit(tmp_path, monkeypatch):
    from percept.data import pinned as split_files
    path = write_splits(iqa_authentic_splits(IMAGES), tmp_path / "livec.csv", "livec", "iqa_authentic")
    first = read_splits(path, dataset="livec")
    first.loc[0, "split1"] = "changed by the caller"      # a caller's edit never reaches the cache

    def no_second_validation(*args, **kwargs):
        raise AssertionError("validated again")
    monkeypatch.setattr(split_files, "validate_split_columns", no_second_validation)
    again = read_splits(path, dataset="livec")             # same bytes, same sidecar: from the cache
    assert again.equals(read_splits(path, dataset="livec")) and again.loc[0, "split1"] != "changed by the caller"
    assert again.attrs["splits"]["dataset"] == "livec"
    with pytest.raises(SplitError, match="dataset is 'livec', expected 'live'"):
        read_splits(path, dataset="live")                    # another question about the same bytes: checked
    path.write_text(path.read_text().replace("img003,test", "img003,train", 1))
    with pytest.raises(SplitError, match="SHA-256 does not match"):
        read_splits(path, dataset="livec")                   # edited bytes: never from the cache


def test_read_detects_wrong_counts(tmp_path):
    path = write_splits(iqa_authentic_splits(IMAGES), tmp_path / "livec.csv", "livec", "iqa_authentic")
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta["counts"]["split1"]["test"] += 1  # sidecar edited, checksum still right
    side.write_text(json.dumps(meta))
    with pytest.raises(SplitError, match=r"livec\.csv does not match its sidecar.*counts.*by hand"):
        read_splits(path)
    meta = json.loads(side.read_text()); meta["n_images"] = 51; side.write_text(json.dumps(meta))
    with pytest.raises(SplitError, match="50 images, sidecar says 51"):
        read_splits(path)
    side.unlink()
    with pytest.raises(SplitError, match="no sidecar"):
        read_splits(path)


def test_attach_splits():
    manifest = pd.DataFrame({"image": IMAGES[::-1], "mos": np.arange(50.0)})
    splits = iqa_authentic_splits(IMAGES)
    out = attach_splits(manifest, splits)
    assert out["image"].tolist() == IMAGES[::-1] and out["mos"].tolist() == list(np.arange(50.0))
    assert out.set_index("image").loc[IMAGES, "split1"].tolist() == splits["split1"].tolist()
    with pytest.raises(SplitError, match=r"2 manifest images have no split entry, e.g. \['img049', 'img048'\]"):
        attach_splits(manifest, splits[splits.image.isin(IMAGES[:48])])
    with pytest.raises(SplitError, match="3 split images are not in the manifest"):
        attach_splits(manifest.iloc[3:], splits)
    with pytest.raises(SplitError, match="already has split columns"):
        attach_splits(out, splits)
