"""Training on a CSV of your own: `percept train --dataset csv:PATH --task ...`: the task's protocol
splits drawn once (seeded) beside the CSV and reused, the same checks as a prepared dataset, bad rows named."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from percept.data.cards import get_card
from percept.data.manifest import ManifestError
from percept.data.sources import DataConfig, open_source
from percept.data.splits import SplitError, iqa_authentic_splits, split_columns
from percept.data.user_csv import manifest_path, splits_path
from percept.interface.cli import main

CLASSES = ["amusement", "fear", "sadness"]


def _images(root, n=40):
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "img" / f"{i:02d}.png")
    return [f"img/{i:02d}.png" for i in range(n)]


@pytest.fixture
def folder(tmp_path):
    images = _images(tmp_path)
    rng = np.random.default_rng(1)
    pd.DataFrame({"image": images, "label": rng.uniform(1, 5, len(images)).round(3)}).to_csv(
        tmp_path / "quality.csv", index=False)
    pd.DataFrame({"image": images, "label": [CLASSES[i % 3] for i in range(len(images))]}).to_csv(
        tmp_path / "feelings.csv", index=False)
    return tmp_path


def test_iqa_csv_gets_the_protocol_splits_once_and_reuses_them(folder):
    source = open_source(DataConfig(f"csv:{folder / 'quality.csv'}", folder, task="iqa"))
    assert source.name == "csv-quality" and source.task == "iqa" and source.n_splits == 10
    # the splits are LoDa's IQA protocol over the CSV's rows in order (80/20 x 10, 10% of train as val)
    expected = iqa_authentic_splits(pd.read_csv(folder / "quality.csv")["image"].tolist())
    pd.testing.assert_frame_equal(source.frame[["image", *split_columns(expected)]], expected, check_dtype=False)
    counts = source.frame["split1"].value_counts().to_dict()
    assert counts == {"train": 29, "val": 3, "test": 8}
    first = splits_path(folder / "quality.csv").read_bytes()
    assert manifest_path(folder / "quality.csv").is_file()
    # a label edit keeps the images: the same splits are read back, the manifest is rewritten with the new labels
    table = pd.read_csv(folder / "quality.csv")
    table.loc[0, "label"] = 4.999
    table.to_csv(folder / "quality.csv", index=False)
    again = open_source(DataConfig(f"csv:{folder / 'quality.csv'}", folder, task="iqa"))
    assert splits_path(folder / "quality.csv").read_bytes() == first
    assert again.frame.loc[0, "quality"] == 4.999
    assert pd.read_csv(manifest_path(folder / "quality.csv")).loc[0, "quality"] == 4.999
    # an image added afterwards: refused, saying how to draw new splits
    _images(folder, 41)
    table.loc[len(table)] = ["img/40.png", 2.0]
    table.to_csv(folder / "quality.csv", index=False)
    with pytest.raises(SplitError, match=r"1 added.*img/40.png.*delete .*quality.splits.csv"):
        open_source(DataConfig(f"csv:{folder / 'quality.csv'}", folder, task="iqa"))


def test_emotion_csv_with_class_names_and_given_splits(folder):
    config = DataConfig(f"csv:{folder / 'feelings.csv'}", folder, task="emotion")
    assert config.classes == sorted(CLASSES)                       # from its label column, sorted
    source = open_source(config)
    assert source.class_names == tuple(sorted(CLASSES)) and source.n_splits == 5
    assert (source.frame["split1"] == "val").sum() == 2            # 75/5/20 of 40 images
    names = dict(zip(source.frame["image"], source.frame["label_name"]))
    assert names["img/01.png"] == "fear" and get_card("csv-feelings").classes == tuple(sorted(CLASSES))
    # split columns given in the CSV are used as they are, nothing is written
    table = pd.read_csv(folder / "feelings.csv")
    table["split"] = ["test" if i % 4 == 0 else "val" if i % 10 == 1 else "train" for i in range(len(table))]
    table.to_csv(folder / "given.csv", index=False)
    given = open_source(DataConfig(f"csv:{folder / 'given.csv'}", folder, task="emotion", classes=CLASSES))
    assert given.n_splits == 1 and (given.frame["split1"] == "test").sum() == 10
    assert not splits_path(folder / "given.csv").exists()
    assert given.class_names == tuple(CLASSES)                      # the order given, not sorted


def _csv(folder, name, text):
    (folder / name).write_text(text)
    return f"csv:{folder / name}"


@pytest.mark.parametrize("text, task, kwargs, error, match", [
    ("image,score\nimg/00.png,1\n", "iqa", {}, ManifestError, r"missing column\(s\) label \(found: image, score\)"),
    ("image,label\nimg/00.png,1\nimg/01.png,\n", "iqa", {}, ManifestError, r"empty/NaN at CSV line 3.*img/01.png"),
    ("image,label\nimg/00.png,1\nimg/01.png,nan\n", "memorability", {}, ManifestError, "CSV line 3"),
    ("image,label\nimg/00.png,1\nimg/01.png,good\n", "iqa", {}, ManifestError, r"'good' at CSV line 3.*not a finite"),
    ("image,label\nimg/00.png,0.5\nimg/01.png,3\n", "memorability", {}, ManifestError, r"= 3 at row 2.*range \[-1, 1\]"),
    ("image,label\nimg/00.png,fear\nimg/01.png,joy\n", "emotion", {"classes": CLASSES}, ManifestError,
     r"CSV line 3 \(image 'img/01.png'\) has class 'joy', which is not in the list"),
    ("image,label\nimg/00.png,0\nimg/01.png,1\n", "emotion", {}, ManifestError, "give the class names"),
    ("image,label\nimg/00.png,0\nimg/01.png,5\n", "emotion", {"classes": CLASSES}, ManifestError, "class index 5"),
    ("image,label\nimg/00.png,1\nimg/00.png,2\n", "iqa", {}, ManifestError,
     r"CSV lines 2, 3 name the same image 'img/00.png'"),
    # one image under several spellings is one image: './a', 'a' and 'sub/../a' cannot be two rows
    ("image,label\n./img/00.png,1\nimg/01.png,3\nimg/x/../00.png,2\n", "iqa", {}, ManifestError,
     r"CSV lines 2, 4 name the same image 'img/00.png' \('./img/00.png', 'img/x/../00.png'\)"),
    ("image,label\n/abs/00.png,1\nimg/01.png,2\n", "iqa", {}, ManifestError, "POSIX path relative"),
    ("image,label\nimg/00.png,1\nimg/missing.png,2\n", "iqa", {}, FileNotFoundError,
     r"1 of 2 image\(s\) are not under .*: img/missing.png"),
    ("image,label,split1\nimg/00.png,1,train\nimg/01.png,2,holdout\n", "iqa", {}, SplitError, "holdout"),
    ("image,label\nimg/00.png,1\n", None, {}, ValueError, r"task="),
    ("image,label\nimg/00.png,1\n", "iqa", {"classes": CLASSES}, ValueError, "only for --task emotion"),
])
def test_bad_csvs_are_named_with_the_row(folder, text, task, kwargs, error, match):
    with pytest.raises(error, match=match):
        open_source(DataConfig(_csv(folder, "bad.csv", text), folder, task=task, **kwargs))


def test_card_datasets_keep_their_config_keys():
    """Run directories written before CSV datasets existed compare equal on resume: no new keys for them."""
    assert DataConfig("livec", "/data/livec").to_dict() == {"dataset": "livec", "root": "/data/livec",
                                                            "manifest": None, "label_column": None}
    with pytest.raises(ValueError, match="for a CSV dataset"):
        DataConfig("livec", "/data/livec", task="iqa")


def test_train_resume_and_predict_on_a_csv_run(folder, tmp_path, capsys, monkeypatch):
    """The CLI end to end: train on the CSV (root defaults to the CSV's folder), resume from the run directory
    alone, then score images with the run, its class names and without the CSV being needed any more."""
    monkeypatch.chdir(folder)
    run = tmp_path / "run"
    args = ["train", "--dataset", "csv:feelings.csv", "--task", "emotion", "--backbone", "tiny_clip",
            "--random-init", "--max-epochs", "1", "--batch-size", "8", "--run-dir", str(run), "--quiet"]
    main(args)
    result = json.loads(capsys.readouterr().out)
    assert set(result["test"]) == {"csv-feelings"} and result["test"]["csv-feelings"]["n_images"] == 8
    data = json.loads((run / "config.json").read_text())["data"][0]
    assert data["root"] == str(folder) and data["csv"] == str(folder / "feelings.csv")
    assert data["classes"] == sorted(CLASSES) and data["task"] == "emotion"
    main(["train", "--run-dir", str(run), "--quiet"])                                 # resumes: finished, no error
    capsys.readouterr()
    # a second `percept train` on a run being trained fails at once, naming the holder
    from percept.core.files import exclusive_lock
    from percept.engine.runs import RunDir
    with exclusive_lock(RunDir(run).lock_file, "x"):
        assert main(["train", "--run-dir", str(run), "--quiet"]) == 2
    assert "is being written by process" in capsys.readouterr().err
    # changed splits (images added, the splits file deleted as its error advises): the old weights are refused
    table = pd.read_csv(folder / "feelings.csv")
    _images(folder, 44)
    pd.concat([table, pd.DataFrame({"image": [f"img/{i}.png" for i in range(40, 44)], "label": CLASSES[:2] * 2})]
              ).to_csv(folder / "feelings.csv", index=False)
    splits_path(folder / "feelings.csv").unlink()
    assert main(["train", "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "splits of csv-feelings changed since" in err and "new run directory" in err
    table.to_csv(folder / "feelings.csv", index=False)          # restored, splits drawn again: the same seeded ones
    splits_path(folder / "feelings.csv").unlink()
    assert main(["train", "--run-dir", str(run), "--quiet"]) == 0
    capsys.readouterr()
    # a run whose setup failed (batch larger than the train part) does not block the corrected command
    second = tmp_path / "second"
    assert main([*args[:-3], "--run-dir", str(second), "--quiet", "--batch-size", "100"]) == 2
    assert "fewer than batch_size" in capsys.readouterr().err
    assert main([*args[:-3], "--run-dir", str(second), "--quiet"]) == 0
    capsys.readouterr()
    (folder / "feelings.csv").rename(folder / "elsewhere.csv")
    main(["predict", "--model", str(run), str(folder / "img" / "00.png"), "--quiet"])
    out = capsys.readouterr().out
    assert all(f"prob_{c}" in out for c in CLASSES)


# ---- rows that belong together: the optional `group` column -------------------------------------------------
def _grouped(folder, task, n_groups=12, per_group=3, label=lambda i: round(1 + i * 0.1, 2)):
    """``n_groups`` references x ``per_group`` versions each: one CSV row per version, its reference as group."""
    images = _images(folder, n_groups * per_group)
    groups = [f"ref{i // per_group:02d}" for i in range(len(images))]
    path = folder / f"grouped_{task}.csv"
    pd.DataFrame({"image": images, "label": [label(i) for i in range(len(images))], "group": groups}).to_csv(
        path, index=False)
    return path, dict(zip(images, groups))


@pytest.mark.parametrize("task", ["iqa", "memorability"])
def test_a_group_is_never_in_two_parts_of_any_split(tmp_path, task):
    path, group_of = _grouped(tmp_path, task, label=lambda i: round(0.1 + i * 0.01, 3))
    source = open_source(DataConfig(f"csv:{path}", tmp_path, task=task))
    assert source.n_splits == (10 if task == "iqa" else 5)
    frame = source.frame.assign(group=source.frame["image"].map(group_of))
    for column in split_columns(frame):
        parts = frame[frame[column] != ""].groupby("group")[column].nunique()
        assert (parts == 1).all(), column                   # every reference in exactly one part
        assert {"train", "val", "test"} <= set(frame[column])
    # drawn independently: the IQA protocol over references is the synthetic-IQA sets' (iqa_synthetic_splits)
    if task == "iqa":
        from percept.data.splits import iqa_synthetic_splits
        expected = iqa_synthetic_splits(list(group_of), list(group_of.values()))
        pd.testing.assert_frame_equal(source.frame[["image", *split_columns(expected)]], expected, check_dtype=False)


def test_bad_groups_are_refused_by_name(tmp_path):
    path, _ = _grouped(tmp_path, "iqa", n_groups=1, per_group=6)
    with pytest.raises(SplitError, match=r"every row is in group 'ref00'.*several groups"):
        open_source(DataConfig(f"csv:{path}", tmp_path, task="iqa"))
    # too few groups for a validation part in every split (5 % of 8 groups rounds to none): refused, not drawn
    few, _ = _grouped(tmp_path, "emotion", n_groups=8, label=lambda i: CLASSES[i % 3])
    with pytest.raises(SplitError, match=r"8 groups are too few.*split1 has no val part.*at least 7 groups for IQA, "
                                         r"11 otherwise"):
        open_source(DataConfig(f"csv:{few}", tmp_path, task="emotion"))
    assert not splits_path(few).exists()
    # given split columns that put one reference in train and test
    table = pd.read_csv(path).assign(group=["a", "a", "b", "b", "c", "c"],
                                     split1=["train", "test", "train", "train", "test", "test"])
    table.to_csv(path, index=False)
    with pytest.raises(SplitError, match=r"group 'a' is in parts \['test', 'train'\]"):
        open_source(DataConfig(f"csv:{path}", tmp_path, task="iqa"))
    # splits drawn before the group column was added may split a group: refused, saying how to redraw
    path, group_of = _grouped(tmp_path, "memorability", label=lambda i: 0.5)
    table = pd.read_csv(path)
    table.drop(columns="group").to_csv(path, index=False)
    open_source(DataConfig(f"csv:{path}", tmp_path, task="memorability"))           # ungrouped splits drawn
    table.to_csv(path, index=False)
    with pytest.raises(SplitError, match=r"drawn before the `group` column: delete .*grouped_memorability.splits.csv"):
        open_source(DataConfig(f"csv:{path}", tmp_path, task="memorability"))


def test_the_command_line_stores_data_roots_absolute(tmp_path, monkeypatch):
    """A relative --root / --manifest is stored resolved, so a resume from another folder finds the same data
    (and never generates a demo set where it happens to be run)."""
    from percept.interface.cli_config import train_config
    from percept.interface.cli_options import parse_options
    monkeypatch.chdir(tmp_path)
    options = parse_options("train", ["r", "--dataset", "synthetic_iqa", "--root", "data", "--manifest", "lists/m.csv"])
    (data,) = train_config(options).data
    assert data.root == str(tmp_path / "data") and data.manifest == str(tmp_path / "lists" / "m.csv")


def test_a_csv_in_a_read_only_folder_keeps_its_sidecars_in_the_cache(folder, tmp_path_factory, monkeypatch):
    import percept.data.user_csv as user_csv
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("PERCEPT_CACHE", str(cache))
    real = user_csv._writable
    monkeypatch.setattr(user_csv, "_writable", lambda d: False if d == folder else real(d))   # as on read-only media
    before = sorted(p.name for p in folder.iterdir())
    source = open_source(DataConfig(f"csv:{folder / 'quality.csv'}", folder, task="iqa"))
    assert source.n_splits == 10 and sorted(p.name for p in folder.iterdir()) == before    # nothing written there
    assert splits_path(folder / "quality.csv").parent.parent == cache / "csv"
    again = open_source(DataConfig(f"csv:{folder / 'quality.csv'}", folder, task="iqa"))
    assert again.frame.equals(source.frame)                                           # read back, the same


@pytest.mark.parametrize("text,match", [
    ("image,label\nimg/00.png,-1\nimg/01.png,1\n", r"CSV line 2 \(image 'img/00.png'\) has the class index -1"),
    ("image,label\nimg/00.png,1\nimg/00.png,2\n", r"name the same image"),
])
def test_csv_messages_say_what_to_fix_in_the_csv(folder, text, match):
    (folder / "bad.csv").write_text(text)
    with pytest.raises(ManifestError, match=match) as err:
        open_source(DataConfig(f"csv:{folder / 'bad.csv'}", folder, task="emotion", classes=CLASSES))
    assert "percept prepare" not in str(err.value)


def test_a_csv_with_a_bomb_or_a_strip_is_refused_before_training(folder):
    """Checked from the headers when the CSV is opened, naming the file: not a crash hours into an epoch."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    (folder / "img" / "05.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    Image.new("RGB", (3000, 1)).save(folder / "img" / "07.png")
    with pytest.raises(ManifestError, match=r"2 image\(s\) cannot be used: .*img/05.png.*exceeds limit.*1 more"):
        open_source(DataConfig(f"csv:{folder / 'quality.csv'}", folder, task="iqa"))


def test_a_config_files_relative_roots_are_its_own_folders(tmp_path, monkeypatch):
    from percept.interface.cli_config import train_config
    from percept.interface.cli_options import parse_options
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "run.yaml").write_text("data:\n  - {dataset: synthetic_iqa, root: data}\n"
                                                "  - {dataset: csv:lists/mine.csv, root: imgs, task: iqa}\n")
    monkeypatch.chdir(tmp_path)                              # run from elsewhere: the file's folder still counts
    (tmp_path / "exp" / "lists").mkdir()
    _images(tmp_path / "exp" / "imgs", 2)
    pd.DataFrame({"image": ["img/00.png", "img/01.png"], "label": [1, 2]}).to_csv(
        tmp_path / "exp" / "lists" / "mine.csv", index=False)
    config = train_config(parse_options("train", ["--config", "exp/run.yaml", "--run-dir", "r"]))
    assert config.data[0].root == str(tmp_path / "exp" / "data")
    assert config.data[1].csv == str(tmp_path / "exp" / "lists" / "mine.csv")
    assert config.data[1].root == str(tmp_path / "exp" / "imgs")
