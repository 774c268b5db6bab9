"""Training augmentation split between the loader (integer crops on uint8 pixels) and the device
(flips, uint8 → float, mean/std normalisation), exactly equal to the torchvision path of
:mod:`percept.data.preprocessing`. The mean/std are those of the transform's ``Normalize`` step, i.e. the
run's backbone's (CLIP's or ImageNet's, :mod:`percept.model.backbones`), read by :meth:`DevicePlan.from_transform`.

Why split it this way
---------------------
The torchvision training transforms (App. A.1) are, per task::

    iqa          RandomHorizontalFlip, RandomVerticalFlip, RandomCrop(224), ToTensor, Normalize
    memorability CenterCrop(224), ToTensor, Normalize
    emotion      RandomResizedCrop(224, bicubic), RandomHorizontalFlip, ToTensor, Normalize

IQA images are pre-resized to *different* sizes (LIVE Challenge keeps each file's size), so a batch of
whole images cannot be stacked. Instead the loader does the geometric part on uint8 pixels — a crop is a
slice of the cached ``(H, W, 3)`` array (:class:`percept.data.cache.ImageCache`), no decoding, no float
maths — and returns fixed-size ``(224, 224, 3)`` uint8 crops plus the flip decisions; the device then
flips, converts and normalises the whole batch (:func:`normalize_on_device`). A 224² uint8 crop is 150 KB,
a quarter of its float32 tensor, which also cuts host→device traffic by 4.

Exactness: flips commute with crops when the crop box is mirrored (``hflip(img)[:, t:t+h, l:l+w] ==
hflip(img[:, t:t+h, W-l-w:W-l])``), so a flip that torchvision applies *before* a crop is applied *after*
it here, with the box mirrored. ``RandomResizedCrop``'s resize stays on the loader (PIL, as torchvision
does on a PIL image); only its crop-then-resize result (uint8) is sent. Random parameters are drawn by
torchvision's own ``get_params`` in the order its ``Compose`` draws them, from the same (global torch)
generator, so for the same seed this path returns *the same tensors* as ``transform(image)``
(``tests/test_bench.py`` checks equality to 1e-6; it is in fact bit-exact on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..core.images import CLIP_MEAN, CLIP_STD


@dataclass(frozen=True)
class _Flip:
    axis: str          # "h" | "v"
    p: float


@dataclass(frozen=True)
class _Crop:
    size: tuple[int, int]
    random: bool


@dataclass(frozen=True)
class _ResizedCrop:
    size: tuple[int, int]
    scale: tuple[float, float]
    ratio: tuple[float, float]
    interpolation: object
    antialias: bool


class DevicePlan:
    """The uint8/loader part and the device part of a torchvision training ``Compose``.

    Built from a :class:`~percept.data.preprocessing.TaskTransform` (or a bare ``Compose``) by
    :meth:`from_transform`; supports exactly the ops the task transforms use and refuses anything else.
    """

    def __init__(self, ops: list, mean: tuple[float, ...], std: tuple[float, ...], pre_resize=None):
        self.ops, self.mean, self.std, self.pre_resize = list(ops), tuple(mean), tuple(std), pre_resize
        self.out_size: tuple[int, int] | None = None
        for op in self.ops:
            if isinstance(op, (_Crop, _ResizedCrop)):
                self.out_size = op.size
        if self.out_size is None:
            raise ValueError("the transform has no crop: its outputs would not share one size")

    @classmethod
    def from_transform(cls, transform) -> "DevicePlan":
        pre_resize = getattr(transform, "pre_resize", None)
        if not getattr(transform, "train", True):
            raise ValueError("a test transform (e.g. the IQA 15-crop one) is not a training transform")
        post = getattr(transform, "post", transform)
        steps = post.transforms if isinstance(post, T.Compose) else [post]
        ops, mean, std, seen_tensor = [], None, None, False
        for step in steps:
            if seen_tensor and not isinstance(step, (T.ToTensor, T.Normalize)):
                raise NotImplementedError(f"{type(step).__name__} after ToTensor is not supported")
            if isinstance(step, T.RandomHorizontalFlip):
                ops.append(_Flip("h", float(step.p)))
            elif isinstance(step, T.RandomVerticalFlip):
                ops.append(_Flip("v", float(step.p)))
            elif isinstance(step, T.RandomCrop):
                if step.padding is not None or step.pad_if_needed:
                    raise NotImplementedError("RandomCrop with padding is not supported on the device path")
                ops.append(_Crop(tuple(step.size), random=True))
            elif isinstance(step, T.CenterCrop):
                ops.append(_Crop(tuple(step.size), random=False))
            elif isinstance(step, T.RandomResizedCrop):
                if any(isinstance(o, _Flip) for o in ops):
                    raise NotImplementedError("a flip before RandomResizedCrop is not supported (resampling "
                                              "does not commute with flips bit-exactly)")
                ops.append(_ResizedCrop(tuple(step.size), tuple(step.scale), tuple(step.ratio),
                                        step.interpolation, bool(step.antialias)))
            elif isinstance(step, T.ToTensor):
                seen_tensor = True
            elif isinstance(step, T.Normalize):
                if not seen_tensor:
                    raise ValueError("Normalize before ToTensor")
                mean, std = tuple(float(v) for v in step.mean), tuple(float(v) for v in step.std)
            else:
                raise NotImplementedError(f"{type(step).__name__} is not supported by the device path")
        if not seen_tensor:
            raise ValueError("the transform has no ToTensor")
        return cls(ops, mean or (0.0, 0.0, 0.0), std or (1.0, 1.0, 1.0), pre_resize)

    # -- loader side ------------------------------------------------------------------------------
    def crop(self, pixels: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """``(H, W, 3)`` uint8 pixels (already pre-resized) → ``(h, w, 3)`` uint8 crop, hflip, vflip.

        Draws random numbers from the global torch generator exactly as the torchvision ``Compose``."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 pixels; got {pixels.shape} {pixels.dtype}")
        hflip = vflip = False
        for op in self.ops:
            height, width = pixels.shape[:2]
            if isinstance(op, _Flip):
                flip = bool(torch.rand(1) < op.p)          # as RandomHorizontalFlip/RandomVerticalFlip.forward
                if op.axis == "h":
                    hflip ^= flip
                else:
                    vflip ^= flip
            elif isinstance(op, _Crop):
                th, tw = op.size
                if op.random:
                    top, left, _, _ = T.RandomCrop.get_params(_shape_proxy(height, width), (th, tw))
                else:
                    if th > height or tw > width:
                        raise ValueError(f"centre crop {op.size} is larger than the image ({height}x{width})")
                    top, left = int(round((height - th) / 2.0)), int(round((width - tw) / 2.0))
                # (top, left) are in the (virtually) flipped image: mirror the box into the stored one
                if vflip:
                    top = height - top - th
                if hflip:
                    left = width - left - tw
                pixels = pixels[top:top + th, left:left + tw]
            else:   # _ResizedCrop (no pending flips, checked in from_transform)
                i, j, h, w = T.RandomResizedCrop.get_params(_shape_proxy(height, width), list(op.scale),
                                                            list(op.ratio))
                image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
                image = TF.resized_crop(image, i, j, h, w, list(op.size), op.interpolation, antialias=op.antialias)
                pixels = np.asarray(image)
        return np.array(pixels, dtype=np.uint8, order="C", copy=True), hflip, vflip   # writable, owned

    def __repr__(self) -> str:
        return f"DevicePlan(ops={self.ops}, mean={self.mean}, std={self.std})"


