"""Preprocessing fidelity: LoDa's pre-resize interpolation per dataset, normalisation
statistics per backbone, and one rule for the IQA test crops shared by evaluation and ``percept predict``.
Every expected value is computed here independently (PIL / torchvision / timm), not with percept's helpers."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)
from timm.models import get_pretrained_cfg
from torchvision import transforms as T

from percept.core.images import load_rgb
from percept.data.cache import ImageCache, cache_index_path
from percept.data.dataset import LODA_IQA_PRESETS, ManifestDataset
from percept.data.preprocessing import ResizeSpec, iqa_crop_positions
from percept.data.sources import DataConfig, dataset_transform
from percept.data.synthetic import generate_synthetic_iqa
from percept.engine.gpu_augment import DevicePlan
from percept.engine.predict import predict_images
from percept.engine.train import TrainConfig, train
from percept.model.backbones import BACKBONES, get_spec, normalization
from percept.model.perceptclip import ModelConfig, build_model, load_model, save_weights

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))           # timm.data.IMAGENET_DEFAULT_MEAN/STD
# A tiny DINOv2-architecture encoder; with DINOv2's layer scale (1e-5) a random one would ignore its input.
TINY_VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2, "init_values": 1.0}


def noise(height, width, seed=0):
    small = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.NEAREST)


def normalized(image, mean, std):
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


# ---------------------------------------------------------------- point 7: LoDa's pre-resize interpolation
# LoDa's scripts/process_*.py: KonIQ-10k and SPAQ `Resize(384)` (torchvision default: bilinear); FLIVE, LIVE
# and KADID-10k `Resize(384, interpolation=BICUBIC)`.
LODA = {"koniq10k": ((768, 1024), T.InterpolationMode.BILINEAR), "spaq": ((600, 800), T.InterpolationMode.BILINEAR),
        "flive": ((500, 640), T.InterpolationMode.BICUBIC), "live": ((512, 768), T.InterpolationMode.BICUBIC),
        "kadid10k": ((384, 512), T.InterpolationMode.BICUBIC)}


@pytest.mark.parametrize("name", sorted(LODA))
@pytest.mark.parametrize("train", [True, False])
def test_loda_pre_resize_uses_lodas_interpolation(name, train):
    (height, width), mode = LODA[name]
    image = noise(height, width, seed=len(name))
    expected = T.Resize(384, interpolation=mode)(image)               # what LoDa's script stored
    transform = dataset_transform(name, train, test_crops=2)
    got = transform.pre_resize(image)
    assert got.size == expected.size and min(got.size) == 384
    assert np.array_equal(np.asarray(got), np.asarray(expected))
    assert transform.pre_resize(got) is got                           # idempotent: the cache stays transparent
    if not train:                                                    # the test crops come from that image
        crops = transform(image)
        full = normalized(expected, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        for crop, (t, l) in zip(crops, iqa_crop_positions(expected.height, expected.width, 2)):
            assert torch.allclose(crop, full[:, t:t + 224, l:l + 224], atol=1e-6)


def test_koniq_pre_resize_is_bilinear_and_our_upscale_stays_bicubic():
    image = noise(600, 900, seed=3)
    spec = dataset_transform("koniq10k", False).pre_resize
    assert spec == ResizeSpec((384, 512), 224, "bilinear", "bicubic")
    bilinear = image.resize((512, 384), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(spec(image)), np.asarray(bilinear))
    assert not np.array_equal(np.asarray(bilinear), np.asarray(image.resize((512, 384), Image.Resampling.BICUBIC)))
    small = noise(100, 150, seed=4)                                  # no LoDa resize: only our upscale, bicubic
    livec = dataset_transform("livec", True).pre_resize
    assert np.array_equal(np.asarray(livec(small)), np.asarray(small.resize((336, 224), Image.Resampling.BICUBIC)))
    assert LODA_IQA_PRESETS["livec"]["resize"] is None and LODA_IQA_PRESETS["tid2013"]["resize"] is None


def test_a_bicubic_cache_of_koniq_is_not_reused(tmp_path):
    root = tmp_path / "koniq"
    root.mkdir()
    noise(768, 1024).save(root / "a.png")
    old = ResizeSpec((384, 512), 224, "bicubic")                      # what the code did before
    new = dataset_transform("koniq10k", False).pre_resize
    stale = ImageCache.build(root, ["a.png"], old, tmp_path / "cache")
    assert cache_index_path(root, new, tmp_path / "cache") != stale.index_path
    with pytest.raises(FileNotFoundError, match="no image cache"):
        ImageCache.open(root, new, tmp_path / "cache")
    frame = pd.DataFrame({"image": ["a.png"], "quality": [50.0]})
    with pytest.raises(ValueError, match="resized by"):
        ManifestDataset(frame, root, None, task="iqa", transform=dataset_transform("koniq10k", False), cache=stale)
    # an index written before the second interpolation existed reads as one interpolation for both stages
    assert ResizeSpec.from_json({"size": [384, 512], "min_side": 224, "interpolation": "bicubic"}) == old


# ---------------------------------------------------------------- point 8: normalisation belongs to the backbone
def test_backbone_statistics_are_timms():
    assert tuple(IMAGENET_DEFAULT_MEAN) == IMAGENET[0] and tuple(IMAGENET_DEFAULT_STD) == IMAGENET[1]
    for name, spec in BACKBONES.items():
        cfg = get_pretrained_cfg(spec.timm_name)
        assert normalization(name) == (tuple(cfg.mean), tuple(cfg.std)), name
        expected = IMAGENET if spec.family in ("dinov2", "mae") else (tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD))
        assert normalization(name) == expected, name
    assert "patch16" in get_spec("mae_vit_l16").timm_name                  # MAE ViT-L is /16: no /14 exists


@pytest.mark.parametrize("backbone", ["dinov2_vit_l14", "mae_vit_l16", "clip_vit_l14"])
@pytest.mark.parametrize("dataset,train", [("koniq10k", True), ("koniq10k", False), ("lamem", False),
                                           ("emoset", True)])
def test_dataset_transforms_normalise_with_the_backbones_statistics(backbone, dataset, train):
    mean, std = IMAGENET if backbone != "clip_vit_l14" else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    colour = (200, 100, 50)
    transform = dataset_transform(dataset, train, test_crops=2, normalization=normalization(backbone))
    image = Image.new("RGB", (640, 480), colour)
    out = transform(image)
    expected = (torch.tensor(colour, dtype=torch.float32) / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(out, expected.view(3, 1, 1).expand_as(out), atol=1e-5)
    if train and dataset == "koniq10k":                             # the device path reads the same statistics
        plan = DevicePlan.from_transform(transform)
        assert np.allclose(plan.mean, mean) and np.allclose(plan.std, std)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """8 references x 4 distortions x 5 levels = 160 images of 256x288 (larger than a crop: positions matter)."""
    root = tmp_path_factory.mktemp("synthetic256")
    generate_synthetic_iqa(root, n_references=8, size=256, seed=0)
    return root


def tiny_config(root, dataset, backbone="tiny_clip", backbone_kwargs=None, test_crops=3):
    model = ModelConfig(backbone=backbone, pretrained=False, backbone_kwargs=backbone_kwargs or {})
    return TrainConfig(data=[DataConfig(dataset, str(root))], model=model, lr=1e-3, batch_size=16, max_epochs=1,
                       patience=1, test_crops=test_crops, quiet=True)


def test_dinov2_run_evaluates_and_predicts_with_imagenet_statistics(synth, tmp_path):
    run = tmp_path / "dinov2"
    train(tiny_config(synth, "synthetic_strength", "dinov2_vit_l14", TINY_VIT), run)
    preds = pd.read_csv(run / "predictions.csv").head(4)
    model = load_model(run / "best.safetensors")
    resize = T.Compose([T.Resize(224, T.InterpolationMode.BICUBIC), T.CenterCrop(224)])   # App. A.1, memorability
    images = [resize(load_rgb(synth / i)) for i in preds["id"]]
    x = torch.stack([normalized(im, *IMAGENET) for im in images])
    clip = torch.stack([normalized(im, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD) for im in images])
    with torch.no_grad():
        expected = model(x, "synthetic_strength")[:, 0].numpy()
        assert np.abs(model(clip, "synthetic_strength")[:, 0].numpy() - expected).max() > 1e-4   # it can tell
    np.testing.assert_allclose(preds["prediction"], expected, atol=1e-5)
    table = predict_images([synth / i for i in preds["id"]], run, device="cpu")
    np.testing.assert_allclose(table["score"], expected, atol=1e-5)


# ---------------------------------------------------------------- point 9: one crop rule, one test transform
def test_crop_positions_are_one_fixed_draw_per_image_size():
    """numpy's default_rng([seed, height, width]), drawn here independently: the geometry alone places them."""
    rng = np.random.default_rng([0, 300, 400])
    tops, lefts = rng.integers(0, 300 - 224 + 1, 15), rng.integers(0, 400 - 224 + 1, 15)
    assert iqa_crop_positions(300, 400) == list(zip(tops.tolist(), lefts.tolist()))
    assert iqa_crop_positions(300, 400) != iqa_crop_positions(400, 300) != iqa_crop_positions(300, 401)


