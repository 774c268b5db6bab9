"""All image preprocessing: the per-task training/test transforms (paper App. A.1; IQA follows LoDa, Xu et al.
2024a) and the official release's inference transform (:func:`center_crop_transform`). The same plans run on
the GPU in :mod:`percept.engine.gpu_augment` (identical pixels, tested); images are read by :func:`percept.core.images.load_rgb`.

Every transform is two stages:

1. ``pre_resize`` — a deterministic, *idempotent* :class:`ResizeSpec`.  This is the stage that
   :mod:`percept.data.cache` stores, and because applying it to its own output is a no-op, the full
   transform gives the same tensor on a cached (pre-resized) image as on the original file.
2. the task's random or fixed cropping, ``ToTensor`` and mean/std normalisation with the *backbone's*
   statistics (``mean``/``std``: OpenAI CLIP's for CLIP, "the CLIP preprocessor" of paper §3.1; ImageNet's
   for DINOv2 and MAE; see :mod:`percept.model.backbones`).  The default is CLIP's.

Tasks (App. A.1):

* **iqa** train — LoDa first pre-resizes each dataset (``resize``: KonIQ-10k is used at 512×384, i.e.
  ``(384, 512)``; SPAQ, FLIVE, LIVE, KADID-10k at shorter side 384; see ``percept.data.dataset.LODA_IQA_PRESETS``),
  then random horizontal and vertical flips (p=0.5 each) and a random 224×224 crop.
  iqa test — 15 random 224 crops whose positions are a pure function of ``(seed, image height, image width)``
  (:func:`iqa_crop_positions`, after the pre-resize): never of the file's name or folder, a global RNG, worker
  count, batch order or sampler — the same pixels get the same crops, hence the same score, in validation,
  evaluation, ``percept predict``, ``create_metric`` (files, PIL images, tensors), the app and every export.
  (Until protocol 3 the file's base name seeded them too, so a renamed copy scored differently.)
  An image whose shorter side is below 224 (after ``resize``) is first scaled up, aspect kept, so that
  its shorter side is 224 (no padding, never a crash).
* **memorability** train and test — resize the shorter side to 224 (aspect kept), centre crop 224.
* **emotion** train — RandomResizedCrop(224) (torchvision defaults: scale (0.08, 1), ratio (3/4, 4/3))
  + horizontal flip p=0.5, after Yang et al. (2023); test — shorter side 224 + centre crop.

Interpolation (resizing is done with PIL, antialiased, which is what torchvision's ``Resize`` does on PIL
images):

* **LoDa's IQA pre-resize** (``resize`` with ``resize_interpolation``) uses the interpolation of LoDa's own
  script for that dataset (``LODA_IQA_PRESETS``): torchvision's default *bilinear* for KonIQ-10k and SPAQ
  (``Resize(384)``), *bicubic* for FLIVE, LIVE and KADID-10k (``Resize(384, interpolation=BICUBIC)``; KADID's
  512x384 originals are not changed by it).
* **our own stages** are bicubic (``interpolation``, as OpenAI CLIP's preprocessor): the upscale of an IQA
  image whose shorter side is below 224, the memorability / emotion-test "shorter side 224" resize, emotion's
  RandomResizedCrop.  Note that the official PerceptCLIP inference code uses torchvision's default bilinear
  ``Resize(224)`` (:func:`center_crop_transform`, the release's inference transform); pass ``interpolation="bilinear"`` to reproduce that exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..core.images import CLIP_MEAN, CLIP_STD, check_size, load_rgb
from ..core.tasks import get_task

# The App. A.1 plans this module implements; percept.core.tasks names one per task and phase.
TRANSFORM_PLANS = ("loda_crop_flips", "loda_test_crops", "resize_center_crop", "random_resized_crop_flip")
# How the IQA test crops are placed (:func:`iqa_crop_positions`); exports record it, so that a file written under
# another rule is refused rather than scored with crops its run never used.
CROP_RULE = "by-image-size"
CROP_SIZE = 224
N_TEST_CROPS = 15
_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_TV_MODES = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}

Resize = Union[None, int, tuple[int, int]]


def _check_resize(resize) -> Resize:
    if resize is None:
        return None
    if isinstance(resize, (int, np.integer)) and not isinstance(resize, bool) and resize > 0:
        return int(resize)
    if (isinstance(resize, (tuple, list)) and len(resize) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in resize)):
        return (int(resize[0]), int(resize[1]))
    raise ValueError(f"resize must be None, a shorter-side length (int) or (height, width); got {resize!r}")


@dataclass(frozen=True)
class ResizeSpec:
    """Deterministic resize: ``size`` None (keep), int (shorter side, aspect kept) or (height, width),
    with ``interpolation``; then, if the shorter side is below ``min_side``, scale up (aspect kept) to make
    it ``min_side``, with ``min_side_interpolation`` (default: ``interpolation``).

    The target size is computed from the input size in one step, and an image already at its target size
    is returned unchanged, so ``spec(spec(img)) == spec(img)`` (what makes the cache transparent).  Both
    interpolations are part of the spec (its equality and :meth:`to_json`, hence the cache fingerprint).
    """

    size: Resize = None
    min_side: int = 0
    interpolation: str = "bicubic"
    min_side_interpolation: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "size", _check_resize(self.size))
        if self.min_side_interpolation is None:
            object.__setattr__(self, "min_side_interpolation", self.interpolation)
        for value in (self.interpolation, self.min_side_interpolation):
            if value not in _PIL_FILTERS:
                raise ValueError(f"interpolation must be one of {sorted(_PIL_FILTERS)}, got {value!r}")

    def _size_hw(self, height: int, width: int) -> tuple[int, int]:
        if isinstance(self.size, tuple):
            return self.size
        if isinstance(self.size, int):
            return _shorter_side(height, width, self.size)
        return height, width

    def target_hw(self, height: int, width: int) -> tuple[int, int]:
        """Output (height, width) for an input of ``height`` × ``width``."""
        h, w = self._size_hw(height, width)
        if min(h, w) < self.min_side:
            h, w = _shorter_side(h, w, self.min_side)
        return h, w

    def __call__(self, image: Image.Image) -> Image.Image:
        h, w = self.target_hw(image.height, image.width)
        check_size(w, h, f"the {image.width}x{image.height} image resized")    # bounded memory, whatever came in
        if (h, w) == (image.height, image.width):
            return image
        sized = self._size_hw(image.height, image.width)
        if sized != (image.height, image.width):
            image = image.resize(sized[::-1], _PIL_FILTERS[self.interpolation])   # PIL takes (width, height)
        if (h, w) != sized:
            image = image.resize((w, h), _PIL_FILTERS[self.min_side_interpolation])
        return image

    def to_json(self) -> dict:
        """JSON-able description (used in cache fingerprints)."""
        size = list(self.size) if isinstance(self.size, tuple) else self.size
        return {"size": size, "min_side": self.min_side, "interpolation": self.interpolation,
                "min_side_interpolation": self.min_side_interpolation}

    @classmethod
    def from_json(cls, data: dict) -> "ResizeSpec":
        size = tuple(data["size"]) if isinstance(data["size"], list) else data["size"]
        return cls(size, int(data["min_side"]), data["interpolation"], data.get("min_side_interpolation"))


def _shorter_side(height: int, width: int, side: int) -> tuple[int, int]:
    """Scale so that the shorter side is ``side``; the longer side is truncated as torchvision's Resize."""
    if height <= width:
        return side, int(side * width / height)
    return int(side * height / width), side


