"""A reusable scorer in the style of pyiqa's ``create_metric``: ``percept.create_metric(name_or_run)``.

::

    metric = percept.create_metric("perceptclip-iqa")          # or a run directory
    metric("photo.jpg"), metric(["a.jpg", "b.png"]), metric(pil_image), metric(x)   # x: (B, 3, H, W) in [0, 1]
    metric.lower_better, metric.score_range
    loss = percept.create_metric(run_dir, as_loss=True)(x)      # differentiable w.r.t. x

Every input goes through the model's own preprocessing (:func:`percept.predict.load_predictor`): for a run, the
test transform its evaluation uses (IQA: the dataset's LoDa pre-resize and the mean over the 15 test crops,
App. A.1; memorability and emotion: resize + centre crop); for an official checkpoint the release's resize 224 +
centre crop. Files and PIL images take the PIL path, exactly what ``percept predict`` computes (an IQA file's
crops are keyed by its base name; a PIL image without a file name and a tensor use the fixed key ``"image"``);
tensors take :class:`~percept.data.preprocessing.TensorTestTransform`, the same steps in torch, differentiable,
close to the PIL path but not bit-equal where an image is resized (PIL rounds to 8 bits and its bicubic kernel
differs from torch's; scores agree to about 1e-3 in the tests, exactly for an image at the model's size).

Output: regression, one score per image ``(B,)``; classification, class probabilities ``(B, C)`` (the mean of
the crops' softmax, as evaluation) with ``metric.class_names``. With ``as_loss=True`` (pyiqa's convention)
gradients flow to the input and a regression metric returns ``loss_weight * mean score``: minimise its negative
for a higher-is-better score (``lower_better`` is False for every PerceptCLIP score). The model's own weights are
frozen (LoRA merged), so a backward pass computes input gradients only.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .images import load_rgb
from .predict import load_predictor
from .runtime import resolve_device
from .tasks import get_task

# pyiqa-style names of the released checkpoints (percept.official.OFFICIAL_CHECKPOINTS)
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
        net, default_head, kind, classes, transform = load_predictor(model)
        self.head_name = head_name or default_head
        if self.head_name not in net.head_names():
            raise ValueError(f"head {self.head_name!r} is not in {model}; its heads: {', '.join(net.head_names())}")
        from .data.preprocessing import TensorTestTransform
        self.device = resolve_device(device)[0]
        self.net = net.merge_lora().to(self.device).eval().requires_grad_(False)
        self.kind, self.transform, self.tensor_transform = kind, transform, TensorTestTransform(transform)
        self.class_names = list(classes or map(str, range(net.config.heads[self.head_name]))) \
            if kind == "classification" else None
        self.as_loss, self.loss_weight = bool(as_loss), float(loss_weight)
        self.lower_better = False        # quality, memorability: higher = more; probabilities: higher = likelier
        task, label_range = _task_of(model, net)
        self.task = task
        self.score_range = _score_range(label_range, kind, task)
        self.name = str(model)

    def forward(self, images) -> torch.Tensor:
        with torch.set_grad_enabled(self.as_loss and torch.is_grad_enabled()):
            views = self._views(images)                                       # (B, V, 3, h, w)
            b, v = views.shape[:2]
            out = self.net(views.flatten(0, 1).to(self.device), self.head_name).float().reshape(b, v, -1)
            scores = out.softmax(-1).mean(1) if self.kind == "classification" else out[..., 0].mean(1)
        if self.as_loss and self.kind == "regression":
            return self.loss_weight * scores.mean()
        return scores

    def _views(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
                raise ValueError(f"a tensor input must be float RGB (B, 3, H, W) or (3, H, W) with values in "
                                 f"[0, 1]; got {x.dtype} {tuple(images.shape)}")
            if x.numel() and (float(x.detach().min()) < -1e-3 or float(x.detach().max()) > 1 + 1e-3):
                raise ValueError(f"a tensor input must hold values in [0, 1] (not 0-255, not normalised); got "
                                 f"[{float(x.detach().min()):.3g}, {float(x.detach().max()):.3g}]")
            return self.tensor_transform(x.to(self.device))
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
        if not items:
            raise ValueError("no images given")
        return torch.stack([self._pil_views(item) for item in items])

    def _pil_views(self, item) -> torch.Tensor:
        if isinstance(item, Image.Image):
            key, image = Path(getattr(item, "filename", "") or "image").name, item.convert("RGB")
        elif isinstance(item, (str, os.PathLike)):
            key, image = Path(item).name, load_rgb(item)
        else:
            raise TypeError(f"images must be paths, PIL images or a float tensor (B, 3, H, W); got "
                            f"{type(item).__name__}")
        x = self.transform(image, key=key) if getattr(self.transform, "needs_key", False) else self.transform(image)
        return x if x.dim() == 4 else x.unsqueeze(0)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, kind={self.kind!r}, head_name={self.head_name!r}, "
                f"lower_better={self.lower_better}, score_range={self.score_range}, as_loss={self.as_loss}")


def _task_of(model, net) -> tuple[str | None, tuple[float, float] | None]:
    """The task and training-label range of a run directory (its first dataset) or an official checkpoint."""
    path = Path(model)
    if path.is_dir():
        from .data.sources import dataset_facts
        from .runs import RunDir
        _, task, _, label_range = dataset_facts(RunDir(path).read_config()["data"][0])
        return task, label_range
    card = getattr(net, "official", None)
    return (card.task, None) if card is not None else (None, None)


def create_metric(name: str | os.PathLike, device: str = "auto", *, as_loss: bool = False, loss_weight: float = 1.0,
                  head_name: str | None = None) -> PerceptMetric:
    """A :class:`PerceptMetric` for ``name``: ``perceptclip-iqa`` / ``perceptclip-memorability`` /
    ``perceptclip-emotions`` (the released checkpoints; also ``official-…`` or a path to a release ``.pth``) or a
    run directory. ``percept.list_models()`` lists the released ones and whether they are cached offline."""
    source = METRIC_NAMES.get(str(name).lower(), name)
    return PerceptMetric(source, device, as_loss=as_loss, loss_weight=loss_weight, head_name=head_name)
