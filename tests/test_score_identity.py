"""Same pixels, same score: the IQA test crops depend on the image's size alone (not its name, folder or how it
arrived), exports carry their run's preprocessing and score as the run did, non-finite outputs are errors, and a
model adapted only on generated data says so. Runs are random tiny models saved as training leaves them (no
training); expected values come from the run directory itself or from independent computations."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import timm
import torch
from conftest import randomize_lora
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torchvision.transforms import functional as TF

import percept
from percept.engine.predict import GeneratedDataWarning, predict_images
from percept.engine.runs import PROTOCOL
from percept.interface.cli import main
from percept.model.backbones import BACKBONES
from percept.model.perceptclip import build_model, save_weights
from percept.study.export import export_run


def _finished_run(root, heads: dict, backbone="tiny_clip", test_crops=3, pretrained=False):
    """A finished run directory (weights, config, metrics marked complete) of a random tiny model."""
    torch.manual_seed(0)
    model = build_model(backbone=backbone, pretrained=pretrained, heads=heads)
    randomize_lora(model)
    root.mkdir(parents=True, exist_ok=True)
    save_weights(model.eval(), root / "best.safetensors")
    config = {"data": [{"dataset": d, "root": "absent", "manifest": None, "label_column": None} for d in heads],
              "model": model.config.to_dict(), "split": 1, "lr": 1e-4, "test_crops": test_crops, "protocol": PROTOCOL}
    (root / "config.json").write_text(json.dumps(config))
    test = {d: {"srcc": 0.5, "n_images": 10} for d in heads}
    (root / "metrics.json").write_text(json.dumps({"status": "complete", "best_epoch": 1, "epochs_run": 1,
                                                   "select_metric": "srcc", "test": test}))
    return root


def _noise(h, w, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def iqa_run(tmp_path_factory):
    return _finished_run(tmp_path_factory.mktemp("identity") / "iqa", {"synthetic_iqa": 1})


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """One picture under three names in three folders, and a second picture (300x360 and 500x420: the crops
    land at different places in each)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub" / "deeper").mkdir(parents=True)
    image = _noise(300, 360, 1)
    paths = [root / "a.png", root / "sub" / "IMG_0001.png", root / "sub" / "deeper" / "zz_other_name.png"]
    for path in paths:
        image.save(path)
    _noise(500, 420, 2).save(root / "other.png")
    return paths, root / "other.png"


def test_the_same_pixels_score_the_same_under_any_name_and_any_route(iqa_run, photos):
    copies, other = photos
    table = predict_images([*copies, other], iqa_run, device="cpu")
    scores = table["score"].to_numpy()
    assert scores[0] == scores[1] == scores[2] and abs(scores[0] - scores[3]) > 1e-4   # it can tell images apart
    metric = percept.create_metric(iqa_run, device="cpu")
    pil = Image.open(copies[0]).convert("RGB")
    with torch.no_grad():
        routes = [metric(copies), metric(pil), metric(Image.open(copies[2])), metric(TF.to_tensor(pil)),
                  metric(TF.to_tensor(pil)[None].repeat(2, 1, 1, 1))]
    for route in routes:
        np.testing.assert_allclose(route.numpy(), scores[0], rtol=0, atol=1e-6)
    from percept.interface.app_models import load_models, predict_with
    app_table = predict_with(load_models([iqa_run])[0], copies)
    np.testing.assert_allclose(app_table["score"].to_numpy(), scores[0], rtol=0, atol=1e-6)