def test_predict_equals_evaluation_for_a_run(synth, tmp_path):
    run = tmp_path / "iqa"
    train(tiny_config(synth, "synthetic_iqa"), run)
    preds = pd.read_csv(run / "predictions.csv")
    assert (preds["crop_std"] > 0).all()                               # the crops differ: their positions matter
    copies = tmp_path / "elsewhere"                      # same files under other names, in another folder layout
    copies.mkdir()
    paths = []
    for k, i in enumerate(preds["id"][:6]):
        paths.append(copies / f"IMG_{9000 + k}{Path(i).suffix}")
        paths[-1].write_bytes((synth / i).read_bytes())
    table = predict_images(paths, run, device="cpu", batch_size=4)
    np.testing.assert_allclose(table["score"], preds["prediction"][:6], atol=1e-5)


def test_predict_uses_the_runs_pre_resize_and_backbone(tmp_path):
    """A KonIQ-10k run on a DINOv2 encoder: predict pre-resizes to 384x512 (bilinear, as LoDa) and normalises
    with ImageNet statistics, as evaluation does; the dataset's files are not needed."""
    torch.manual_seed(0)
    config = ModelConfig(backbone="dinov2_vit_l14", pretrained=False, backbone_kwargs=TINY_VIT,
                         heads={"koniq10k": 1})
    model = build_model(config).eval()
    run = tmp_path / "koniq_run"
    run.mkdir()
    save_weights(model, run / "best.safetensors")
    (run / "config.json").write_text(json.dumps({"data": [{"dataset": "koniq10k", "root": str(tmp_path / "absent")}],
                                                 "model": config.to_dict(), "test_crops": 3}))
    image_path = tmp_path / "photo.png"
    noise(768, 1024, seed=7).save(image_path)
    resized = load_rgb(image_path).resize((512, 384), Image.Resampling.BILINEAR)
    full = normalized(resized, *IMAGENET)
    crops = torch.stack([full[:, t:t + 224, l:l + 224] for t, l in iqa_crop_positions(384, 512, 3)])
    with torch.no_grad():
        expected = float(model(crops, "koniq10k")[:, 0].mean())
        unresized = normalized(load_rgb(image_path), *IMAGENET)[:, :224, :224]
        assert abs(float(model(unresized[None], "koniq10k")[0, 0]) - expected) > 1e-4             # it can tell
    assert predict_images([image_path], run, device="cpu")["score"][0] == pytest.approx(expected, abs=1e-5)


def test_reduce_crops_is_the_mean_over_crops_for_every_consumer():
    """Evaluation, stage 2 and `percept predict` reduce crops with one function (App. A.1: the mean over the
    test crops; for classification the mean of the crops' softmax), checked against scipy."""
    from scipy.special import softmax

    from percept.engine.evaluate import reduce_crops
    logits = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
    classes = reduce_crops(logits, "classification")
    np.testing.assert_allclose(classes["probs"], softmax(logits.double().numpy(), axis=-1).mean(1), atol=1e-6)
    assert (classes["prediction"] == classes["probs"].argmax(1)).all()
    scores = reduce_crops(logits[:, :, :1], "regression")
    np.testing.assert_allclose(scores["prediction"], logits[:, :, 0].double().numpy().mean(1), atol=1e-6)
    np.testing.assert_allclose(scores["crop_std"], logits[:, :, 0].double().numpy().std(1), atol=1e-6)
    assert reduce_crops(logits[:, :1, :1], "regression")["crop_std"].tolist() == [0.0] * 5
