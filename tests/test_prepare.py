"""percept.data.prepare: every preparer on a tiny fixture in its official format (built in tmp_path), error
handling, and the real files in ../shared/data (read in place, skipped when absent)."""
import json
import warnings

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from percept.data.cards import CARDS
from percept.data.manifest import ManifestError, read_manifest, sidecar_path
from percept.data.prepare import PREPARERS, prepare

# Fixtures are far smaller than the real datasets: the row-count warning is expected there.
pytestmark = pytest.mark.filterwarnings("ignore:.*but the paper uses:UserWarning")


def img(path, size=(8, 6), color=(120, 30, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def cellstr(names, column=False):
    arr = np.array(names, dtype=object)
    return arr.reshape(-1, 1) if column else arr.reshape(1, -1)


def sidecar(path):
    return json.loads(sidecar_path(path).read_text())


def test_every_card_has_a_preparer():
    assert set(PREPARERS) == set(CARDS)


def test_unknown_dataset_and_bad_root(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'foo'; known datasets: livec"):
        prepare("foo", tmp_path)
    with pytest.raises(ManifestError, match="is not a folder"):
        prepare("kadid10k", tmp_path / "nowhere")


# ----------------------------------------------------------------------------- LIVEC
LIVEC_NAMES = [f"t{i}.bmp" for i in range(1, 8)] + ["100.bmp", "101.bmp", "533.JPG", "534.JPG"]


def make_livec(root, names=LIVEC_NAMES):
    data = root / "ChallengeDB_release" / "Data"
    data.mkdir(parents=True)
    mos = np.arange(len(names), dtype=float) * 7 + 5
    sio.savemat(data / "AllImages_release.mat", {"AllImages_release": cellstr(names, column=True)})
    sio.savemat(data / "AllMOS_release.mat", {"AllMOS_release": mos.reshape(1, -1)})
    sio.savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.full((1, len(names)), 12.5)})
    for n in names:
        sub = "Images/trainingImages" if n.startswith("t") else "Images"
        img(root / "ChallengeDB_release" / sub / n)
    return mos


def test_livec_drops_the_7_training_images(tmp_path):
    mos = make_livec(tmp_path)
    df, path = prepare("livec", tmp_path)
    assert path == tmp_path / "percept_manifest.csv"
    assert df["image"].tolist() == [f"ChallengeDB_release/Images/{n}" for n in LIVEC_NAMES[7:]]
    np.testing.assert_allclose(df["mos"], mos[7:])
    np.testing.assert_allclose(df["quality"], mos[7:])
    assert (df["std"] == 12.5).all()
    meta = sidecar(path)
    assert meta["partial"] is False and meta["dropped"] == 0 and meta["images_checked"] is True
    assert read_manifest(path)["image"].tolist() == df["image"].tolist()
    # root may also be the ChallengeDB_release folder itself
    df2, _ = prepare("livec", tmp_path / "ChallengeDB_release", out=tmp_path / "b.csv")
    assert df2["image"].iloc[0] == "Images/100.bmp"


def test_missing_images_error_or_partial(tmp_path):
    make_livec(tmp_path)
    (tmp_path / "ChallengeDB_release/Images/100.bmp").unlink()
    (tmp_path / "ChallengeDB_release/Images/534.JPG").unlink()
    with pytest.raises(ManifestError, match=r"2 of 4 images .* missing .*100\.bmp, .*534\.JPG.*allow_partial"):
        prepare("livec", tmp_path)
    assert not (tmp_path / "percept_manifest.csv").exists()
    with pytest.warns(UserWarning, match="partial manifest - 2 rows dropped"):
        df, path = prepare("livec", tmp_path, out=tmp_path / "out" / "livec.csv", allow_partial=True)
    assert df["image"].tolist() == ["ChallengeDB_release/Images/101.bmp", "ChallengeDB_release/Images/533.JPG"]
    meta = sidecar(path)
    assert meta["partial"] is True and meta["dropped"] == 2 and meta["rows"] == 2
    for p in (tmp_path / "ChallengeDB_release/Images").glob("*"):
        if p.is_file():
            p.unlink()
    with pytest.raises(ManifestError, match="none of them exist"):
        prepare("livec", tmp_path, allow_partial=True)


def test_unusable_images_are_named_when_the_manifest_is_written(tmp_path):
    """A damaged file or an extreme strip in a download is refused by `percept prepare` (header only, nothing decoded),
    not met hours into training."""
    make_livec(tmp_path)
    (tmp_path / "ChallengeDB_release/Images/100.bmp").write_bytes(b"BM not really a bitmap")
    img(tmp_path / "ChallengeDB_release/Images/534.JPG", size=(2100, 100))
    with pytest.raises(ManifestError, match=r"livec: 2 of 4 image\(s\) cannot be used: .*100\.bmp.*not an image.*"
                                            r"\(and 1 more\); replace them.*allow_partial"):
        prepare("livec", tmp_path)
    assert not (tmp_path / "percept_manifest.csv").exists()
    with pytest.warns(UserWarning, match="2 unusable image"):
        df, path = prepare("livec", tmp_path, out=tmp_path / "partial.csv", allow_partial=True)
    assert len(df) == 2 and sidecar(path)["partial"] is True and sidecar(path)["dropped"] == 2
    prepare("livec", tmp_path, check_images=False)              # a labels-only preparation reads no image


def test_livec_rejects_unexpected_layout_and_corrupt_files(tmp_path):
    make_livec(tmp_path / "a", names=["x.bmp"] * 3 + LIVEC_NAMES[3:])
    with pytest.raises(ManifestError, match="first 7 entries"):
        prepare("livec", tmp_path / "a", check_images=False)
    make_livec(tmp_path / "b")
    (tmp_path / "b/ChallengeDB_release/Data/AllMOS_release.mat").write_bytes(b"garbage, not a mat file")
    with pytest.raises(ManifestError, match="cannot read .*AllMOS_release.mat.*corrupt"):
        prepare("livec", tmp_path / "b")
    make_livec(tmp_path / "c")
    (tmp_path / "c/ChallengeDB_release/Data/AllStdDev_release.mat").unlink()
    with pytest.raises(ManifestError, match="AllStdDev_release.mat' not found.*Expected layout"):
        prepare("livec", tmp_path / "c")
    make_livec(tmp_path / "d")
    sio.savemat(tmp_path / "d/ChallengeDB_release/Data/AllMOS_release.mat", {"wrong_key": np.zeros((1, 11))})
    with pytest.raises(ManifestError, match="lacks variable.*AllMOS_release.*found: wrong_key"):
        prepare("livec", tmp_path / "d")


# ----------------------------------------------------------------------------- KonIQ, SPAQ, FLIVE
def make_koniq(root, folder="1024x768"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "koniq10k_distributions_sets.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\n"
        "10004473376.jpg,0.0,0.0,0.238,0.695,0.066,105,77.38,0.527,training\n"
        "10007357496.jpg,0.0,0.031,0.468,0.489,0.010,96,68.72,0.580,test\n"
        "10020766793.jpg,0.1,0.2,0.3,0.2,0.2,90,40.00,0.900,validation\n")
    for n in ("10004473376.jpg", "10007357496.jpg", "10020766793.jpg"):
        img(root / folder / n)


def test_koniq(tmp_path):
    make_koniq(tmp_path)
    df, path = prepare("koniq10k", tmp_path)
    assert df["image"].tolist()[0] == "1024x768/10004473376.jpg"
    assert df["set"].tolist() == ["training", "test", "validation"] and df["c_total"].tolist() == [105, 96, 90]
    np.testing.assert_allclose(df["quality"], [77.38, 68.72, 40.0])
    with pytest.raises(ManifestError, match="3 of 3 images"):
        prepare("koniq10k", tmp_path, image_dir="512x384")
    make_koniq(tmp_path / "small", folder="512x384")
    df, path = prepare("koniq10k", tmp_path / "small", image_dir="512x384")
    assert df["image"].iloc[0] == "512x384/10004473376.jpg" and sidecar(path)["options"] == {"image_dir": "512x384"}
    with pytest.raises(ManifestError, match="unknown option.*colour.*accepted: image_dir, labels_file"):
        prepare("koniq10k", tmp_path, colour=True)


def test_koniq_missing_column_and_nan_label(tmp_path):
    tmp_path.joinpath("koniq10k_distributions_sets.csv").write_text("image_name,SD\na.jpg,0.5\n")
    with pytest.raises(ManifestError, match="lacks column.*MOS"):
        prepare("koniq10k", tmp_path, check_images=False)
    tmp_path.joinpath("koniq10k_distributions_sets.csv").write_text("image_name,MOS,SD\na.jpg,50,0.5\nb.jpg,,0.5\n")
    with pytest.raises(ManifestError, match=r"`mos` at row 2 .*1024x768/b\.jpg.* is empty/NaN"):
        prepare("koniq10k", tmp_path, check_images=False)
    tmp_path.joinpath("koniq10k_distributions_sets.csv").write_text("image_name,MOS,SD\na.jpg,50,0.5\nb.jpg,abc,0.5\n")
    with pytest.raises(ManifestError, match=r"`MOS` entry 2 \(b\.jpg\) is 'abc'"):
        prepare("koniq10k", tmp_path, check_images=False)
    tmp_path.joinpath("koniq10k_distributions_sets.csv").write_text("image_name,MOS,SD\na.jpg,50,0.5\na.jpg,40,0.5\n")
    with pytest.raises(ManifestError, match="duplicate image path"):
        prepare("koniq10k", tmp_path, check_images=False)


def test_spaq_csv_export_and_xlsx_without_openpyxl(tmp_path):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    (ann / "MOS and Image attribute scores.csv").write_text(
        "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
        "00001.jpg,42.5,50,51,52,53,54\n00002.jpg,80,60,61,62,63,64\n")
    img(tmp_path / "TestImage/00001.jpg")
    img(tmp_path / "TestImage/00002.jpg")
    df, _ = prepare("spaq", tmp_path)
    assert df["image"].tolist() == ["TestImage/00001.jpg", "TestImage/00002.jpg"]
    assert df["sharpness"].tolist() == [54, 64] and df["mos"].tolist() == [42.5, 80.0]
    (ann / "MOS and Image attribute scores.csv").unlink()
    with pytest.raises(ManifestError, match="neither .*xlsx.* nor its CSV export"):
        prepare("spaq", tmp_path)
    (ann / "MOS and Image attribute scores.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        with pytest.raises(ManifestError, match="openpyxl.*export the sheet"):
            prepare("spaq", tmp_path)
    else:
        with pytest.raises(ManifestError, match="cannot read"):
            prepare("spaq", tmp_path)


def test_flive(tmp_path):
    (tmp_path / "labels_image.csv").write_text("name,mos,height,width\n"
                                               "voc_emotic_ava/a.jpg,71.2,8,6\nEE371R/b.jpg,55,8,6\n")
    img(tmp_path / "database/voc_emotic_ava/a.jpg")
    img(tmp_path / "database/EE371R/b.jpg")
    df, _ = prepare("flive", tmp_path)
    assert df["image"].tolist() == ["database/voc_emotic_ava/a.jpg", "database/EE371R/b.jpg"]
    df, _ = prepare("flive", tmp_path / "database", image_dir="", labels_file="../labels_image.csv",
                    out=tmp_path / "f.csv")
    assert df["image"].tolist() == ["voc_emotic_ava/a.jpg", "EE371R/b.jpg"]


# ----------------------------------------------------------------------------- LIVE, TID2013, KADID
def make_live(root, realigned=True):
    folders = [("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174)]
    files = [f"{f}/img{i}.bmp" for f, n in folders for i in range(1, n + 1)]
    rng = np.random.default_rng(0)
    orgs = np.zeros(982)
    orgs[rng.choice(982, 203, replace=False)] = 1
    dmos = np.where(orgs == 1, 0.0, rng.uniform(5, 95, 982))
    refs = [f"ref{i % 29:02d}.bmp" for i in range(982)]
    root.mkdir(parents=True, exist_ok=True)
    key, name = ("dmos_new", "dmos_realigned.mat") if realigned else ("dmos", "dmos.mat")
    sio.savemat(root / name, {key: dmos.reshape(1, -1), "orgs": orgs.reshape(1, -1)})
    sio.savemat(root / "refnames_all.mat", {"refnames_all": cellstr(refs)})
    for f, o in zip(files, orgs):
        if o == 0:
            img(root / f, size=(4, 4))
    return files, dmos, orgs, refs


def test_live_keeps_distorted_images_and_negates_dmos(tmp_path):
    files, dmos, orgs, refs = make_live(tmp_path)
    df, path = prepare("live", tmp_path)
    keep = orgs == 0
    assert len(df) == 779 and df["image"].tolist() == list(np.array(files)[keep])
    np.testing.assert_allclose(df["dmos"], dmos[keep])
    np.testing.assert_allclose(df["quality"], -dmos[keep])
    assert df["reference"].tolist() == [r[:-4] for r, k in zip(refs, keep) if k]
    assert df["distortion"].iloc[0] == files[int(np.flatnonzero(keep)[0])].split("/")[0]
    assert sidecar(path)["dmos_file"] == "dmos_realigned.mat"
    with pytest.raises(ManifestError, match="dmos.mat' not found"):
        prepare("live", tmp_path, realigned=False)
    make_live(tmp_path / "orig", realigned=False)
    assert len(prepare("live", tmp_path / "orig", realigned=False)[0]) == 779
    sio.savemat(tmp_path / "refnames_all.mat", {"refnames_all": cellstr(refs[:900])})
    with pytest.raises(ManifestError, match="expected 982 entries"):
        prepare("live", tmp_path)


def test_tid2013_case_insensitive_names_and_reference(tmp_path):
    (tmp_path / "mos_with_names.txt").write_text("5.51429 i01_01_1.bmp\n4.0 i01_02_5.bmp\n3.25 i25_24_3.bmp\n")
    (tmp_path / "mos_std.txt").write_text("0.1\n0.2\n0.3\n")
    img(tmp_path / "distorted_images/i01_01_1.bmp")
    img(tmp_path / "distorted_images/i01_02_5.bmp")
    img(tmp_path / "distorted_images/I25_24_3.BMP")
    df, _ = prepare("tid2013", tmp_path)
    assert df["image"].tolist() == ["distorted_images/i01_01_1.bmp", "distorted_images/i01_02_5.bmp",
                                    "distorted_images/I25_24_3.BMP"]
    assert df["reference"].tolist() == ["i01", "i01", "i25"]
    assert df["distortion"].tolist() == [1, 2, 24] and df["level"].tolist() == [1, 5, 3]
    assert df["std"].tolist() == [0.1, 0.2, 0.3] and df["quality"].tolist() == [5.51429, 4.0, 3.25]
    (tmp_path / "mos_with_names.txt").write_text("5.51429 i01_01_1.bmp\nbroken line here\n")
    with pytest.raises(ManifestError, match="line 2 is 'broken line here'"):
        prepare("tid2013", tmp_path)
    (tmp_path / "mos_with_names.txt").write_text("95 i01_01_1.bmp\n")
    (tmp_path / "mos_std.txt").unlink()
    with pytest.raises(ManifestError, match=r"`mos` = 95 .*outside tid2013's range \[0, 9\]"):
        prepare("tid2013", tmp_path, check_images=False)


def test_kadid10k(tmp_path):
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.496\n"
                                       "I02_01_05.png,I02.png,1.2,0.3\n")
    img(tmp_path / "images/I01_01_01.png")
    img(tmp_path / "images/I02_01_05.png")
    df, _ = prepare("kadid10k", tmp_path)
    assert df["image"].tolist() == ["images/I01_01_01.png", "images/I02_01_05.png"]
    assert df["reference"].tolist() == ["I01", "I02"] and df["quality"].tolist() == [4.57, 1.2]
    assert df["dmos"].tolist() == [4.57, 1.2] and df["var"].tolist() == [0.496, 0.3]


# ----------------------------------------------------------------------------- memorability
def make_lamem(root, files=("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")):
    split_dir = root / "splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    scores = {}
    for k in range(1, 6):
        order = list(files[k - 1:]) + list(files[:k - 1])  # rotate so parts change between splits
        parts = {"train": order[:3], "val": order[3:4], "test": order[4:]}
        for part, names in parts.items():
            lines = []
            for j, n in enumerate(names):
                scores[(n, k)] = round(0.3 + 0.1 * files.index(n) + 0.01 * k, 6)
                lines.append(f"{n} {scores[(n, k)]:.6f}")
            (split_dir / f"{part}_{k}.txt").write_text("\n".join(lines) + "\n")
    for n in files:
        img(root / "images" / n)
    return scores


def test_lamem_union_with_per_split_parts_and_scores(tmp_path):
    scores = make_lamem(tmp_path)
    df, _ = prepare("lamem", tmp_path)
    assert df["image"].tolist() == [f"images/{n}.jpg" for n in "abcde"]
    row = df.set_index("image").loc["images/a.jpg"]
    assert [row[f"split{k}"] for k in range(1, 6)] == ["train", "test", "val", "train", "train"]
    np.testing.assert_allclose([row[f"memorability_split{k}"] for k in range(1, 6)],
                               [scores[("a.jpg", k)] for k in range(1, 6)])
    assert row["memorability"] == pytest.approx(np.mean([scores[("a.jpg", k)] for k in range(1, 6)]))
    for k in range(1, 6):
        assert df[f"split{k}"].value_counts().to_dict() == {"train": 3, "val": 1, "test": 1}


def test_lamem_rejects_inconsistent_splits(tmp_path):
    make_lamem(tmp_path)
    with open(tmp_path / "splits/test_2.txt", "a") as f:
        f.write("b.jpg 0.5\n")  # b.jpg is already in train_2
    with pytest.raises(ManifestError, match=r"b\.jpg appears more than once in split 2 \(test, train\)"):
        prepare("lamem", tmp_path)
    make_lamem(tmp_path)
    (tmp_path / "splits/val_3.txt").write_text("")
    with pytest.raises(ManifestError, match=r"missing from split\(s\) \[3\]|cannot parse"):
        prepare("lamem", tmp_path)
    make_lamem(tmp_path)
    (tmp_path / "splits/val_4.txt").unlink()
    with pytest.raises(ManifestError, match="val_4.txt' not found"):
        prepare("lamem", tmp_path)
    make_lamem(tmp_path)
    (tmp_path / "splits/val_1.txt").write_text("d.jpg 1.7\n")
    with pytest.raises(ManifestError, match=r"val_1\.txt' line 1: score 1\.7 of d\.jpg is outside lamem's range"):
        prepare("lamem", tmp_path)


def test_memcat_locates_images_by_name(tmp_path):
    (tmp_path / "memcat_image_data.csv").write_text(
        '"","image_file","category","subcategory","H","FA","n_resp","memorability_wo_fa_correction",'
        '"memorability_w_fa_correction"\n'
        '"1","000000003481.jpg","animal","bear",55,4,98,0.5612,0.5204\n'
        '"2","n01.jpg","food","pizza",64,4,81,0.7901,0.7407\n')
    img(tmp_path / "images/animal/bear/000000003481.jpg")  # the assumed layout
    img(tmp_path / "memcat/food/pizza/n01.jpg")            # the OSF zip layout: found by name
    df, path = prepare("memcat", tmp_path)
    assert df["image"].tolist() == ["images/animal/bear/000000003481.jpg", "memcat/food/pizza/n01.jpg"]
    assert df["memorability"].tolist() == [0.5204, 0.7407]
    assert df["memorability_wo_fa_correction"].tolist() == [0.5612, 0.7901] and "Unnamed: 0" not in df
    assert sidecar(path)["score_source"] == "memorability_w_fa_correction"
    df, _ = prepare("memcat", tmp_path, score="memorability_wo_fa_correction", out=tmp_path / "wo.csv")
    assert df["memorability"].tolist() == [0.5612, 0.7901]
    img(tmp_path / "copy/n01.jpg")
    with pytest.raises(ManifestError, match="'n01.jpg' occurs at"):
        prepare("memcat", tmp_path)


def test_things_assumed_format(tmp_path):
    (tmp_path / "things_memorability.csv").write_text("image_name,hr,far,cr\naardvark_01b.jpg,0.8,0.1,0.7\n"
                                                      "air_conditioner_02s.jpg,0.6,0.2,0.4\n")
    img(tmp_path / "object_images/aardvark/aardvark_01b.jpg")
    img(tmp_path / "object_images/air_conditioner/air_conditioner_02s.jpg")
    df, path = prepare("things", tmp_path)
    assert df["image"].tolist() == ["object_images/aardvark/aardvark_01b.jpg",
                                    "object_images/air_conditioner/air_conditioner_02s.jpg"]
    assert df["memorability"].tolist() == [0.7, 0.4] and df["concept"].tolist() == ["aardvark", "air_conditioner"]
    assert sidecar(path)["score_source"] == "cr"
    (tmp_path / "things_memorability.csv").write_text("image_name,score\naardvark_01b.jpg,0.7\n")
    with pytest.raises(ManifestError, match="no corrected-recognition column `cr`.*columns found: image_name, score"):
        prepare("things", tmp_path)


def _things_csv(root, text):
    (root / "things_memorability.csv").write_text(text)
    return root


def test_things_uses_cr_never_hr(tmp_path):
    # cr present next to hr: cr's values, whatever the column order
    _things_csv(tmp_path, "hr,file,cr,far\n0.9,aardvark_01b.jpg,0.25,0.65\n0.8,zebra_02s.jpg,-0.05,0.85\n")
    df, path = prepare("things", tmp_path, check_images=False)
    assert df["memorability"].tolist() == [0.25, -0.05] and sidecar(path)["score_source"] == "cr"
    # hr only (or memorability / corrected_recognition): refused, naming the file and the columns found
    for header in ("image_name,hr", "image_name,hr,memorability,corrected_recognition"):
        _things_csv(tmp_path, f"{header}\naardvark_01b.jpg" + ",0.9" * header.count(",") + "\n")
        with pytest.raises(ValueError) as err:
            prepare("things", tmp_path, check_images=False)
        msg = str(err.value)
        assert "\n" not in msg and "things_memorability.csv" in msg and f"columns found: {header.replace(',', ', ')}" in msg
        assert "score=COLUMN" in msg
    # hr given explicitly: used, recorded, and warned about
    with pytest.warns(UserWarning, match="column 'hr' \\(score=\\), not the corrected recognition"):
        df, path = prepare("things", tmp_path, check_images=False, score="hr")
    assert df["memorability"].tolist() == [0.9] and sidecar(path)["score_source"] == "hr"
    assert sidecar(path)["options"] == {"score": "hr"}
    # an explicit column that is absent: same style of refusal
    with pytest.raises(ValueError, match="no score column .cr_mean. \\(given as score=\\); columns found: image_name, hr"):
        prepare("things", tmp_path, check_images=False, score="cr_mean")


def test_things_needs_exactly_one_image_column(tmp_path):
    _things_csv(tmp_path, "image,filename,cr\naardvark_01b.jpg,aardvark_01b.jpg,0.5\n")
    with pytest.raises(ValueError, match="exactly one image column.*found 2 \\(image, filename, cr\\); keep one"):
        prepare("things", tmp_path, check_images=False)
    _things_csv(tmp_path, "stimulus,cr\naardvark_01b.jpg,0.5\n")
    with pytest.raises(ValueError, match="exactly one image column.*found 0 \\(stimulus, cr\\)"):
        prepare("things", tmp_path, check_images=False)
    _things_csv(tmp_path, "Image_Name,CR\naardvark_01b.jpg,0.5\n")       # case ignored
    df, path = prepare("things", tmp_path, check_images=False)
    assert df["memorability"].tolist() == [0.5] and sidecar(path)["score_source"] == "CR"


def make_sun(root, n=6, total=8):
    (root / "Data/Experiment data").mkdir(parents=True)
    (root / "Data/Image data").mkdir(parents=True)
    (root / "Data/Random splits").mkdir(parents=True)
    recs = np.empty((1, total), dtype=object)
    for i in range(total):
        recs[0, i] = {"hits": 10 + i, "misses": 10, "false_alarms": 2, "correct_rejections": 40,
                      "filepath": f"Images/sun_{i:03d}_crop.jpg"}
    sio.savemat(root / "Data/Experiment data/sorted_target_data.mat", {"sorted_target_data": recs})
    pixels = np.zeros((8, 8, 3, total), dtype=np.uint8)
    for i in range(total):
        pixels[:, :, 0, i] = 20 * i
    sio.savemat(root / "Data/Image data/target_images.mat", {"img": pixels})
    train = np.array([[1, 2, 3], [4, 5, 6], [2, 4, 6]])
    test = np.array([[4, 5], [1, 2], [1, 3]])
    sio.savemat(root / "Data/Random splits/image_train_indices.mat", {"image_train_indices": train})
    sio.savemat(root / "Data/Random splits/image_test_indices.mat", {"image_test_indices": test})


def test_sun_memorability_extracts_images_and_reads_splits(tmp_path):
    make_sun(tmp_path)
    df, _ = prepare("sun_memorability", tmp_path, n_images=6)
    assert df["image"].tolist() == [f"percept_images/{i:04d}.png" for i in range(1, 7)]
    np.testing.assert_allclose(df["memorability"], [(10 + i) / (20 + i) for i in range(6)])
    assert df["source_file"].iloc[0] == "sun_000_crop.jpg"
    assert df["split1"].tolist() == ["train", "train", "train", "test", "test", "none"]
    assert df["split3"].tolist() == ["test", "train", "test", "train", "none", "train"]
    with Image.open(tmp_path / "percept_images/0004.png") as im:
        assert im.size == (8, 8) and im.getpixel((0, 0)) == (60, 0, 0)
    (tmp_path / "Data/Image data/target_images.mat").unlink()  # already extracted: not needed again
    assert len(prepare("sun_memorability", tmp_path, n_images=6, out=tmp_path / "again.csv")[0]) == 6
    with pytest.raises(ManifestError, match="has 8 targets, expected at least 2222"):
        prepare("sun_memorability", tmp_path)


def test_sun_rejects_overlapping_splits(tmp_path):
    make_sun(tmp_path)
    sio.savemat(tmp_path / "Data/Random splits/image_test_indices.mat",
                {"image_test_indices": np.array([[3, 5], [1, 2], [1, 3]])})
    with pytest.raises(ManifestError, match="split 1 .*shared between train and test"):
        prepare("sun_memorability", tmp_path, n_images=6, check_images=False)


# ----------------------------------------------------------------------------- emotion
def make_emoset(root, items_per_class=1):
    classes = CARDS["emoset"].classes
    root.mkdir(parents=True, exist_ok=True)
    (root / "info.json").write_text(json.dumps({"emotion": {"label2idx": {c: i for i, c in enumerate(classes)},
                                                            "idx2label": {str(i): c for i, c in enumerate(classes)}}}))
    for split, offset in (("train", 0), ("val", 100), ("test", 200)):
        items = []
        for c in classes:
            for j in range(items_per_class):
                stem = f"{c}_{offset + j:05d}"
                items.append([c, stem, f"image/{c}/{stem}.jpg", f"annotation/{c}/{stem}.json"])
                img(root / "image" / c / f"{stem}.jpg")
        (root / f"{split}.json").write_text(json.dumps(items))


def test_emoset(tmp_path):
    make_emoset(tmp_path)
    df, _ = prepare("emoset", tmp_path)
    assert len(df) == 24 and df["split"].value_counts().to_dict() == {"train": 8, "val": 8, "test": 8}
    first = df.iloc[4]
    assert (first["image"], first["label"], first["label_name"]) == ("image/anger/anger_00000.jpg", 4, "anger")
    assert first["image_id"] == "anger_00000" and first["annotation"] == "annotation/anger/anger_00000.json"
    info = json.loads((tmp_path / "info.json").read_text())
    info["emotion"]["label2idx"] = {c: i for i, c in enumerate(sorted(CARDS["emoset"].classes))}
    (tmp_path / "info.json").write_text(json.dumps(info))
    with pytest.raises(ManifestError, match="orders the classes"):
        prepare("emoset", tmp_path)
    (tmp_path / "info.json").unlink()
    (tmp_path / "val.json").write_text(json.dumps([["joy", "x", "image/joy/x.jpg", "a.json"]]))
    with pytest.raises(ManifestError, match=r"item 1 of .*val\.json.*expected \[emotion"):
        prepare("emoset", tmp_path)
    (tmp_path / "val.json").write_text("[not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        prepare("emoset", tmp_path)


def test_emotionroi_from_folders_and_ground_truth(tmp_path):
    classes = CARDS["emotionroi"].classes
    for c in classes:
        for n in (2, 10, 1):
            img(tmp_path / "images" / c / f"{n}.jpg")
    (tmp_path / "images/.DS_Store").write_text("")
    df, _ = prepare("emotionroi", tmp_path)
    assert df["image"].tolist()[:3] == ["images/anger/1.jpg", "images/anger/2.jpg", "images/anger/10.jpg"]
    assert df["label"].tolist() == [i for i in range(6) for _ in range(3)]
    gt = ["[image_filename]\t[valence]\t[arousal]\t[prob. anger]\t[prob. joy]"]
    gt += [f"{c}/{n}.jpg\t{4 + i / 10}\t5.0\t0.1\t0.2" for n in (10, 2, 1) for i, c in enumerate(classes)]
    (tmp_path / "ground_truth.txt").write_text("\n".join(gt) + "\n")
    df2, _ = prepare("emotionroi", tmp_path, out=tmp_path / "gt.csv")
    assert df2["image"].tolist() == df["image"].tolist() and df2["label_name"].iloc[-1] == "surprise"
    assert df2["valence"].iloc[3] == pytest.approx(4.1) and "prob_joy" in df2
    (tmp_path / "ground_truth.txt").write_text("[image_filename]\t[valence]\t[arousal]\ncalm/1.jpg\t5\t5\n")
    with pytest.raises(ManifestError, match="'calm/1.jpg' is not in a class folder"):
        prepare("emotionroi", tmp_path)


# ----------------------------------------------------------------------------- real files (../shared/data)
def test_real_livec(data_root, tmp_path):
    root = data_root / "livec"
    with pytest.raises(ManifestError, match=r"535 of 1162 images .*missing.*\.bmp"):
        prepare("livec", root, out=tmp_path / "livec.csv")
    with pytest.warns(UserWarning, match="535 rows dropped"):
        df, path = prepare("livec", root, out=tmp_path / "livec.csv", allow_partial=True)
    # all 7 training images t1..t7 are .bmp (and excluded anyway): the 627 JPGs remain
    assert len(df) == 627 and df["image"].str.endswith(".JPG").all()
    meta = sidecar(path)
    assert meta["partial"] is True and meta["dropped"] == 535 and meta["rows"] == 627
    assert np.isfinite(df["mos"]).all() and df["mos"].between(0, 100).all()
    assert len(read_manifest(path)) == 627


def test_real_emotionroi(data_root, tmp_path):
    df, path = prepare("emotionroi", data_root / "emotion6", out=tmp_path / "emotionroi.csv")
    assert len(df) == 1980 and sidecar(path)["partial"] is False
    classes = CARDS["emotionroi"].classes
    assert df.groupby("label_name")["label"].agg(["first", "size"]).to_dict() == {
        "first": {c: i for i, c in enumerate(classes)}, "size": dict.fromkeys(classes, 330)}
    assert df["label"].is_monotonic_increasing and df["valence"].notna().all()


def test_real_koniq_labels_only(data_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 10,073 rows: no count warning
        df, path = prepare("koniq10k", data_root / "koniq10k", out=tmp_path / "koniq.csv", check_images=False)
    assert len(df) == 10073 and sidecar(path)["images_checked"] is False
    assert df["set"].value_counts().to_dict() == {"training": 7058, "validation": 1000, "test": 2015}


def test_real_lamem_labels_only(data_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df, path = prepare("lamem", data_root / "lamem", out=tmp_path / "lamem.csv", check_images=False)
    assert len(df) == 58741
    for k in range(1, 6):
        assert df[f"split{k}"].value_counts().to_dict() == {"train": 45000, "val": 3741, "test": 10000}
    assert df[[f"memorability_split{k}" for k in range(1, 6)]].nunique(axis=1).gt(1).sum() == 58741 - 13
    assert len(read_manifest(path)) == 58741


def test_real_memcat_labels(data_root, tmp_path):
    df, path = prepare("memcat", data_root / "memcat", out=tmp_path / "memcat.csv", check_images=False)
    assert len(df) == 10000 and df["category"].value_counts().to_dict() == dict.fromkeys(
        ["animal", "food", "landscape", "sports", "vehicle"], 2000)
    assert df["memorability"].between(0, 1).all()


# ----------------------------------------------------------------------------- CLI
def test_cli_prepare_writes_manifest_and_reports_errors(tmp_path, capsys):
    from percept.interface.cli import main
    root = tmp_path / "livec"
    make_livec(root)
    (root / "ChallengeDB_release" / "Images" / "101.bmp").unlink()
    out = tmp_path / "m.csv"
    assert main(["prepare", "livec", "--root", str(root), "--out", str(out)]) == 2
    assert "101.bmp" in capsys.readouterr().err and not out.exists()
    assert main(["prepare", "livec", "--root", str(root), "--out", str(out), "--allow-partial"]) == 0
    captured = capsys.readouterr()
    assert "3 rows" in captured.out and "partial manifest - 1 rows dropped" in captured.err
    assert read_manifest(out)["image"].tolist() == [f"ChallengeDB_release/Images/{n}" for n in ("100.bmp", "533.JPG", "534.JPG")]
    assert main(["prepare", "livec", "--root", str(root), "--option", "nokey"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
