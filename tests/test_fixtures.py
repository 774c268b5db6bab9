"""percept.data.fixtures: every dataset's fixture is written in its official layout, prepares, has usable
splits 1 and 2 (the smoke run of reproduce.yaml), is deterministic and idempotent."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from percept.data.cards import CARDS
from percept.data.fixtures import (
    FIXTURE_WRITERS,
    MARKER,
    FixtureError,
    fixture_folder,
    pinned_fixture_images,
    prepare_fixtures,
    write_fixture,
)
from percept.data.manifest import read_manifest, read_sidecar
from percept.data.pinned import PINNED_DATASETS, load_pinned_splits, split_key
from percept.data.prepare import prepare
from percept.data.sources import DataConfig, check_trainable, open_source
from percept.data.splits import DATASET_PROTOCOLS

ROWS = {"livec": 32, "koniq10k": 32, "spaq": 36, "flive": 36, "live": 36, "tid2013": 36, "kadid10k": 36,
        "lamem": 40, "things": 40, "sun_memorability": 40, "memcat": 40, "emoset": 40, "emotionroi": 32}
FORMATS = {"livec": {".bmp": "BMP", ".jpg": "JPEG"}, "live": {".bmp": "BMP"}, "tid2013": {".bmp": "BMP"},
           "kadid10k": {".png": "PNG"}, "sun_memorability": {".png": "PNG"}}
# MemCat has no split protocol (DATASET_PROTOCOLS) and is in no experiment: its manifest alone is checked.
SPLIT_DATASETS = [n for n in CARDS if n in DATASET_PROTOCOLS]
MIN_PARTS = {"train": 12, "val": 2, "test": 4}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return prepare_fixtures(tmp_path_factory.mktemp("fixtures"))


def test_every_card_has_a_fixture(fixtures):
    assert set(FIXTURE_WRITERS) == set(CARDS) == set(fixtures) == set(ROWS)
    assert fixtures["emotionroi"].name == "emotion6" and fixtures["livec"].name == "livec"
    assert {fixtures[n].parent for n in fixtures} == {fixtures["livec"].parent}


@pytest.mark.parametrize("name", list(CARDS))
def test_fixture_manifest(fixtures, name):
    root = fixtures[name]
    df = read_manifest(root / "percept_manifest.csv")
    assert len(df) == ROWS[name] and read_sidecar(root / "percept_manifest.csv")["partial"] is (name == "live")
    card = CARDS[name]
    labels = df[card.label_column].to_numpy(float)
    assert len(np.unique(labels)) >= (len(card.classes) if card.classes else len(df) // 2)
    brightness = []
    for rel in df["image"]:
        with Image.open(root / rel) as im:
            want = FORMATS.get(name, {".jpg": "JPEG"})[(root / rel).suffix.lower()]
            assert im.format == want and 48 <= min(im.size) and max(im.size) <= 96, (rel, im.format, im.size)
            brightness.append(np.asarray(im.convert("L"), float).mean())
    if card.classes is None:  # labels follow something visible
        assert pd.Series(brightness).corr(pd.Series(labels), method="spearman") > 0.8


@pytest.mark.parametrize("name", SPLIT_DATASETS)
def test_fixture_splits_1_and_2_are_trainable(fixtures, name):
    source = open_source(DataConfig(name, str(fixtures[name])))
    assert source.n_splits >= (1 if name == "emoset" else 2)
    for k in range(1, min(2, source.n_splits) + 1):
        sizes = {p: int((source.frame[f"split{k}"] == p).sum()) for p in MIN_PARTS}
        assert all(sizes[p] >= MIN_PARTS[p] for p in MIN_PARTS), (k, sizes)
        check_trainable(source, k, batch_size=8)
        if source.class_names:
            for part in MIN_PARTS:
                assert len(np.unique(source.dataset(k, part).labels)) >= 2, (k, part)


def test_official_layout_details(fixtures):
    import scipy.io
    data = fixtures["livec"] / "ChallengeDB_release" / "Data"
    names = [str(np.ravel(x)[0]) for x in np.ravel(scipy.io.loadmat(data / "AllImages_release.mat")["AllImages_release"])]
    assert names[:7] == [f"t{i}.bmp" for i in range(1, 8)] and len(names) == 39
    assert all((fixtures["livec"] / "ChallengeDB_release/Images/trainingImages" / n).is_file() for n in names[:7])
    live = scipy.io.loadmat(fixtures["live"] / "dmos_realigned.mat")
    assert live["dmos_new"].size == live["orgs"].size == 982
    lamem = read_manifest(fixtures["lamem"] / "percept_manifest.csv")
    scores = lamem[[f"memorability_split{k}" for k in range(1, 6)]]
    assert (scores.nunique(axis=1) > 1).all()  # as in the real data: a score per split
    things = read_manifest(fixtures["things"] / "percept_manifest.csv")
    assert things["concept"].nunique() == 20 and (things.groupby("concept").size() == 2).all()
    sun = read_manifest(fixtures["sun_memorability"] / "percept_manifest.csv")
    assert len([c for c in sun.columns if c.startswith("split") and c[5:].isdigit()]) == 25
    assert ((sun[[f"split{k}" for k in range(1, 26)]] == "train").sum() == 20).all()
    info = json.loads((fixtures["emoset"] / "info.json").read_text())
    assert list(info["emotion"]["label2idx"]) == list(CARDS["emoset"].classes)
    emoset = read_manifest(fixtures["emoset"] / "percept_manifest.csv")
    assert (emoset.groupby("split")["label"].nunique() == 8).all()
    header = (fixtures["emotionroi"] / "ground_truth.txt").read_text().splitlines()[0].split("\t")
    assert header[:3] == ["[image_filename]", "[valence]", "[arousal]"] and header[-1] == "[prob. neutral]"


@pytest.mark.parametrize("name", PINNED_DATASETS)
def test_pinned_fixture_images_come_from_the_pinned_file(fixtures, name):
    table = load_pinned_splits(name)
    chosen = pinned_fixture_images(name)
    assert len(chosen) == len(set(chosen)) == ROWS[name] and set(chosen) <= set(table["image"])
    df = read_manifest(fixtures[name] / "percept_manifest.csv")
    assert sorted(split_key(name, p) for p in df["image"]) == sorted(chosen)
    short = table[~((table["split1"] == "val") & (table["split2"] == "test"))]
    with pytest.raises(FixtureError, match=r"0 image\(s\) with split1=val and split2=test; the fixture needs 3"):
        pinned_fixture_images(name, short)


def test_second_call_does_nothing_and_rewrites_deterministically(fixtures, tmp_path):
    data_root = fixtures["livec"].parent
    files = [fixtures[n] / "percept_manifest.csv" for n in fixtures] + [fixtures["live"] / "jp2k"]
    before = [p.stat().st_mtime_ns for p in files]
    assert prepare_fixtures(data_root) == fixtures
    assert [p.stat().st_mtime_ns for p in files] == before
    again = prepare_fixtures(tmp_path / "again")   # a fresh root: the same bytes
    for name in fixtures:
        assert (again[name] / "percept_manifest.csv").read_bytes() == \
               (fixtures[name] / "percept_manifest.csv").read_bytes(), name
    marker = json.loads((again["kadid10k"] / MARKER).read_text())
    assert marker["seed"] == 0 and marker["complete"] is True
    prepare_fixtures(tmp_path / "again", ["kadid10k"], seed=1)   # another seed: that folder rewritten
    assert json.loads((again["kadid10k"] / MARKER).read_text())["seed"] == 1
    assert (again["kadid10k"] / "percept_manifest.csv").read_bytes() != \
           (fixtures["kadid10k"] / "percept_manifest.csv").read_bytes()


def test_refuses_to_overwrite_a_folder_that_is_not_a_fixture(tmp_path):
    real = tmp_path / fixture_folder("emotionroi")
    real.mkdir()
    (real / "ground_truth.txt").write_text("real data\n")
    with pytest.raises(FixtureError, match="no fixture marker"):
        prepare_fixtures(tmp_path, ["EmotionROI"])
    assert (real / "ground_truth.txt").read_text() == "real data\n"


def test_write_fixture_returns_how_to_prepare(tmp_path):
    spec = write_fixture("sun_memorability", tmp_path / "sun", seed=3)
    assert spec.options == {"n_images": 40} and spec.allow_partial is False
    with pytest.warns(UserWarning, match="but the paper uses 2222"):
        df, _ = prepare("sun_memorability", tmp_path / "sun", **spec.prepare_kwargs())
    assert len(df) == spec.rows
    spec = write_fixture("live", tmp_path / "live")
    assert spec.allow_partial is True and spec.options == {}
    with pytest.warns(UserWarning, match="partial manifest"):
        assert len(prepare("live", tmp_path / "live", **spec.prepare_kwargs())[0]) == spec.rows
