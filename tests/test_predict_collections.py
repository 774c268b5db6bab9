"""`percept predict` on collections: folders, globs and lists; unreadable files
reported while the rest are scored; `--out` written as it goes and resumed without rescoring."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import percept.engine.predict as predict_module
from percept.engine.predict import collect_images, predict_images
from percept.interface.cli import main
from percept.model.perceptclip import ModelConfig, build_model, save_weights


def _noise(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory (random tiny weights, no training needed): what `percept predict` reads."""
    root = tmp_path_factory.mktemp("predict_run")
    torch.manual_seed(0)
    config = ModelConfig(backbone="tiny_clip", pretrained=False, heads={"synthetic_iqa": 1})
    save_weights(build_model(config).eval(), root / "best.safetensors")
    (root / "config.json").write_text(json.dumps({"data": [{"dataset": "synthetic_iqa", "root": "absent"}],
                                                  "model": config.to_dict(), "test_crops": 2}))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Good images in every mode people have, and files that cannot be scored."""
    root = tmp_path_factory.mktemp("collection")
    (root / "sub" / "deeper").mkdir(parents=True)
    _noise(300, 240, 0).save(root / "rgb.jpg", quality=90)
    _noise(260, 260, 1, "L").save(root / "gray.png")
    _noise(280, 250, 2, "CMYK").save(root / "sub" / "cmyk.jpg")
    _noise(240, 240, 3).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "sub" / "palette.png")
    Image.fromarray((np.arange(250 * 250, dtype=np.uint16).reshape(250, 250) * 7)).save(root / "sub" / "deep16.png")
    _noise(250, 230, 4, "RGBA").save(root / "sub" / "deeper" / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6                                                       # rotated 90 degrees
    _noise(320, 240, 5).save(root / "rotated.jpg", exif=exif)
    _noise(10, 10, 6).save(root / "tiny.png")
    (root / "empty.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    _noise(300, 300, 7).save(buffer, format="JPEG")
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[:400])
    (root / "notes.png").write_text("not an image")
    (root / "readme.txt.bak").write_text("ignored: no image suffix")
    return root


GOOD = {"rgb.jpg", "gray.png", "cmyk.jpg", "palette.png", "deep16.png", "alpha.png", "rotated.jpg", "tiny.png"}
BAD = {"empty.jpg", "truncated.jpg", "notes.png"}


def test_collect_images_from_folders_globs_and_lists(folder, tmp_path):
    found = collect_images([folder])
    assert {p.name for p in found} == GOOD | BAD and len(found) == len(GOOD | BAD)
    assert [p.name for p in collect_images([str(folder / "sub" / "*.png")])] == ["deep16.png", "palette.png"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'rgb.jpg'}\n\n{folder / 'gray.png'}\n{folder / 'rgb.jpg'}\n")
    assert [p.name for p in collect_images([listing])] == ["rgb.jpg", "gray.png"]      # blank lines, duplicates
    (folder / "sub" / "list.csv").write_text("label,image\n1,cmyk.jpg\n2,palette.png\n")
    assert collect_images([folder / "sub" / "list.csv"]) == [folder / "sub" / "cmyk.jpg", folder / "sub" / "palette.png"]
    (folder / "sub" / "list.csv").unlink()
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        collect_images([folder / "missing.jpg"])
    with pytest.raises(FileNotFoundError, match=r"no file matches .*\*\.webp"):
        collect_images([str(folder / "*.webp")])


def test_a_folder_is_scored_and_unreadable_files_are_reported(run, folder, tmp_path, capsys):
    table = predict_images([folder], run, device="cpu", batch_size=3)
    by_name = {p.rsplit("/", 1)[-1]: row for p, row in zip(table["image"], table.to_dict("records"))}
    assert set(by_name) == GOOD | BAD
    assert all(np.isfinite(by_name[n]["score"]) and not by_name[n]["error"] for n in GOOD)
    assert all(np.isnan(by_name[n]["score"]) and "cannot read image" in by_name[n]["error"] for n in BAD)
    # the same image scores the same alone (batching, and the bad files beside it, change nothing)
    parallel = predict_images([folder], run, device="cpu", batch_size=3, workers=2)      # decoding in workers
    pd.testing.assert_frame_equal(parallel, table)
    alone = predict_images([folder / "sub" / "cmyk.jpg"], run, device="cpu")
    assert alone["score"][0] == pytest.approx(by_name["cmyk.jpg"]["score"], abs=1e-5)
    out = tmp_path / "scores.csv"
    assert main(["predict", str(folder), "--model", str(run), "--out", str(out), "--quiet"]) == 1   # some failed
    err = capsys.readouterr().err
    assert all(f"cannot score {folder / n}" in err or n in err for n in BAD)
    written = pd.read_csv(out)
    assert list(written.columns) == ["image", "score", "crop_std", "error"] and len(written) == len(GOOD | BAD)
    crop_std = dict(zip(written["image"].str.rsplit("/", n=1).str[-1], written["crop_std"]))
    assert written["crop_std"].notna().sum() == len(GOOD) and crop_std["rgb.jpg"] > 0     # 2 crops of 300x240 differ
    assert crop_std["tiny.png"] == 0                     # 10x10 upscaled to 224x224: both crops are the same
    assert main(["predict", str(folder / "rgb.jpg"), "--model", str(run), "--quiet", "--csv"]) == 0


def test_out_resumes_without_rescoring(run, folder, tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    full = predict_images([folder], run, device="cpu", batch_size=4, out=out)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:5]) + "\n" + lines[5][:12])         # killed mid-way: 4 rows and a torn line
    first = pd.read_csv(io.StringIO("\n".join(lines[:5])), keep_default_na=False)
    kept = first.loc[first["error"] == "", "image"].tolist()             # error rows are tried again
    assert 0 < len(kept) < 4
    read = []
    original = predict_module.load_rgb
    monkeypatch.setattr(predict_module, "load_rgb", lambda p: read.append(str(p)) or original(p))
    resumed = predict_images([folder], run, device="cpu", batch_size=4, out=out)
    assert sorted(read) == sorted(set(full["image"]) - set(kept))        # only what the file lacked was read
    pd.testing.assert_frame_equal(resumed.sort_values("image", ignore_index=True),
                                  full.sort_values("image", ignore_index=True))
    again = pd.read_csv(out, keep_default_na=False)
    assert sorted(again["image"]) == sorted(full["image"])               # each image once, the torn line gone
    read.clear()
    predict_images([folder], run, device="cpu", out=out)
    assert sorted(read) == sorted(full.loc[full["error"] != "", "image"])   # only the failed files again


def test_a_multi_head_run_scores_with_the_named_head(tmp_path):
    torch.manual_seed(1)
    config = ModelConfig(backbone="tiny_clip", pretrained=False, heads={"synthetic_iqa": 1, "synthetic_strength": 1})
    save_weights(build_model(config).eval(), tmp_path / "best.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"data": [{"dataset": "synthetic_iqa", "root": "x"},
                                                               {"dataset": "synthetic_strength", "root": "x"}],
                                                      "model": config.to_dict(), "test_crops": 2}))
    image = tmp_path / "a.png"
    _noise(260, 240, 9).save(image)
    first = predict_images([image], tmp_path, device="cpu")["score"][0]
    other = predict_images([image], tmp_path, device="cpu", head_name="synthetic_strength")["score"][0]
    assert first != pytest.approx(other, abs=1e-6)
    with pytest.raises(ValueError, match="head 'livec' is not in this model"):
        predict_images([image], tmp_path, device="cpu", head_name="livec")


def test_precision_bf16_scores_close_to_fp32_and_bad_values_are_refused(run, folder):
    images = [folder / "rgb.jpg", folder / "gray.png"]
    fp32 = predict_images(images, model=run, device="cpu", precision="fp32")
    bf16 = predict_images(images, model=run, device="cpu", precision="bf16")
    assert not np.array_equal(fp32["score"], bf16["score"])          # autocast did run in bf16
    np.testing.assert_allclose(bf16["score"], fp32["score"], atol=0.05)
    with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16"):
        predict_images(images, model=run, device="cpu", precision="fp16")


def test_fast_resize_scores_close_to_the_exact_pil_path(run, folder):
    """--fast-resize: torch's 8-bit resize instead of PIL's — every readable mode scored, the same files failing,
    pixels within one grey level of PIL's pipeline, so scores close to (not bit-equal to) the exact path's."""
    exact = predict_images(folder, model=run, device="cpu")
    fast = predict_images(folder, model=run, device="cpu", fast_resize=True)
    assert list(fast["image"]) == list(exact["image"])
    assert list(fast["error"] != "") == list(exact["error"] != "")
    good = exact["error"] == ""
    assert not np.array_equal(fast.loc[good, "score"], exact.loc[good, "score"])    # it did take the other path
    spread = exact.loc[good, "score"].std()
    np.testing.assert_allclose(fast.loc[good, "score"], exact.loc[good, "score"], atol=0.05 * spread)   # ≤ 5 % of the spread between images


@pytest.mark.parametrize("kind", ["iqa_crops", "center_crop_bicubic", "official_bilinear"])
def test_uint8_tensor_transform_is_within_one_grey_level_of_pil(kind):
    from percept.data.preprocessing import build_transform, center_crop_transform
    from percept.data.tensor_preprocessing import TensorTestTransform
    transform = {"iqa_crops": build_transform("iqa", train=False, resize=(300, 400), n_crops=3),
                 "center_crop_bicubic": build_transform("memorability", train=False),
                 "official_bilinear": center_crop_transform()}[kind]
    image = _noise(517, 389, 11).filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(2))
    reference = transform(image) if kind == "iqa_crops" else transform(image).unsqueeze(0)
    pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).unsqueeze(0)
    fast = TensorTestTransform(transform)(pixels)[0]
    assert fast.shape == reference.shape
    grey_level = 1 / 255 / 0.26                                   # one 8-bit step in CLIP-normalised units (std ≥ 0.26)
    assert (fast - reference).abs().max() <= grey_level + 1e-5


def test_a_hub_folder_scores_as_its_run_does(run, folder, tmp_path):
    """`percept export --format hub` folders are models for predict: the run's own test transform travels with them
    (its 2 test crops here, not the paper's 15), so the scores equal the run's."""
    from percept.engine.runs import RunDir
    from percept.engine.scoring import ModelScoring
    from percept.study.export import export_model
    scoring = ModelScoring.from_run_config(RunDir(run).read_config())
    hub = export_model(RunDir(run).load_model(), "hub", tmp_path / "hub", scoring=scoring)
    assert (hub / "model.safetensors").is_file() and not (hub / "best.safetensors").exists()
    assert json.loads((hub / "preprocessor_config.json").read_text())["heads"]["synthetic_iqa"]["preprocessing"][
        "n_crops"] == 2
    images = [folder / "rgb.jpg", folder / "gray.png"]
    expected = predict_images(images, model=run, device="cpu")
    got = predict_images(images, model=hub, device="cpu")
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6)
    assert (got["crop_std"] > 0).all()                    # the crops matter: a transform with other crops would differ


def test_out_refuses_another_scorers_file_and_a_second_writer(run, folder, tmp_path, capsys):
    """The file records its scorer: another model (or head, preprocessing, precision) is refused, not mixed in;
    --overwrite starts anew; a torn number is not a score; a second writer fails at once, naming the holder."""
    out = tmp_path / "scores.csv"
    images = [folder / "rgb.jpg", folder / "gray.png"]
    first = predict_images(images, run, device="cpu", out=out)
    other = tmp_path / "other_run"
    shutil.copytree(run, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "test_crops": 3}))       # other preprocessing
    before = out.read_bytes()
    assert main(["predict", *map(str, images), "--model", str(other), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another scorer (different preprocessing)" in err and "--overwrite" in err
    assert out.read_bytes() == before                                  # nothing written
    replaced = predict_images(images, other, device="cpu", out=out, overwrite=True)
    assert not np.allclose(replaced["score"], first["score"])
    # a line torn inside its number (disk full): dropped and scored again, not kept as a finished row
    text = out.read_text()
    out.write_text(text[:text.rstrip("\n").rfind("\n") + 1] + "x,-1.93")
    out.write_text(out.read_text().replace("x,-1.93", f"{images[1]},-1.93"))
    np.testing.assert_allclose(predict_images(images, other, device="cpu", out=out)["score"], replaced["score"],
                               rtol=0, atol=1e-6)
    # no record beside it (not written by percept predict, or by an older one): refused
    plain = tmp_path / "plain.csv"
    plain.write_text("image,score\nx.png,1\n")
    with pytest.raises(ValueError, match="no record of writing it.*--overwrite"):
        predict_images(images, run, device="cpu", out=plain)
    # a second writer of the same file
    from percept.core.files import LockedError, exclusive_lock
    with exclusive_lock(out.with_name(out.name + ".lock"), str(out)):
        with pytest.raises(LockedError, match=rf"is being written by process {os.getpid()} on "):
            predict_images(images, run, device="cpu", out=out)
