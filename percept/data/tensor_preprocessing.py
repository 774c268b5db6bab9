"""The test transforms of :mod:`percept.data.preprocessing` on tensors: the same resize, crops and normalisation
on a batch ``(B, 3, H, W)`` in torch, for images that arrive as tensors (:func:`percept.create_metric`, differentiable
as a loss) and for ``percept predict --fast-resize`` (8-bit kernels on the decoded pixels)."""
from __future__ import annotations

import torch
from torchvision import transforms as T
from torchvision.transforms import functional as TF
from torchvision.transforms.v2 import functional as TF2

from ..core.images import check_size
from .preprocessing import (
    _TV_MODES,
    ResizeSpec,
    TaskTransform,
    _IQATestCrops,
    iqa_crop_positions,
)


def resize_tensor(spec: ResizeSpec, images: torch.Tensor) -> torch.Tensor:
    """:class:`ResizeSpec` on images ``(..., 3, H, W)``: the same target size, torchvision's antialiased tensor
    resize. Float images in [0, 1] (differentiable) are clamped to [0, 1] as PIL's result is; close to PIL's, not
    equal: PIL rounds to 8 bits, and its bicubic kernel has a = -0.5 where torch's has a = -0.75 (on noise, 99 % of
    the pixels within 0.1 normalised units, the mean difference 0.005; bilinear agrees more closely). ``uint8``
    images take torch's 8-bit antialiased kernels (PIL's filters, a = -0.5, rounded to 8 bits): within one grey
    level of PIL's resize, ~5x faster (``percept predict --fast-resize``)."""
    height, width = images.shape[-2:]
    target, sized = spec.target_hw(height, width), spec._size_hw(height, width)
    check_size(target[1], target[0], f"the {width}x{height} image resized")
    if target == (height, width):
        return images
    if sized != (height, width):
        images = _resize(images, sized, spec.interpolation)
    if target != sized:
        images = _resize(images, target, spec.min_side_interpolation)
    return images


def _resize(images: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    if images.dtype == torch.uint8:       # transforms.v2 has the 8-bit kernels (v1 resizes in float: ~8x slower)
        return TF2.resize(images, list(size), _TV_MODES[interpolation], antialias=True)
    return TF.resize(images, list(size), _TV_MODES[interpolation], antialias=True).clamp(0, 1)


class TensorTestTransform:
    """A test transform (:func:`build_transform` with ``train=False``, or :func:`center_crop_transform`) applied
    to a batch of RGB images ``(B, 3, H, W)``: ``(B, views, 3, size, size)``. The same steps as the PIL path:
    resize (:func:`resize_tensor`), the IQA test crops at :func:`iqa_crop_positions` (by size) or the centre
    crop, normalisation.

    Float images in [0, 1] are differentiable with respect to the input (:func:`percept.create_metric`'s
    ``as_loss``). ``uint8`` images (0..255, as decoded) are resized and cropped in 8 bits, then scaled to [0, 1]
    and normalised: PIL's pipeline to within one grey level of the resize (``percept predict --fast-resize``)."""

    def __init__(self, transform):
        if isinstance(transform, TaskTransform):
            if transform.train:
                raise ValueError("only test transforms have a tensor form (training augmentation is random)")
            self.pre_resize, post = transform.pre_resize, transform.post
        elif isinstance(transform, T.Compose):
            self.pre_resize, post = None, transform
        else:
            raise TypeError(f"no tensor form for {transform!r}")
        self.crops = post if isinstance(post, _IQATestCrops) else None
        # torchvision's Resize / CenterCrop / Normalize take tensors as they are; ToTensor is the PIL-only step
        self.steps = None if self.crops else [t for t in post.transforms if not isinstance(t, T.ToTensor)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.pre_resize is not None:
            images = resize_tensor(self.pre_resize, images)
        if self.crops is None:
            for step in self.steps:
                if isinstance(step, T.Resize):      # the official transform: shorter side to step.size
                    size = step.size if isinstance(step.size, int) else tuple(step.size)
                    size = size[0] if isinstance(size, tuple) and len(size) == 1 else size
                    images = resize_tensor(ResizeSpec(size, interpolation=step.interpolation.value), images)
                else:
                    images = step(_as_unit_float(images) if isinstance(step, T.Normalize) else images)
            return images.unsqueeze(1)
        c = self.crops
        images = resize_tensor(ResizeSpec(None, c.size, c.interpolation), images)
        images = TF.normalize(_as_unit_float(images), list(c.mean), list(c.std))
        positions = iqa_crop_positions(images.shape[-2], images.shape[-1], c.n_crops, c.size, c.seed)
        return torch.stack([images[..., t:t + c.size, l:l + c.size] for t, l in positions], dim=1)


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images as float in [0, 1] (ToTensor's scaling); float images unchanged."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images
