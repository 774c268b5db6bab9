"""`percept.create_metric`: a pyiqa-style scorer over paths, PIL images and [0, 1] tensors, the
model's own preprocessing (the same numbers as `percept predict`), and `as_loss` gradients w.r.t. the input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import randomize_lora
from PIL import Image
from torchvision.transforms import functional as TF

import percept
from percept.data.preprocessing import (
    ResizeSpec,
    build_transform,
    center_crop_transform,
)
from percept.data.tensor_preprocessing import TensorTestTransform, resize_tensor
from percept.engine.predict import predict_images
from percept.model.perceptclip import ModelConfig, build_model, save_weights


def _make_run(root, dataset: str, outputs: int, test_crops: int = 3):
    torch.manual_seed(0)
    config = ModelConfig(backbone="tiny_clip", pretrained=False, heads={dataset: outputs})
    model = build_model(config)
    randomize_lora(model)            # LoRA's B starts at zero: make it matter, so merging is exercised
    save_weights(model.eval(), root / "best.safetensors")
    (root / "config.json").write_text(json.dumps({"data": [{"dataset": dataset, "root": "absent"}],
                                                  "model": config.to_dict(), "test_crops": test_crops}))
    return root


@pytest.fixture(scope="module")
def iqa_run(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("metric_iqa"), "synthetic_iqa", 1)


@pytest.fixture(scope="module")
def emotion_run(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("metric_emotion"), "synthetic_distortion", 4)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric_images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(300, 240), (240, 320), (224, 224)]):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_paths_give_percept_predicts_scores(iqa_run, images):
    metric = percept.create_metric(iqa_run, device="cpu")
    table = predict_images(images, model=iqa_run, device="cpu")
    np.testing.assert_allclose(metric(images).numpy(), table["score"].to_numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(metric(images[0]).numpy(), table["score"].to_numpy()[:1], rtol=0, atol=1e-5)
    assert metric.lower_better is False and metric.kind == "regression"
    assert metric.score_range is None          # a PLCC-trained IQA score has no fixed scale


def test_classification_returns_probabilities_with_class_names(emotion_run, images):
    metric = percept.create_metric(emotion_run, device="cpu")
    probs = metric(images)
    table = predict_images(images, model=emotion_run, device="cpu")
    assert probs.shape == (3, 4) and metric.class_names == [c[len("prob_"):] for c in table.columns
                                                           if c.startswith("prob_")]
    np.testing.assert_allclose(probs.numpy(), table.filter(like="prob_").to_numpy(), atol=1e-5)
    assert metric.score_range == (0.0, 1.0)


def test_tensor_path_matches_the_pil_path(iqa_run, emotion_run, images):
    """A [0, 1] tensor goes through the same steps in torch; the only difference is PIL's rounding to 8 bits."""
    for run in (iqa_run, emotion_run):
        metric = percept.create_metric(run, device="cpu")
        for path in images:
            pil = Image.open(path).convert("RGB")
            x = TF.to_tensor(pil)
            assert torch.allclose(metric(x), metric(pil), atol=2e-3), run.name
    # an image already at the model's size: no resize on either path, so the two agree to float rounding
    metric = percept.create_metric(emotion_run, device="cpu")
    pil = Image.open(images[2]).convert("RGB")
    assert torch.allclose(metric(TF.to_tensor(pil)), metric(pil), atol=1e-6)


