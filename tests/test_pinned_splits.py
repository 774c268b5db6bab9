"""Committed split files (data_manifests/splits) and the splits of a manifest (percept.data.pinned)."""
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from pin_splits import SOURCES, pin

from percept.data.pinned import (
    PINNED_DATASETS,
    PINNED_SPLITS_DIR,
    compute_splits,
    load_pinned_splits,
    pinned_split_path,
    split_key,
    splits_for_manifest,
)
from percept.data.prepare import prepare
from percept.data.splits import (
    DATASET_PROTOCOLS,
    SplitError,
    emotionroi_splits,
    iqa_authentic_splits,
    split_columns,
    validate_split_columns,
)
from percept.data.synthetic import generate_synthetic_iqa

# dataset: (images, splits, (train, val, test) of every split) — from the recipes' int(round(f * n)):
# IQA: test = n - round(0.8 n), val = round(0.1 * round(0.8 n)); EmotionROI: round(0.75 n), round(0.05 n).
EXPECTED = {"livec": (1162, 10, (837, 93, 232)), "koniq10k": (10073, 10, (7252, 806, 2015)),
            "emotionroi": (1980, 5, (1485, 99, 396))}


def counts(df, col):
    return tuple(int((df[col] == p).sum()) for p in ("train", "val", "test"))


def test_pinned_datasets_are_the_committed_files():
    assert set(PINNED_DATASETS) == set(EXPECTED)
    committed = {p.name for p in PINNED_SPLITS_DIR.iterdir()}
    assert committed == {f"{n}.csv{s}" for n in EXPECTED for s in ("", ".json")}
    assert "lamem.csv" not in committed  # LaMem's official splits live in its manifest, not here


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_committed_files_load_with_the_recipe_counts(dataset):
    n, k, sizes = EXPECTED[dataset]
    df = load_pinned_splits(dataset)  # read_splits: checksum, counts, dataset and protocol
    meta = df.attrs["splits"]
    assert (meta["dataset"], meta["protocol"]) == (dataset, DATASET_PROTOCOLS[dataset])
    assert len(df) == n and df["image"].is_unique and split_columns(df) == [f"split{i}" for i in range(1, k + 1)]
    assert all(counts(df, c) == sizes for c in split_columns(df))
    validate_split_columns(df)  # every image in exactly one part of each split
    tests = [frozenset(df.loc[df[c] == "test", "image"]) for c in split_columns(df)]
    assert len(set(tests)) == k  # the test parts differ between splits
    # repeated random splits, not folds: test parts overlap, so some image is tested in several splits
    # and (for these seeds and sizes) some image in none
    in_test = (df[split_columns(df)] == "test").sum(axis=1)
    assert in_test.max() > 1 and (in_test == 0).any()


def test_committed_files_equal_the_recipe_over_their_own_rows():
    """The committed files are the recipes' output over the rows in file (= manifest) order."""
    for dataset, recipe in (("livec", iqa_authentic_splits), ("koniq10k", iqa_authentic_splits),
                            ("emotionroi", emotionroi_splits)):
        df = load_pinned_splits(dataset)
        assert recipe(df["image"].tolist()).equals(pd.DataFrame(df)), dataset


