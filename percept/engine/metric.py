"""A reusable scorer in the style of pyiqa's ``create_metric``: ``percept.create_metric(name_or_run)``.

::

    metric = percept.create_metric("perceptclip-iqa")          # or a run directory
    metric("photo.jpg"), metric(["a.jpg", "b.png"]), metric(pil_image), metric(x)   # x: (B, 3, H, W) in [0, 1]
    metric.lower_better, metric.score_range
    loss = percept.create_metric(run_dir, as_loss=True)(x)      # differentiable w.r.t. x

Every input goes through the model's own preprocessing (:func:`percept.engine.predict.load_predictor`): for a run or an
export of one (hub folder, merged file), the test transform its evaluation uses (IQA: the dataset's LoDa
pre-resize and the mean over the run's test crops, placed by the image's size alone, App. A.1; memorability and
emotion: resize + centre crop); for an official checkpoint the release's resize 224 + centre crop.

Same pixels, same score: files and PIL images take the PIL path, exactly what ``percept predict`` computes; a
tensor whose values are 8-bit levels (``k / 255``, what ``to_tensor`` of a decoded image gives) takes the same PIL
path, so it scores exactly as its file. Any other tensor, and every tensor when gradients are needed
(``as_loss``), takes :class:`~percept.data.tensor_preprocessing.TensorTestTransform`: the same steps in torch,
differentiable, equal where no resize is needed, close but not bit-equal where the image is resized (PIL rounds
to 8 bits and its bicubic kernel has a = -0.5, torch's a = -0.75; docs/deviations.md, row 22, gives the measured gap).

Output: regression, one score per image ``(B,)``; classification, class probabilities ``(B, C)`` (the mean of
the crops' softmax, as evaluation) with ``metric.class_names``. With ``as_loss=True`` (pyiqa's convention)
gradients flow to the input and a regression metric returns ``loss_weight * mean score``: minimise its negative
for a higher-is-better score (``lower_better`` is False for every PerceptCLIP score). The model's own weights are
frozen (LoRA merged), so a backward pass computes input gradients only.
"""
from __future__ import annotations

import os

import torch
from PIL import Image
from torch import nn

from ..core.images import check_size, load_rgb, to_rgb
from ..core.tasks import get_task
from ..data.tensor_preprocessing import TensorTestTransform
from .predict import NON_FINITE, load_predictor
from .runtime import resolve_device

# pyiqa-style names of the released checkpoints (percept.model.official.OFFICIAL_CHECKPOINTS)
METRIC_NAMES = {"perceptclip-iqa": "official-iqa", "perceptclip-memorability": "official-memorability",
                "perceptclip-emotions": "official-emotions"}


def _score_range(label_range, kind: str, task: str | None) -> tuple[float, float] | None:
    """What the score can take: probabilities for a classifier; a dataset's label range for a run trained with
    a scale-preserving loss; None (no fixed scale) for a correlation-trained (PLCC) IQA score."""
    if kind == "classification":
        return (0.0, 1.0)
    if task is None or label_range is None or get_task(task).loss == "plcc":
        return None
    return tuple(label_range)


