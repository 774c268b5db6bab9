"""App. A.1 transforms: shapes, flips, normalisation, orientation, deterministic IQA test crops."""
import numpy as np
import pytest
import torch
from PIL import Image

from percept.core.images import CLIP_MEAN, CLIP_STD
from percept.data.preprocessing import (
    ResizeSpec,
    build_transform,
    deterministic_resize,
    iqa_crop_positions,
    iqa_test_crops,
)

MEAN, STD = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)


def quadrants(height, width):
    """Top-left red, top-right green, bottom-left blue, bottom-right white: flips and transposes are visible."""
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, : width // 2] = (255, 0, 0)
    a[: height // 2, width // 2:] = (0, 255, 0)
    a[height // 2:, : width // 2] = (0, 0, 255)
    a[height // 2:, width // 2:] = 255
    return Image.fromarray(a)


def noise(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def unnormalize(x):
    return x * STD + MEAN


@pytest.mark.parametrize("task", ["iqa", "memorability", "emotion"])
@pytest.mark.parametrize("hw", [(300, 500), (500, 300), (100, 150), (224, 224)])
def test_train_transforms_give_224(task, hw):
    assert build_transform(task, train=True)(noise(*hw)).shape == (3, 224, 224)


@pytest.mark.parametrize("task", ["memorability", "emotion"])
def test_uniform_image_normalisation_matches_clip(task):
    c = (200, 100, 50)
    out = build_transform(task, train=False)(Image.new("RGB", (333, 257), c))
    expected = (torch.tensor(c, dtype=torch.float32) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 224, 224), atol=1e-6)


def test_iqa_train_flips_both_axes_about_half_the_time():
    transform = build_transform("iqa", train=True)
    image = quadrants(224, 224)                          # crop = whole image, so only flips change it
    torch.manual_seed(0)
    h_flips = v_flips = 0
    n = 400
    for _ in range(n):
        x = unnormalize(transform(image))
        top_left = x[:, 50, 50]
        h_flips += bool(top_left[1] > 0.5)     # green or white: came from the right half
        v_flips += bool(top_left[2] > 0.5)     # blue or white: came from the bottom half
    assert 0.4 < h_flips / n < 0.6 and 0.4 < v_flips / n < 0.6


def test_emotion_train_flips_horizontally_only():
    ramp = np.tile(np.linspace(0, 255, 400, dtype=np.float32), (300, 1)).astype(np.uint8)
    transform = build_transform("emotion", train=True)
    torch.manual_seed(0)
    flipped = 0
    for _ in range(200):
        x = unnormalize(transform(Image.fromarray(np.stack([ramp] * 3, -1))))
        assert torch.allclose(x[:, 0], x[:, -1], atol=0.02)             # no vertical structure appears
        flipped += bool(x[0, :, :112].mean() > x[0, :, 112:].mean())   # bright side on the left
    assert 0.4 < flipped / 200 < 0.6


@pytest.mark.parametrize("task", ["memorability", "emotion"])
def test_centre_crop_keeps_orientation_of_wide_and_tall_images(task):
    transform = build_transform(task, train=False)
    wide = unnormalize(transform(quadrants(200, 400)))    # 224x448 after resize, centre crop 224
    assert wide[0, 10, 100] > 0.9 and wide[1, 10, 124] > 0.9 and wide[2, 200, 100] > 0.9
    tall = unnormalize(transform(quadrants(400, 200)))    # 448x224: the crop spans the middle rows
    assert tall[0, 100, 10] > 0.9 and tall[1, 100, 200] > 0.9 and tall[2, 124, 10] > 0.9


def test_iqa_resize_is_height_width():
    spec = deterministic_resize("iqa", train=True, resize=(384, 512))
    out = spec(quadrants(200, 300))
    assert out.size == (512, 384)                          # PIL size is (width, height)
    a = np.asarray(out)
    assert tuple(a[10, 10]) == (255, 0, 0) and tuple(a[10, -10]) == (0, 255, 0) and tuple(a[-10, 10]) == (0, 0, 255)
    assert ResizeSpec(384)(quadrants(600, 800)).size == (512, 384)
    assert ResizeSpec(384)(quadrants(800, 600)).size == (384, 512)


@pytest.mark.parametrize("spec", [ResizeSpec(224), ResizeSpec((100, 90), 224), ResizeSpec(None, 224), ResizeSpec(384, 224)])
@pytest.mark.parametrize("hw", [(100, 150), (301, 450), (640, 480)])
def test_resize_spec_is_idempotent(spec, hw):
    once = spec(noise(*hw))
    assert spec(once) is once and min(once.size) >= spec.min_side


def test_iqa_test_crops_deterministic():
    a, b = noise(300, 400, seed=1), noise(300, 400, seed=2)
    first = iqa_test_crops(a)
    torch.manual_seed(123)
    np.random.seed(123)
    iqa_test_crops(b)                                      # other images in between, RNGs disturbed
    torch.rand(10)
    again = iqa_test_crops(a)
    assert first.shape == (15, 3, 224, 224) and torch.equal(first, again)


def test_iqa_test_crops_positions_depend_on_size_and_seed_and_match_crops():
    pa, pb = iqa_crop_positions(300, 400), iqa_crop_positions(320, 400)
    assert len(pa) == 15 and pa != pb and len(set(pa)) > 1
    assert iqa_crop_positions(300, 400, seed=1) != pa
    image = noise(300, 400)
    crops = iqa_test_crops(image)
    full = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - MEAN) / STD
    for crop, (t, l) in zip(crops, pa):
        assert torch.allclose(crop, full[:, t:t + 224, l:l + 224], atol=1e-6)


def test_iqa_test_crops_small_image_scaled_up():
    crops = iqa_test_crops(noise(100, 150))
    assert crops.shape == (15, 3, 224, 224) and torch.isfinite(crops).all()
    transform = build_transform("iqa", train=False)
    assert torch.equal(transform(noise(100, 150)), crops)


def test_unknown_task_and_bad_resize():
    with pytest.raises(ValueError, match="iqa.*memorability.*emotion"):
        build_transform("aesthetics", train=True)
    with pytest.raises(ValueError, match="resize"):
        build_transform("iqa", train=True, resize=(384,))
    with pytest.raises(ValueError, match="resize"):
        build_transform("memorability", train=True, resize=384)


def test_the_task_registry_names_every_transform_and_preprocessing_implements_it():
    """One registry (percept.core.tasks) says which App. A.1 plan each task trains and tests with; the transforms
    built for a task follow it (IQA test: the multi-crop; emotion train: RandomResizedCrop; else centre)."""
    from percept.core.tasks import TASKS
    from percept.data.preprocessing import TRANSFORM_PLANS
    image = Image.new("RGB", (300, 260), (90, 120, 150))
    for task in TASKS.values():
        assert {task.train_transform, task.test_transform} <= set(TRANSFORM_PLANS)
        test = build_transform(task.name, train=False, n_crops=3)
        out = test(image)
        assert out.shape == ((3, 3, 224, 224) if task.test_transform == "loda_test_crops" else (3, 224, 224))
        names = [type(t).__name__ for t in getattr(build_transform(task.name, train=True).post, "transforms", [])]
        assert ("RandomResizedCrop" in names) == (task.train_transform == "random_resized_crop_flip")
        assert ("RandomVerticalFlip" in names) == (task.train_transform == "loda_crop_flips")