def test_a_pil_image_scores_as_its_file_whatever_its_mode(iqa_run, tmp_path):
    """An opened file handed over as a PIL image is converted as the file is (EXIF orientation, alpha on white)."""
    rgba = np.random.default_rng(3).integers(0, 256, (260, 300, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6                                                     # stored rotated by 90 degrees
    _noise(240, 320, 4).save(tmp_path / "rotated.jpg", exif=exif)
    metric = percept.create_metric(iqa_run, device="cpu")
    with torch.no_grad():
        for name in ("alpha.png", "rotated.jpg"):
            assert float(metric(Image.open(tmp_path / name))) == pytest.approx(float(metric(tmp_path / name)),
                                                                             abs=1e-6), name


def test_a_decoded_tensor_scores_as_its_file_where_the_image_is_resized(tmp_path, photos):
    """Memorability resizes the shorter side to 224: a tensor of 8-bit levels takes the PIL path (equal); a float
    tensor that needs gradients takes torch's resize (close, not equal: docs/deviations.md, row 22)."""
    run = _finished_run(tmp_path / "mem", {"synthetic_strength": 1})
    metric = percept.create_metric(run, device="cpu")
    pil = Image.open(photos[0][0]).convert("RGB")
    x = TF.to_tensor(pil)
    with torch.no_grad():
        file_score = float(metric(photos[0][0]))
        assert float(metric(x)) == pytest.approx(file_score, abs=1e-6)
    loss_metric = percept.create_metric(run, device="cpu", as_loss=True)
    differentiable = float(loss_metric(x[None].requires_grad_()).detach())
    assert differentiable != file_score and differentiable == pytest.approx(file_score, abs=0.05)


def test_hub_and_merged_exports_score_as_their_run(tmp_path, photos):
    """Two heads with different test transforms (KonIQ-10k: LoDa's 384x512 pre-resize; LIVEC: none): the run,
    its hub folder and its merged file give the same score for each head, through predict, create_metric and
    the app; the merged file loads with percept.load_merged and with plain timm."""
    run = _finished_run(tmp_path / "two", {"koniq10k": 1, "livec": 1})
    hub = export_run(run, "hub", tmp_path / "hub")
    merged = export_run(run, "merged", tmp_path / "merged.safetensors")
    images = [*photos[0][:1], photos[1]]
    for head in ("koniq10k", "livec"):
        expected = predict_images(images, run, device="cpu", head_name=head)["score"].to_numpy()
        for source in (hub, merged):
            got = predict_images(images, source, device="cpu", head_name=head)["score"].to_numpy()
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"{source} {head}")
            with torch.no_grad():
                np.testing.assert_allclose(percept.create_metric(source, device="cpu", head_name=head)(images),
                                           expected, rtol=0, atol=1e-5)
    koniq = predict_images(images, run, device="cpu", head_name="koniq10k")["score"].to_numpy()
    livec = predict_images(images, run, device="cpu", head_name="livec")["score"].to_numpy()
    assert np.abs(koniq - livec).max() > 1e-4                       # the heads (and their transforms) differ
    metric = percept.create_metric(hub, device="cpu")
    assert metric.task == "iqa" and metric.head_name == "koniq10k" and metric.score_range is None
    from percept.interface.app_models import load_models, predict_with
    app_model = load_models([hub])[0]
    np.testing.assert_allclose(predict_with(app_model, images)["score"].to_numpy(), koniq, rtol=0, atol=1e-5)
    # percept.load_merged: every head; plain timm: the encoder, from the file's own timm name and arguments
    loaded = percept.load_merged(merged)
    assert loaded.head_names() == ["koniq10k", "livec"]
    with safe_open(merged, "pt") as f:
        meta = f.metadata()
    encoder = timm.create_model(meta["timm_name"], pretrained=False, **json.loads(meta["timm_kwargs"])).eval()
    encoder.load_state_dict({k: v for k, v in load_file(merged).items() if not k.startswith("perceptclip_heads.")})
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    original = percept.RunDir(run).load_model()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), original.embed(x), rtol=0, atol=1e-4)
        torch.testing.assert_close(loaded(x, "livec"), original(x, "livec"), rtol=0, atol=1e-4)


def test_the_demo_priors_merged_export_loads_and_scores(tmp_path, photos):
    """tiny_clip_prior has percept's own convolutional patch stem: its merged file names it, and load_merged (and
    so predict) rebuilds it; its model card does not offer the release layout, which cannot hold it."""
    run = _finished_run(tmp_path / "prior", {"synthetic_iqa": 1}, backbone="tiny_clip_prior", pretrained=True)
    merged = export_run(run, "merged", tmp_path / "prior.safetensors")
    with safe_open(merged, "pt") as f:
        assert json.loads(f.metadata()["timm_kwargs"])["embed_layer"] == "percept.model.backbones.ConvStemPatchEmbed"
    expected = predict_images(photos[0][:1], run, device="cpu")["score"]
    np.testing.assert_allclose(predict_images(photos[0][:1], merged, device="cpu")["score"], expected, atol=1e-5)
    card = (export_run(run, "hub", tmp_path / "hub") / "README.md").read_text()
    assert "--format official --out model.pth" not in card and "cannot hold this model" in card
    with pytest.raises(ValueError, match="projection has a non-zero bias"):
        export_run(run, "official", tmp_path / "x.pth")          # what the card says: export refuses it
    assert "projection has a non-zero bias" in card