def iqa_crop_positions(height: int, width: int, n_crops: int = N_TEST_CROPS, size: int = CROP_SIZE,
                       seed: int = 0) -> list[tuple[int, int]]:
    """(top, left) of the ``n_crops`` test crops of an image of ``height`` × ``width`` (both ≥ ``size``).

    Drawn from ``numpy.random.default_rng([seed, height, width])``: one fixed draw per image size, a pure
    function of the geometry — never of the image's name, path or how it arrived (file, PIL image, tensor).
    """
    if height < size or width < size:
        raise ValueError(f"an image of {height}x{width} is smaller than the {size}x{size} crop")
    rng = np.random.default_rng([int(seed), int(height), int(width)])
    tops = rng.integers(0, height - size + 1, n_crops)
    lefts = rng.integers(0, width - size + 1, n_crops)
    return [(int(t), int(l)) for t, l in zip(tops, lefts)]


def iqa_test_crops(image: Image.Image, n_crops: int = N_TEST_CROPS, size: int = CROP_SIZE, seed: int = 0,
                   interpolation: str = "bicubic", mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """IQA inference input (App. A.1, LoDa): ``(n_crops, 3, size, size)`` crops normalised with ``mean``/``std``.

    Positions depend only on ``seed`` and the image size (:func:`iqa_crop_positions`). An image with a side
    below ``size`` is first scaled up so that its shorter side is ``size``.
    """
    image = ResizeSpec(None, size, interpolation)(image)
    full = TF.normalize(TF.to_tensor(image), list(mean), list(std))   # (3, H, W); normalise once, then slice
    positions = iqa_crop_positions(image.height, image.width, n_crops, size, seed)
    return torch.stack([full[:, t:t + size, l:l + size] for t, l in positions])


class TaskTransform:
    """``post(pre_resize(image))``: an RGB PIL image → ``(3, size, size)``, or the IQA test crops
    ``(n, 3, size, size)``."""

    def __init__(self, task: str, train: bool, pre_resize: ResizeSpec, post: Callable):
        self.task, self.train, self.pre_resize, self.post = task, train, pre_resize, post

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.post(self.pre_resize(image))

    def __repr__(self) -> str:
        return (f"TaskTransform(task={self.task!r}, train={self.train}, pre_resize={self.pre_resize}, "
                f"post={self.post})")


class _IQATestCrops:
    def __init__(self, n_crops: int, size: int, seed: int, interpolation: str, mean=CLIP_MEAN, std=CLIP_STD):
        self.n_crops, self.size, self.seed, self.interpolation = n_crops, size, seed, interpolation
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return iqa_test_crops(image, self.n_crops, self.size, self.seed, self.interpolation, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"IQATestCrops(n_crops={self.n_crops}, size={self.size}, seed={self.seed}, mean={self.mean}, "
                f"std={self.std})")


def deterministic_resize(task: str, train: bool, resize: Resize = None, interpolation: str = "bicubic",
                         size: int = CROP_SIZE, resize_interpolation: str | None = None) -> ResizeSpec:
    """The cacheable first stage of :func:`build_transform` for these arguments.

    ``resize`` is allowed for IQA (LoDa's per-dataset pre-resize, done with ``resize_interpolation``: the
    dataset's LoDa interpolation, see ``LODA_IQA_PRESETS``) and for emotion training (an optional pre-resize
    before RandomResizedCrop; default None = the original image, as in the paper).  ``resize_interpolation``
    defaults to ``interpolation``, which is used for everything else (our stages: the IQA upscale to a
    shorter side of ``size``, the memorability/emotion-test resize).  Memorability and emotion test resize
    the shorter side to 224 by definition (App. A.1), so ``resize`` must be None.
    """
    plan = get_task(task).transform(train)
    resize = _check_resize(resize)
    resize_interpolation = resize_interpolation or interpolation
    if plan in ("loda_crop_flips", "loda_test_crops"):
        return ResizeSpec(resize, size, resize_interpolation, interpolation)
    if plan == "random_resized_crop_flip":
        return ResizeSpec(resize, 0, resize_interpolation)
    if resize is not None:
        raise ValueError(f"resize={resize!r} is not used for task {task!r} (train={train}): App. A.1 fixes it "
                         f"to 'shorter side {size}'; pass resize=None")
    return ResizeSpec(size, 0, interpolation)


def build_transform(task: str, train: bool, resize: Resize = None, *, interpolation: str = "bicubic",
                    resize_interpolation: str | None = None, n_crops: int = N_TEST_CROPS, crop_seed: int = 0,
                    size: int = CROP_SIZE, mean=CLIP_MEAN, std=CLIP_STD) -> TaskTransform:
    """The App. A.1 transform for ``task`` ("iqa", "memorability", "emotion") and phase.

    Returns a :class:`TaskTransform` mapping an RGB PIL image to a ``(3, 224, 224)`` tensor, or for IQA test
    to ``(n_crops, 3, 224, 224)`` (positions by the image's size alone, :func:`iqa_crop_positions`).
    ``mean``/``std``: the backbone's normalisation
    (``percept.model.backbones.normalization(name)``; default CLIP's).  ``resize_interpolation``: that of the
    ``resize`` stage (LoDa's pre-resize), see :func:`deterministic_resize`.  For a dataset, use
    ``percept.data.sources.dataset_transform`` (its LoDa preset and the backbone's statistics).
    """
    pre = deterministic_resize(task, train, resize, interpolation, size, resize_interpolation)
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    plan = get_task(task).transform(train)        # the task registry names the plan (percept.core.tasks)
    if plan == "loda_test_crops":
        return TaskTransform(task, train, pre, _IQATestCrops(n_crops, size, crop_seed, interpolation, mean, std))
    if plan == "loda_crop_flips":
        post = T.Compose([T.RandomHorizontalFlip(0.5), T.RandomVerticalFlip(0.5), T.RandomCrop(size), *normalize])
    elif plan == "random_resized_crop_flip":
        post = T.Compose([T.RandomResizedCrop(size, interpolation=_TV_MODES[interpolation], antialias=True),
                          T.RandomHorizontalFlip(0.5), *normalize])
    else:   # resize_center_crop (memorability train and test, emotion test): the shorter side is already `size`
        post = T.Compose([T.CenterCrop(size), *normalize])
    return TaskTransform(task, train, pre, post)


# ----------------------------------------------------------------------------- a test transform as data
@dataclass(frozen=True)
class TestPreprocessing:
    """Everything that turns an image into a model's test input, as data: the arguments of
    :func:`build_transform` with ``train=False``. A run's evaluation, ``percept predict`` and ``create_metric``
    build their transform from it, and ``percept export`` writes it beside the weights
    (``preprocessor_config.json`` of a hub folder, the metadata of a merged file), so that an exported model
    scores an image exactly as its run did. :meth:`from_json` checks every field and names the wrong one."""

    task: str
    resize: Resize = None
    resize_interpolation: str = "bicubic"
    interpolation: str = "bicubic"
    n_crops: int = N_TEST_CROPS
    crop_seed: int = 0
    size: int = CROP_SIZE
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def transform(self) -> TaskTransform:
        return build_transform(self.task, False, self.resize, interpolation=self.interpolation,
                               resize_interpolation=self.resize_interpolation, n_crops=self.n_crops,
                               crop_seed=self.crop_seed, size=self.size, mean=self.mean, std=self.std)

    def to_json(self) -> dict:
        return {"crop_rule": CROP_RULE, "task": self.task, "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                "resize_interpolation": self.resize_interpolation, "interpolation": self.interpolation,
                "n_crops": self.n_crops, "crop_seed": self.crop_seed, "size": self.size,
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_json(cls, data, source: str = "the preprocessing") -> "TestPreprocessing":
        """The preprocessing ``data`` describes (:meth:`to_json`'s form); ``ValueError`` naming ``source`` and the
        field that is missing, unknown or of the wrong type or value."""
        fields = ("crop_rule", "task", "resize", "resize_interpolation", "interpolation", "n_crops", "crop_seed",
                  "size", "mean", "std")
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected an object with fields {', '.join(fields)}")
        unknown, missing = sorted(set(data) - set(fields)), [f for f in fields if f not in data]
        if unknown or missing:
            raise ValueError(f"{source}: " + "; ".join(
                ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing field(s) {', '.join(missing)}"] if missing else [])))
        if data["crop_rule"] != CROP_RULE:
            raise ValueError(f"{source}: written for the crop rule {data['crop_rule']!r}; this percept places the test "
                             f"crops {CROP_RULE!r}: export the run again with this version")
        for name in ("task", "resize_interpolation", "interpolation"):
            if not isinstance(data[name], str):
                raise ValueError(f"{source}: `{name}` must be a name; got {data[name]!r}")
        for name in ("n_crops", "crop_seed", "size"):
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "crop_seed" else 1):
                raise ValueError(f"{source}: `{name}` must be a {'non-negative' if name == 'crop_seed' else 'positive'}"
                                 f" integer; got {value!r}")
        for name in ("mean", "std"):
            value = data[name]
            if (not isinstance(value, list) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or (name == "std" and not all(v > 0 for v in value))):
                raise ValueError(f"{source}: `{name}` must be 3 numbers{' > 0' if name == 'std' else ''}; "
                                 f"got {value!r}")
        resize = tuple(data["resize"]) if isinstance(data["resize"], list) else data["resize"]
        try:
            config = cls(data["task"], _check_resize(resize), data["resize_interpolation"], data["interpolation"],
                         data["n_crops"], data["crop_seed"], data["size"], tuple(float(v) for v in data["mean"]),
                         tuple(float(v) for v in data["std"]))
            config.transform()                      # the task, plan, resize and interpolations are valid
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{source}: {err}") from None
        return config


# ----------------------------------------------------------------------------- the release's inference transform
def center_crop_transform(size: int = 224, interpolation: str = "bilinear", mean=CLIP_MEAN,
                          std=CLIP_STD) -> T.Compose:
    """The official release's inference preprocessing (``transforms.Resize(224)``: torchvision's default
    bilinear, antialiased; then ``CenterCrop(224)``): resize the shorter side to ``size``, centre crop
    ``size`` x ``size``, normalise with ``mean``/``std`` (default CLIP's; a DINOv2/MAE model needs its
    backbone's, ``model.normalization``)."""
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    return T.Compose([T.Resize(size, interpolation=mode, antialias=True), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(tuple(mean), tuple(std))])


def images_to_batch(images, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """Paths or PIL images → a (B, 3, size, size) batch normalised with ``mean``/``std`` (default CLIP's)."""
    transform = center_crop_transform(size, mean=mean, std=std)
    return torch.stack([transform(im if isinstance(im, Image.Image) else load_rgb(im)) for im in images])