def _shape_proxy(height: int, width: int) -> torch.Tensor:
    """A zero-memory tensor of shape (3, H, W): what torchvision's ``get_params`` needs to read a size."""
    return torch.empty(1, 1, 1).expand(3, height, width)


# -------------------------------------------------------------------------------------- device side
_CONSTANTS: dict = {}


def _mean_std(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (tuple(mean), tuple(std), str(device))
    if key not in _CONSTANTS:
        # as torchvision's F.normalize: float32 tensors of the Python floats, shaped (C, 1, 1)
        _CONSTANTS[key] = (torch.as_tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1),
                           torch.as_tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1))
    return _CONSTANTS[key]


def normalize_on_device(images: torch.Tensor, hflip=None, vflip=None, *, device=None, mean=CLIP_MEAN,
                        std=CLIP_STD, channels_last: bool = False, non_blocking: bool = True) -> torch.Tensor:
    """uint8 crops → normalised float32 ``(B, 3, H, W)`` on ``device`` (``mean``/``std``: the backbone's;
    default CLIP's — a :class:`DevicePlan` carries its transform's).

    ``images``: ``(B, H, W, 3)`` (the loader's layout) or ``(B, 3, H, W)`` uint8. ``hflip``/``vflip``:
    ``(B,)`` bools (None = no flips). Computes ``(x / 255 - mean) / std`` with the operations and order of
    torchvision's ``ToTensor`` + ``Normalize``, so results are identical. ``channels_last=True`` returns
    a channels-last tensor (free when the input is HWC: the permute *is* that layout).
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected a (B, H, W, 3) or (B, 3, H, W) uint8 batch; got {tuple(images.shape)} "
                         f"{images.dtype}")
    device = torch.device(device) if device is not None else images.device
    x = images.to(device, non_blocking=non_blocking)
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)                                   # (B, 3, H, W) with NHWC strides
    for flags, dim in ((hflip, 3), (vflip, 2)):
        if flags is not None:
            flags = torch.as_tensor(flags, dtype=torch.bool).to(device, non_blocking=non_blocking)
            x = torch.where(flags.view(-1, 1, 1, 1), x.flip(dim), x)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    m, s = _mean_std(mean, std, device)
    return x.to(torch.float32).div(255).sub(m).div(s)


class DeviceAugmentDataset(Dataset):
    """A training :class:`~percept.data.dataset.ManifestDataset` whose items are uint8 crops + flips.

    Item ``i`` is ``{"image": (h, w, 3) uint8 tensor, "hflip": bool, "vflip": bool, "label", "index",
    "id"}``; collate with :func:`percept.engine.evaluate.collate` (or the default collate) and finish on the
    device with :meth:`to_device` (:func:`normalize_on_device`). Pixels come from the dataset's image
    cache when it has one (a memmap slice, no decoding), else from the file through the transform's
    pre-resize stage. For the same seed, ``to_device(collate([ds[i] ...]))`` equals
    ``stack([manifest_dataset[i]["image"] ...])``.
    """

    def __init__(self, dataset, plan: DevicePlan | None = None):
        self.dataset = dataset
        self.plan = plan or DevicePlan.from_transform(dataset.transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def pixels(self, row: int) -> np.ndarray:
        ds = self.dataset
        if ds.cache is not None:
            return ds.cache.get_array(ds.ids[row])                 # read-only memmap view, already resized
        image = ds.load_image(row)
        if self.plan.pre_resize is not None:
            image = self.plan.pre_resize(image)
        return np.asarray(image, dtype=np.uint8)

    def __getitem__(self, i: int) -> dict:
        ds = self.dataset
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        row = int(i) % ds.n_rows
        crop, hflip, vflip = self.plan.crop(self.pixels(row))
        dtype = torch.int64 if ds._labels.dtype == np.int64 else torch.float32   # as the dataset's own items
        return {"image": torch.from_numpy(crop), "hflip": hflip, "vflip": vflip,
                "label": torch.tensor(ds._labels[row], dtype=dtype),
                "index": int(ds.rows[row]), "id": ds.ids[row]}

    def to_device(self, batch: dict, device, channels_last: bool = False) -> torch.Tensor:
        """The normalised float32 images of a collated batch, on ``device``."""
        return normalize_on_device(batch["image"], batch["hflip"], batch["vflip"], device=device,
                                   mean=self.plan.mean, std=self.plan.std, channels_last=channels_last)
