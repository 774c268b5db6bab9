"""Manifest format, validation, checksum sidecar and dataset cards (percept.data.manifest / .cards)."""
import json

import numpy as np
import pandas as pd
import pytest

from percept.core.metrics import EMOSET_CLASSES, EMOTIONROI_CLASSES
from percept.data.cards import (
    CARDS,
    CARDS_DIR,
    DatasetCard,
    get_card,
    render_card_markdown,
)
from percept.data.manifest import (
    ManifestError,
    read_manifest,
    sidecar_path,
    validate_manifest,
    write_manifest,
)


def iqa_df(n=4):
    mos = np.linspace(10, 90, n)
    return pd.DataFrame({"image": [f"img/{i}.jpg" for i in range(n)], "mos": mos, "quality": mos})


def emo_df():
    return pd.DataFrame({"image": ["a/1.jpg", "b/2.jpg"], "label": [0, 3], "label_name": ["anger", "joy"]})


# ----------------------------------------------------------------------------- cards
def test_cards_cover_the_paper_datasets_with_its_counts():
    counts = {"livec": 1162, "koniq10k": 10073, "spaq": 11125, "flive": 39810, "tid2013": 3000, "live": 779,
              "kadid10k": 10125, "lamem": 58741, "things": 26107, "emoset": 118102, "emotionroi": 1980,
              "memcat": 10000, "sun_memorability": 2222}
    assert {k: c.expected_images for k, c in CARDS.items()} == counts
    replicas = {"flive": 1, "koniq10k": 3, "spaq": 3, "kadid10k": 3, "live": 5, "livec": 5, "tid2013": 10}
    assert {k: c.train_replicas for k, c in CARDS.items() if c.task == "iqa"} == replicas
    assert {k for k, c in CARDS.items() if c.synthetic} == {"live", "tid2013", "kadid10k"}
    assert CARDS["emoset"].classes == EMOSET_CLASSES and CARDS["emotionroi"].classes == EMOTIONROI_CLASSES
    assert CARDS["live"].quality_sign == -1.0 and CARDS["kadid10k"].quality_sign == 1.0
    for card in CARDS.values():
        assert card.official_url.startswith("http") and card.official_layout and card.citation


def test_get_card_unknown_name_lists_the_known_ones():
    assert get_card("KonIQ10k") is CARDS["koniq10k"]
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*livec.*emotionroi"):
        get_card("imagenet")


def test_card_invariants_are_enforced():
    with pytest.raises(ValueError, match="quality_sign"):
        DatasetCard(**{**CARDS["livec"].__dict__, "quality_sign": None})
    with pytest.raises(ValueError, match="task"):
        DatasetCard(**{**CARDS["lamem"].__dict__, "task": "aesthetics"})


@pytest.mark.parametrize("name", sorted(CARDS))
def test_committed_markdown_cards_equal_the_rendered_ones(name):
    path = CARDS_DIR / f"{name}.md"
    assert path.is_file(), f"{path} missing: run `python -m percept.data.cards`"
    assert path.read_text(encoding="utf-8") == render_card_markdown(CARDS[name]), \
        f"{path} is stale: run `python -m percept.data.cards`"


def test_no_stray_markdown_cards():
    assert {p.stem for p in CARDS_DIR.glob("*.md")} == set(CARDS)


# ----------------------------------------------------------------------------- write / read round trip
def test_round_trip_and_sidecar(tmp_path):
    path = write_manifest(iqa_df().assign(extra=["x", "y", "z", "w"]), tmp_path / "m.csv", CARDS["koniq10k"],
                          extra={"partial": False})
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["dataset"] == "koniq10k" and meta["task"] == "iqa" and meta["rows"] == 4
    assert meta["created_by"] == "percept" and meta["label_columns"] == ["mos", "quality"]
    assert meta["partial"] is False and len(meta["sha256"]) == 64
    df = read_manifest(path)
    assert list(df.columns[:3]) == ["image", "mos", "quality"] and df["extra"].tolist() == ["x", "y", "z", "w"]
    np.testing.assert_allclose(df["mos"], iqa_df()["mos"])
    assert path.read_bytes().decode("utf-8").splitlines()[0] == "image,mos,quality,extra"


def test_emotion_round_trip(tmp_path):
    df = read_manifest(write_manifest(emo_df(), tmp_path / "e.csv", CARDS["emotionroi"]))
    assert df["label"].tolist() == [0, 3] and df["label_name"].tolist() == ["anger", "joy"]


def test_checksum_mismatch_after_editing_the_csv(tmp_path):
    path = write_manifest(iqa_df(), tmp_path / "m.csv", CARDS["koniq10k"])
    path.write_text(path.read_text().replace("10.0", "11.0"))
    with pytest.raises(ManifestError, match=r"m\.csv.*modified after preparation.*percept prepare koniq10k"):
        read_manifest(path)
    assert len(read_manifest(path, verify=False)) == 4  # explicit opt-out still validates the content