def test_a_hub_folder_without_or_with_an_edited_preprocessing_file_is_refused(iqa_run, photos, tmp_path, capsys):
    hub = export_run(iqa_run, "hub", tmp_path / "hub")
    good = (hub / "preprocessor_config.json").read_text()
    (hub / "preprocessor_config.json").write_text(good.replace('"n_crops": 3', '"n_crops": 1'))
    with pytest.raises(ValueError, match="changed after the export"):
        predict_images(photos[0][:1], hub, device="cpu")
    # an edit that also rewrites the recorded hash, to a crop rule this percept does not use: refused by name
    import hashlib
    edited = good.replace('"crop_rule": "by-image-size"', '"crop_rule": "by-file-name"')
    (hub / "preprocessor_config.json").write_text(edited)
    config = json.loads((hub / "config.json").read_text())
    config["preprocessor_sha256"] = hashlib.sha256(edited.encode()).hexdigest()
    (hub / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="crop rule 'by-file-name'.*export the run again"):
        predict_images(photos[0][:1], hub, device="cpu")
    (hub / "preprocessor_config.json").unlink()
    assert main(["predict", str(photos[0][0]), "--model", str(hub), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no preprocessor_config.json" in err and "percept export" in err
    with pytest.raises(ValueError, match="no preprocessor_config.json"):
        percept.create_metric(hub)


def test_an_edited_merged_file_is_refused_in_one_line(iqa_run, photos, tmp_path, capsys):
    merged = export_run(iqa_run, "merged", tmp_path / "m.safetensors")
    with safe_open(merged, "pt") as f:
        meta = f.metadata()
    scoring = json.loads(meta["scoring"])
    save_file(load_file(merged), str(merged), metadata={**meta, "scoring": json.dumps({**scoring, "default_head": [1]})})
    assert main(["predict", str(photos[0][0]), "--model", str(merged), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "default_head" in err


def test_a_non_finite_score_is_an_error_not_a_score(tmp_path, photos, capsys):
    run = _finished_run(tmp_path / "broken", {"synthetic_iqa": 1})
    weights = load_file(run / "best.safetensors")
    with safe_open(run / "best.safetensors", "pt") as f:
        meta = f.metadata()
    bias = next(k for k in weights if k.startswith("heads.") and k.endswith("bias"))
    weights[bias] = torch.full_like(weights[bias], float("inf"))      # overwritten weight bytes
    save_file(weights, str(run / "best.safetensors"), metadata=meta)
    table = predict_images(photos[0][:1], run, device="cpu")
    assert np.isnan(table["score"][0]) and "not finite" in table["error"][0]
    assert main(["predict", str(photos[0][0]), "--model", str(run), "--quiet", "--csv"]) == 1
    assert "not finite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not finite"):
        percept.create_metric(run, device="cpu")(photos[0][0])
    from percept.interface.app_models import load_models, score_images
    table, _, messages = score_images(load_models([run]), photos[0][:1])
    assert len(table) == 0 and "not finite" in messages[0]


def test_a_demo_model_says_what_it_is(iqa_run, photos, tmp_path, capsys):
    with pytest.warns(GeneratedDataWarning, match="generated images"):
        predict_images(photos[0][:1], iqa_run, device="cpu")
    real = _finished_run(tmp_path / "livec", {"livec": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeneratedDataWarning)
        predict_images(photos[0][:1], real, device="cpu")            # a model of human judgements: no warning
    assert main(["predict", *map(str, photos[0]), "--model", str(iqa_run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: ") == 1 and "demo model: adapted only on generated images" in err   # once
    from percept.interface.app_models import load_models, score_images
    table, _, _ = score_images(load_models([iqa_run, real]), photos[0])
    assert (table["note"].str.contains("iqa: synthetic_iqa: demo model")).all() and len(table) == 3
    assert "livec" not in table["note"][0]
    card = (export_run(iqa_run, "hub", tmp_path / "hub") / "README.md").read_text()
    assert "Not a model of human judgements" in card
    assert "Not a model of human judgements" not in (export_run(real, "hub", tmp_path / "hub2") / "README.md").read_text()


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_the_merged_file_rebuilds_every_backbone(backbone, tmp_path):
    """Every backbone (the ViT-L ones at a small width and depth): the merged file of a two-head model loads with
    percept.load_merged, and with plain timm from its own timm_name and timm_kwargs (but for the prior's own stem)."""
    from percept.study.export import export_model
    small = {} if backbone.startswith("tiny") else {"embed_dim": 32, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    model = build_model(backbone=backbone, pretrained=backbone == "tiny_clip_prior", heads={"a": 1, "b": 3},
                        backbone_kwargs=small).eval()
    randomize_lora(model)
    path = export_model(model, "merged", tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    loaded = percept.load_merged(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, "b"), model(x, "b"), rtol=0, atol=1e-4)
    if backbone == "tiny_clip_prior":
        return
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    encoder = timm.create_model(meta["timm_name"], pretrained=False, **json.loads(meta["timm_kwargs"])).eval()
    encoder.load_state_dict({k: v for k, v in load_file(path).items() if not k.startswith("perceptclip_heads.")})
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), model.embed(x), rtol=0, atol=1e-4)