def test_committed_keys_and_order():
    livec = load_pinned_splits("livec")["image"]
    assert livec.str.match(r"^Images/[^/]+$").all() and livec.iloc[0] == "Images/100.bmp"
    assert not livec.isin([f"Images/trainingImages/t{i}.bmp" for i in range(1, 8)]).any()
    assert load_pinned_splits("koniq10k")["image"].str.fullmatch(r"\d+\.jpg").all()
    emo = load_pinned_splits("emotionroi")["image"]
    assert emo.iloc[0] == "images/anger/1.jpg" and emo.str.split("/").str[1].value_counts().eq(330).all()
    assert split_key("livec", "ChallengeDB_release/Images/5.bmp") == split_key("livec", "Images/5.bmp") == "Images/5.bmp"
    assert split_key("koniq10k", "512x384/1.jpg") == split_key("koniq10k", "1024x768/1.jpg") == "1.jpg"
    assert split_key("emotionroi", "images/joy/3.jpg") == "images/joy/3.jpg"


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_regenerating_from_the_official_files_is_byte_identical(dataset, data_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full label lists: no count warning
        path = pin(dataset, data_root / SOURCES[dataset], tmp_path)
    for suffix in ("", ".json"):
        new, old = path.with_name(path.name + suffix), pinned_split_path(dataset).with_name(path.name + suffix)
        assert new.read_bytes() == old.read_bytes(), new.name


def livec_manifest(keys, prefix="ChallengeDB_release/"):
    """A LIVEC-shaped manifest listing ``keys`` (no real files needed)."""
    mos = np.linspace(10, 90, len(keys))
    return pd.DataFrame({"image": [prefix + k for k in keys], "mos": mos, "quality": mos})


def test_partial_livec_manifest_keeps_the_pinned_parts(data_root, tmp_path):
    with pytest.warns(UserWarning, match="535 rows dropped"):
        manifest, _ = prepare("livec", data_root / "livec", out=tmp_path / "livec.csv", allow_partial=True)
    assert len(manifest) == 627
    out = splits_for_manifest("livec", manifest)
    assert out["image"].tolist() == manifest["image"].tolist()
    assert out.drop(columns=split_columns(out)).equals(manifest)
    pinned = load_pinned_splits("livec").set_index("image")
    keys = [p.removeprefix("ChallengeDB_release/") for p in manifest["image"]]
    cols = [f"split{k}" for k in range(1, 11)]
    assert (out[cols].to_numpy() == pinned.loc[keys, cols].to_numpy()).all()
    # not recomputed over the 627 rows (that would give round(0.2 * 627) = 125 test images per split)
    assert counts(out, "split1")[2] != 125 and not out[cols].equals(compute_splits("livec", manifest)[cols])
    assert sum(counts(out, "split1")) == 627


def test_livec_root_choice_does_not_change_the_splits():
    keys = load_pinned_splits("livec")["image"].tolist()[::7]
    a = splits_for_manifest("livec", livec_manifest(keys))
    b = splits_for_manifest("livec", livec_manifest(keys, prefix=""))  # root = ChallengeDB_release itself
    assert a["image"].str.startswith("ChallengeDB_release/Images/").all() and b["image"].str.startswith("Images/").all()
    assert a.drop(columns="image").equals(b.drop(columns="image"))


def test_unknown_manifest_image_is_named():
    keys = load_pinned_splits("livec")["image"].tolist()[:20] + ["Images/not_in_release.jpg"]
    with pytest.raises(SplitError, match=r"1 manifest image\(s\) are not in the pinned split file .*livec\.csv: "
                                         r"ChallengeDB_release/Images/not_in_release\.jpg"):
        splits_for_manifest("livec", livec_manifest(keys))


def test_edited_or_missing_committed_file_is_refused(tmp_path):
    shutil.copytree(PINNED_SPLITS_DIR, tmp_path / "splits")
    keys = load_pinned_splits("livec")["image"].tolist()
    assert len(splits_for_manifest("livec", livec_manifest(keys), directory=tmp_path / "splits")) == 1162
    path = tmp_path / "splits" / "livec.csv"
    text = path.read_text()
    first = text.splitlines()[1]
    path.write_text(text.replace(first, first.replace("test", "train", 1) if "test" in first
                                 else first.replace("train", "test", 1), 1))
    with pytest.raises(SplitError, match=r"livec: pinned split file refused: .*SHA-256 does not match.*pin_splits"):
        splits_for_manifest("livec", livec_manifest(keys), directory=tmp_path / "splits")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"pinned split file .*livec\.csv' is missing.*pin_splits.py --data-root"):
        splits_for_manifest("livec", livec_manifest(keys), directory=tmp_path / "splits")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(SplitError, match=r"no split protocol for dataset 'memcat'; known datasets: emoset, "
                                         r"emotionroi, flive"):
        compute_splits("memcat", pd.DataFrame({"image": ["a.jpg"]}))
    with pytest.raises(SplitError, match="known datasets"):
        pinned_split_path("nope")