def test_row_count_mismatch(tmp_path):
    path = write_manifest(iqa_df(), tmp_path / "m.csv", CARDS["koniq10k"])
    meta = json.loads(sidecar_path(path).read_text())
    meta["rows"] = 5
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(ManifestError, match="4 rows but its sidecar records 5"):
        read_manifest(path)


def test_missing_or_foreign_sidecar_and_missing_manifest(tmp_path):
    path = write_manifest(iqa_df(), tmp_path / "m.csv", CARDS["koniq10k"])
    sidecar_path(path).unlink()
    with pytest.raises(ManifestError, match="no sidecar"):
        read_manifest(path)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")
    path = write_manifest(iqa_df(), tmp_path / "k.csv", CARDS["koniq10k"])
    with pytest.raises(ManifestError, match="prepared for 'koniq10k', not 'spaq'"):
        read_manifest(path, CARDS["spaq"])


def test_write_rejects_invalid_frames_and_writes_nothing(tmp_path):
    df = iqa_df()
    df.loc[2, "mos"] = np.nan
    with pytest.raises(ManifestError):
        write_manifest(df, tmp_path / "m.csv", CARDS["koniq10k"])
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m.json").exists()
    with pytest.raises(ManifestError, match=r"\.csv"):
        write_manifest(iqa_df(), tmp_path / "m.txt", CARDS["koniq10k"])


# ----------------------------------------------------------------------------- validation errors
def test_missing_columns():
    with pytest.raises(ManifestError, match=r"src\.csv: missing column\(s\) quality.*percept prepare koniq10k"):
        validate_manifest(iqa_df().drop(columns=["quality"]), CARDS["koniq10k"], "src.csv")
    with pytest.raises(ManifestError, match="missing column.*reference"):
        validate_manifest(iqa_df(), CARDS["tid2013"], "x")


def test_nan_label_names_the_row_and_image():
    df = iqa_df()
    df.loc[2, ["mos", "quality"]] = np.nan
    with pytest.raises(ManifestError, match=r"f\.csv: column `mos` at row 3 \(CSV line 4, image 'img/2\.jpg'\)"):
        validate_manifest(df, CARDS["koniq10k"], "f.csv")


def test_nan_label_in_a_csv_on_disk(tmp_path):
    path = write_manifest(iqa_df(), tmp_path / "m.csv", CARDS["koniq10k"])
    lines = path.read_text().splitlines()
    lines[2] = "img/1.jpg,,"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"row 2 .*img/1\.jpg"):
        read_manifest(path, verify=False)


def test_out_of_range_label_names_row_image_and_value():
    df = iqa_df()
    df.loc[1, ["mos", "quality"]] = 150.0
    with pytest.raises(ManifestError, match=r"`mos` = 150 at row 2 .*img/1\.jpg.*\[0, 100\]"):
        validate_manifest(df, CARDS["koniq10k"], "x")
    mem = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "memorability": [0.5, 1.2]})
    with pytest.raises(ManifestError, match=r"= 1\.2 at row 2"):
        validate_manifest(mem, CARDS["lamem"], "x")


def test_quality_orientation_is_checked():
    live = pd.DataFrame({"image": ["a.bmp"], "dmos": [40.0], "quality": [40.0], "reference": ["parrots"]})
    with pytest.raises(ManifestError, match="should be -dmos = -40"):
        validate_manifest(live, CARDS["live"], "x")
    validate_manifest(live.assign(quality=-40.0), CARDS["live"], "x")


def test_duplicate_rows():
    df = pd.concat([iqa_df(), iqa_df().iloc[[1]]], ignore_index=True)
    with pytest.raises(ManifestError, match=r"duplicate image path\(s\) img/1\.jpg \(rows 2, 5\)"):
        validate_manifest(df, CARDS["koniq10k"], "x")


@pytest.mark.parametrize("bad", ["/abs/a.jpg", "a\\b.jpg", "../a.jpg", ""])
def test_image_paths_must_be_relative_posix(bad):
    df = iqa_df()
    df.loc[0, "image"] = bad
    with pytest.raises(ManifestError, match="row 1"):
        validate_manifest(df, CARDS["koniq10k"], "x")


def test_class_labels():
    card = CARDS["emotionroi"]
    with pytest.raises(ManifestError, match=r"`label` = 6 .*outside emotionroi's range \[0, 5\]"):
        validate_manifest(emo_df().assign(label=[0, 6]), card, "x")
    with pytest.raises(ManifestError, match="not an integer class index"):
        validate_manifest(emo_df().assign(label=[0, 2.5]), card, "x")
    with pytest.raises(ManifestError, match="'joy' at row 2 .* does not match label 2 = 'fear'"):
        validate_manifest(emo_df().assign(label=[0, 2]), card, "x")


def test_empty_manifest_and_empty_reference():
    with pytest.raises(ManifestError, match="no rows"):
        validate_manifest(iqa_df(0), CARDS["koniq10k"], "x")
    df = pd.DataFrame({"image": ["a.png"], "dmos": [3.0], "quality": [3.0], "reference": [""]})
    with pytest.raises(ManifestError, match="`reference` is empty"):
        validate_manifest(df, CARDS["kadid10k"], "x")