class PerceptMetric(nn.Module):
    """A scorer: ``metric(images)`` → scores ``(B,)`` or class probabilities ``(B, C)``; see the module docstring."""

    def __init__(self, model: str | os.PathLike, device: str = "auto", *, as_loss: bool = False,
                 loss_weight: float = 1.0, head_name: str | None = None):
        super().__init__()
        predictor = load_predictor(model, head_name)
        self.head_name, self.device = predictor.head_name, resolve_device(device)[0]
        self.net = predictor.model.merge_lora().to(self.device).eval().requires_grad_(False)
        self.kind, self.transform = predictor.kind, predictor.transform
        self.tensor_transform = TensorTestTransform(predictor.transform)
        self.class_names = predictor.class_names if predictor.kind == "classification" else None
        self.as_loss, self.loss_weight = bool(as_loss), float(loss_weight)
        self.lower_better = False        # quality, memorability: higher = more; probabilities: higher = likelier
        self.task = predictor.task
        self.score_range = _score_range(predictor.label_range, predictor.kind, predictor.task)
        self.notice = predictor.notice   # '' or what to know beside its scores (a demo model)
        self.name = str(model)

    def forward(self, images) -> torch.Tensor:
        with torch.set_grad_enabled(self.as_loss and torch.is_grad_enabled()):
            differentiable = torch.is_grad_enabled() and isinstance(images, torch.Tensor) and images.requires_grad
            views = self._views(images, differentiable)                       # (B, V, 3, h, w)
            b, v = views.shape[:2]
            out = self.net(views.flatten(0, 1).to(self.device), self.head_name).float().reshape(b, v, -1)
            bad = (~torch.isfinite(out.detach()).flatten(1).all(1)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(f"{self.name}: the score of image(s) {bad} (positions in the batch) is not finite; "
                                 f"{NON_FINITE.split(': ', 1)[1]}")
            scores = out.softmax(-1).mean(1) if self.kind == "classification" else out[..., 0].mean(1)
        if self.as_loss and self.kind == "regression":
            return self.loss_weight * scores.mean()
        return scores

    def _views(self, images, differentiable: bool = False) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
                raise ValueError(f"a tensor input must be float RGB (B, 3, H, W) or (3, H, W) with values in "
                                 f"[0, 1]; got {x.dtype} {tuple(images.shape)}")
            if x.numel() and (float(x.detach().min()) < -1e-3 or float(x.detach().max()) > 1 + 1e-3):
                raise ValueError(f"a tensor input must hold values in [0, 1] (not 0-255, not normalised); got "
                                 f"[{float(x.detach().min()):.3g}, {float(x.detach().max()):.3g}]")
            check_size(x.shape[-1], x.shape[-2], f"the tensor of {x.shape[-1]}x{x.shape[-2]} pixels")
            if not differentiable and _eight_bit(x):          # a decoded image: exactly its file's PIL path
                pixels = (x.detach().cpu().float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                return torch.stack([self._pil_views(Image.fromarray(image)) for image in pixels])
            return self.tensor_transform(x.to(self.device))
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
        if not items:
            raise ValueError("no images given")
        return torch.stack([self._pil_views(item) for item in items])

    def _pil_views(self, item) -> torch.Tensor:
        if isinstance(item, Image.Image):
            image = to_rgb(item)                      # as load_rgb converts its file: EXIF, alpha, 16-bit
        elif isinstance(item, (str, os.PathLike)):
            image = load_rgb(item)
        else:
            raise TypeError(f"images must be paths, PIL images or a float tensor (B, 3, H, W); got "
                            f"{type(item).__name__}")
        x = self.transform(image)
        return x if x.dim() == 4 else x.unsqueeze(0)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, kind={self.kind!r}, head_name={self.head_name!r}, "
                f"lower_better={self.lower_better}, score_range={self.score_range}, as_loss={self.as_loss}")


def _eight_bit(x: torch.Tensor) -> bool:
    """True when every value of ``x`` (in [0, 1]) is an 8-bit level k/255, as ``to_tensor`` of a decoded image."""
    levels = x.detach().float() * 255
    return bool(((levels - levels.round()).abs() <= 1e-3).all())


def create_metric(name: str | os.PathLike, device: str = "auto", *, as_loss: bool = False, loss_weight: float = 1.0,
                  head_name: str | None = None) -> PerceptMetric:
    """A :class:`PerceptMetric` for ``name``: ``perceptclip-iqa`` / ``perceptclip-memorability`` /
    ``perceptclip-emotions`` (the released checkpoints; also ``official-…`` or a path to a release ``.pth``) or a
    run directory, hub folder or merged file (``percept export``). ``percept.list_models()`` lists the released ones and whether they are cached offline."""
    source = METRIC_NAMES.get(str(name).lower(), name)
    return PerceptMetric(source, device, as_loss=as_loss, loss_weight=loss_weight, head_name=head_name)