def test_synthetic_demo_set_splits_by_reference(tmp_path):
    manifest = generate_synthetic_iqa(tmp_path, n_references=10, size=16, seed=0)
    assert len(manifest) == 200
    table = compute_splits("kadid10k", manifest)  # the demo set imitates KADID-10k
    out = splits_for_manifest("kadid10k", manifest)
    assert out.drop(columns=split_columns(out)).equals(manifest)
    validate_split_columns(out, groups="reference")
    for col in split_columns(table):
        assert (table[col] == out[col]).all()
        per_ref = out.groupby("reference")[col].nunique()
        assert (per_ref == 1).all()  # no reference in two parts
        refs = out.groupby(col)["reference"].nunique().to_dict()
        assert refs == {"train": 7, "val": 1, "test": 2}  # 8 of 10 refs train+val, 10% of 8 -> 1 val
    # a reference moved across parts is caught
    leak = out.copy()
    leak.loc[leak.index[leak.split1 == "test"][0], "split1"] = "train"
    with pytest.raises(SplitError, match="split1: group"):
        validate_split_columns(leak, groups="reference")
    with pytest.raises(SplitError, match="no 'reference' column"):
        compute_splits("kadid10k", manifest.drop(columns="reference"))


def test_official_splits_carried_by_the_manifest_are_kept():
    images = [f"images/{i:08d}.jpg" for i in range(40)]
    lamem = pd.DataFrame({"image": images, "memorability": np.linspace(0, 1, 40)})
    for k in range(1, 6):  # not what LoDa's recipe would draw
        lamem[f"split{k}"] = ["val" if i == k else "train" if (i + k) % 5 else "test" for i in range(40)]
    out = splits_for_manifest("lamem", lamem)
    assert out.equals(lamem)
    with pytest.raises(SplitError, match="has none"):
        compute_splits("lamem", lamem[["image", "memorability"]])
    bad = lamem.copy()
    bad.loc[0, "split2"] = "training"
    with pytest.raises(SplitError, match="lamem: split2: invalid value"):
        splits_for_manifest("lamem", bad)
    sun = pd.DataFrame({"image": [f"p/{i}.png" for i in range(6)], "memorability": 0.5,
                        "split1": ["train", "test", "none", "train", "test", "none"]})
    out = splits_for_manifest("sun_memorability", sun)
    assert out["split1"].tolist() == ["train", "test", "", "train", "test", ""]
    drawn = splits_for_manifest("sun_memorability", sun.drop(columns="split1"))
    assert len(split_columns(drawn)) == 25 and counts(drawn, "split1") == (3, 0, 3)
    # official train/test halves: 10% of train becomes val, test untouched
    sun = pd.DataFrame({"image": [f"p/{i}.png" for i in range(44)], "memorability": 0.5,
                        "split1": ["train"] * 20 + ["test"] * 20 + ["none"] * 4})
    out = splits_for_manifest("sun_memorability", sun)
    assert counts(out, "split1") == (18, 2, 20) and (out["split1"][20:40] == "test").all()
    emoset = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg"], "split": ["train", "val", "test"]})
    assert splits_for_manifest("emoset", emoset)["split1"].tolist() == ["train", "val", "test"]
    with pytest.raises(SplitError, match="no 'concept' column"):
        splits_for_manifest("things", pd.DataFrame({"image": ["x.jpg", "y.jpg"]}))
    things = pd.DataFrame({"image": [f"o/c{i // 2}/{i}.jpg" for i in range(80)], "concept": [f"c{i // 2}" for i in range(80)]})
    out = splits_for_manifest("things", things)
    assert len(split_columns(out)) == 5 and counts(out, "split1") == (60, 4, 16)


def test_computed_splits_follow_manifest_order_and_refuse_existing_columns():
    images = [f"TestImage/{i:05d}.jpg" for i in range(100)]
    spaq = pd.DataFrame({"image": images, "mos": 50.0})
    out = splits_for_manifest("spaq", spaq)
    assert out[split_columns(out)].equals(iqa_authentic_splits(images)[split_columns(out)])
    with pytest.raises(SplitError, match="already has split columns"):
        splits_for_manifest("spaq", out)
    with pytest.raises(SplitError, match="already has split columns"):
        splits_for_manifest("livec", livec_manifest(load_pinned_splits("livec")["image"].tolist()).assign(split1="test"))