def test_tensor_transform_equals_the_pil_transforms():
    rng = np.random.default_rng(1)
    pil = Image.fromarray(rng.integers(0, 256, (200, 310, 3), dtype=np.uint8))
    x = TF.to_tensor(pil).unsqueeze(0)
    # IQA test crops: the same positions (by size), the same normalisation
    transform = build_transform("iqa", train=False, resize=(384, 512), n_crops=4)
    pil_crops = transform(pil)
    tensor_crops = TensorTestTransform(transform)(x)[0]
    assert tensor_crops.shape == pil_crops.shape == (4, 3, 224, 224)
    diff = (tensor_crops - pil_crops).abs()       # normalised units (1/255 of a pixel is about 0.015)
    assert diff.mean() < 0.01 and diff.quantile(0.99) < 0.1     # bicubic kernels: PIL a=-0.5, torch a=-0.75
    # the release's transform (bilinear resize 224 + centre crop)
    official = center_crop_transform()
    diff = (TensorTestTransform(official)(x)[0, 0] - official(pil)).abs()
    assert diff.mean() < 0.01
    # resize_tensor follows ResizeSpec's sizes, and is a no-op on an image of the target size
    spec = ResizeSpec(300, 224)
    assert resize_tensor(spec, x).shape[-2:] == spec.target_hw(200, 310)
    same = torch.rand(1, 3, 224, 300)
    assert resize_tensor(ResizeSpec(224), same) is same


def test_as_loss_is_differentiable_and_matches_finite_differences(iqa_run):
    metric = percept.create_metric(iqa_run, device="cpu", as_loss=True, loss_weight=2.0)
    x = torch.rand(2, 3, 250, 260, dtype=torch.float32, requires_grad=True)
    loss = metric(x)
    assert loss.dim() == 0
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in metric.parameters())           # weights frozen: input gradients only
    with torch.no_grad():
        plain = percept.create_metric(iqa_run, device="cpu")(x)
        assert torch.allclose(loss, 2.0 * plain.mean(), atol=1e-5)
        # a finite difference along the gradient agrees with it (the preprocessing is differentiable end to end)
        direction = x.grad / x.grad.norm()
        eps = 1e-2
        change = (metric(x + eps * direction) - metric(x - eps * direction)) / (2 * eps)
    assert change.item() == pytest.approx(x.grad.norm().item(), rel=0.05)


def test_without_as_loss_no_graph_is_built(iqa_run):
    metric = percept.create_metric(iqa_run, device="cpu")
    x = torch.rand(1, 3, 230, 230, requires_grad=True)
    assert not metric(x).requires_grad


@pytest.mark.parametrize("bad, match", [
    (torch.rand(1, 1, 64, 64), "float RGB"),
    (torch.randint(0, 255, (1, 3, 64, 64)), "float RGB"),
    (torch.rand(1, 3, 64, 64) * 255, r"\[0, 1\]"),
    ([], "no images"),
    ([3.0], "paths, PIL images"),
])
def test_bad_inputs_are_refused_clearly(iqa_run, bad, match):
    metric = percept.create_metric(iqa_run, device="cpu")
    with pytest.raises((ValueError, TypeError), match=match):
        metric(bad)


def test_unreadable_file_names_the_file(iqa_run, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        percept.create_metric(iqa_run, device="cpu")(tmp_path / "broken.jpg")


def test_official_names_load_the_release_from_the_hub_cache(monkeypatch, tmp_path, images):
    """`perceptclip-iqa` is the released IQA checkpoint, read offline from the Hugging Face cache (here a file in
    the release's layout written by the independent transformers + peft reference, small random config)."""
    import huggingface_hub.constants
    from conftest import fake_hub_file
    from test_official import OfficialStyleModel

    from percept.model.official import OFFICIAL_CHECKPOINTS, load_official
    torch.manual_seed(3)
    reference = OfficialStyleModel(outputs=1).eval()
    randomize_lora(reference)
    card = OFFICIAL_CHECKPOINTS["iqa"]
    torch.save(reference.state_dict(), tmp_path / "release.pth")
    fake_hub_file(tmp_path / "hub", card.repo_id, card.filename, (tmp_path / "release.pth").read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    metric = percept.create_metric("perceptclip-IQA", device="cpu")
    assert metric.task == "iqa" and metric.score_range is None and not metric.lower_better
    pil = Image.open(images[0]).convert("RGB")
    expected = load_official(tmp_path / "release.pth")(center_crop_transform()(pil).unsqueeze(0))[0, 0]
    assert metric(pil).item() == pytest.approx(expected.item(), abs=1e-5)
    with pytest.raises(ValueError, match="known names"):
        percept.create_metric("perceptclip-aesthetics")
