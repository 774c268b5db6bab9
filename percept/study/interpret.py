"""Attention-head importance and CLS attention maps (paper §6, Figures 4, A.1, A.2).

Head importance (§6): "an image is passed through the model to obtain a baseline prediction. Then the
same image is processed again, but this time the CLS token's attention for the target head is replaced
with a uniform, equal-weighted map ... Repeating this process over many images and averaging the
prediction differences allows us to quantify the importance of each head."

* :func:`head_importance` returns one row per (layer, head): for regression the mean over images of
  ``|ablated - baseline|``; for classification the mean drop of the baseline's predicted class
  probability plus ``flip_rate`` (how often the argmax changes). Only the ablated head's CLS row in
  that one layer is made uniform; every other head and layer is untouched.
* It is fast: the blocks below layer ``l`` run once per batch (their activations do not depend on an
  ablation in layer ``l``) and the ablations of all heads of layer ``l`` run as one batch, the hidden
  states repeated ``H`` times with a per-sample ``(H*B, H)`` mask. :func:`naive_head_importance` is the
  reference (one full forward per head) used by the tests and by ``tools/interpret_cost.py`` (beside the
  package), which times the two.
* :func:`cls_attention_maps` gives the CLS→patch attention of one head for the fine-tuned model, the
  original CLIP (LoRA disabled) and their difference (Figure 4 shows the difference).

Cost, in units of one plain forward pass per image (depth ``L``, ``H`` heads, all layers):
batched ``1 + H (L + 1) / 2``, naive ``1 + L H``. ViT-L/14 (L=24, H=16): 201 vs 385 forwards per
image, i.e. ~1.9x fewer block evaluations (plus larger, more efficient batches); see ``tools/interpret_cost.py``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.tasks import KINDS
from ..data.sources import DataConfig, open_source
from ..model.backbones import normalization


# ----------------------------------------------------------------------------- partial forward
class _Captured(Exception):
    """Stops the forward pass once the wanted hidden states are captured."""


def tokens_before(model, images: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Hidden states entering block ``layer`` (``layer=0``: patch embedding + CLS + positions + pre-norm;
    ``layer=len(blocks)``: the last block's output, before the final norm).

    Taken with a forward pre-hook (public torch API) on ``vit.blocks[layer]`` during timm's own
    ``forward_features``, which stops there: whatever timm does before the blocks (positions, prefix tokens,
    patch dropout, pre-norm) is done by timm itself. LoRA (peft injects it into the q/k/v layers in place) is
    active unless the caller is inside ``model.encoder.disable_adapter()``.
    """
    model.check_images(images)
    vit = model.vit
    if not 0 <= layer <= len(vit.blocks):
        raise ValueError(f"layer {layer} outside the model's blocks 0..{len(vit.blocks)}")
    target = vit.blocks[layer] if layer < len(vit.blocks) else vit.norm
    captured = []

    def grab(module, args):
        captured.append(args[0])
        raise _Captured

    handle = target.register_forward_pre_hook(grab)
    try:
        vit.forward_features(images)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured[0]


def run_blocks(model, x: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
    """Run blocks ``start .. stop-1`` (``stop=None``: to the last block) on hidden states ``x``."""
    blocks = model.vit.blocks
    stop = len(blocks) if stop is None else stop
    if not 0 <= start <= stop <= len(blocks):
        raise ValueError(f"block range [{start}, {stop}) outside the model's {len(blocks)} blocks")
    for block in blocks[start:stop]:
        x = block(x)
    return x


def forward_from(model, x: torch.Tensor, layer: int, head_name: str | None = None) -> torch.Tensor:
    """Head outputs from hidden states ``x`` entering block ``layer``: blocks ``layer..`` → final norm →
    pooling / fc_norm / projection (timm ``forward_head``) → the PerceptCLIP head named ``head_name``.

    ``forward_from(model, tokens_before(model, images, l), l)`` equals ``model(images)`` for every ``l``.
    """
    vit = model.vit
    x = vit.norm(run_blocks(model, x, layer))
    return model._head(head_name)(vit.forward_head(x))


@contextmanager
def inference_mode(model) -> Iterator[None]:
    """Eval mode (no LoRA/head dropout) and no autograd, restoring the training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- inputs
def run_images(config: dict, *, dataset: str | None = None, part: str = "test", ids: Sequence[str] | None = None,
               n: int = 8) -> tuple[torch.Tensor, list, list]:
    """``(images (N, 3, H, W), ids, labels)`` of a run's dataset (``config``: its config.yaml; ``dataset``: one of a
    multi-dataset run's, default its first) and split: ``ids`` in that order, else the part's first ``n``. The run's
    test transform, one crop each (an IQA item's first: what head importance takes), normalised with the run's
    backbone statistics (plot them with ``denormalize=config["model"]["backbone"]``)."""
    data = config["data"][0] if dataset is None else next(d for d in config["data"] if d["dataset"] == dataset)
    source = open_source(DataConfig(**data))
    split = source.group_split(config["split"]) if len(config["data"]) > 1 else config["split"]
    items = source.dataset(split, part, train_transform=False, test_crops=1,
                           normalization=normalization(config["model"]["backbone"]))
    if ids is None:
        picked = [items[i] for i in range(min(n, len(items)))]
    else:
        where = {image_id: k for k, image_id in enumerate(items.ids)}
        picked = [items[where[image_id]] for image_id in ids]
    images = torch.stack([it["image"][0] if it["image"].ndim == 4 else it["image"] for it in picked])
    return images, [it["id"] for it in picked], [it["label"] for it in picked]


def _batches(images, batch_size: int, device) -> Iterator[torch.Tensor]:
    """A (N, 3, H, W) tensor split into chunks, or an iterable of batches (tensors, ``{"image": ...}``
    dicts as yielded by :class:`percept.data.dataset.ManifestDataset` loaders, or ``(images, ...)``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, torch.Tensor):
        images = images.unsqueeze(0) if images.dim() == 3 else images
        items: Iterable = images.split(batch_size)
    else:
        items = images
    for item in items:
        if isinstance(item, dict):
            item = item["image"]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        if isinstance(item, torch.Tensor) and item.dim() == 5:
            raise ValueError(f"got a batch of multi-crop images {tuple(item.shape)}; head importance takes "
                             f"single crops (B, 3, H, W), e.g. the centre crop")
        if isinstance(item, torch.Tensor) and item.dim() == 3:
            item = item.unsqueeze(0)
        if isinstance(item, torch.Tensor) and len(item) > batch_size:
            yield from (chunk.to(device) for chunk in item.split(batch_size))
        elif isinstance(item, torch.Tensor):
            yield item.to(device)
        else:
            raise TypeError(f"images must be a tensor or an iterable of tensor batches; got {type(item).__name__}")


def _check_kind(kind: str | None, outputs: int) -> str:
    if kind is None:
        kind = "regression" if outputs == 1 else "classification"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "classification" and outputs < 2:
        raise ValueError(f"kind='classification' needs a head with >= 2 outputs; this head has {outputs}")
    return kind


def _check_layers(model, layers: Sequence[int] | None) -> list[int]:
    depth = len(model.attention_layers())
    if layers is None:
        return list(range(depth))
    layers = sorted({int(layer) for layer in layers})
    if not layers or layers[0] < 0 or layers[-1] >= depth:
        raise ValueError(f"layers must be non-empty indices in [0, {depth}); got {layers}")
    return layers


def _effects(kind: str, base: torch.Tensor, ablated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image effect and flag for ablated outputs (..., B, K) vs baseline (B, K).

    regression: ``|ablated - base|`` averaged over outputs, flag = signed mean change;
    classification: drop of the baseline class probability, flag = argmax changed.
    """
    if kind == "regression":
        delta = (ablated - base).mean(-1)
        return delta.abs(), delta
    p_base, p_abl = base.softmax(-1), ablated.softmax(-1)
    predicted = p_base.argmax(-1, keepdim=True)
    drop = p_base.gather(-1, predicted).squeeze(-1) - p_abl.gather(
        -1, predicted.expand(*p_abl.shape[:-1], 1)).squeeze(-1)
    flip = (p_abl.argmax(-1) != predicted.squeeze(-1)).to(base.dtype)
    return drop, flip


def _table(kind: str, layers: list[int], effects: np.ndarray, flags: np.ndarray, baseline: np.ndarray) -> pd.DataFrame:
    """effects/flags: (N, len(layers), H) → one row per (layer, head)."""
    n, _, heads = effects.shape
    rows = {"layer": np.repeat(layers, heads), "head": np.tile(np.arange(heads), len(layers)),
            "importance": effects.mean(0).reshape(-1)}
    if kind == "regression":
        rows["mean_delta"] = flags.mean(0).reshape(-1)
    else:
        rows["flip_rate"] = flags.mean(0).reshape(-1)
    rows["n_images"] = np.full(len(rows["layer"]), n)
    table = pd.DataFrame(rows)
    table.attrs.update(kind=kind, layers=layers, per_image=effects, per_image_flag=flags, baseline=baseline)
    return table


# ----------------------------------------------------------------------------- head importance
def head_importance(model, images, *, head_name: str | None = None, kind: str | None = None,
                    layers: Sequence[int] | None = None, batch_size: int = 8) -> pd.DataFrame:
    """Importance of every attention head by uniform-CLS ablation (paper §6).

    ``images``: a normalised (N, 3, H, W) tensor or an iterable of batches. ``kind``: ``"regression"``
    or ``"classification"`` (default: regression for a 1-output head, else classification). ``layers``:
    the layers to probe (default all). Each model call runs ``batch_size * num_heads`` samples.

    Returns columns ``layer, head, importance, mean_delta`` (regression, signed mean change) or
    ``flip_rate`` (classification), ``n_images``; ``df.attrs`` holds ``per_image`` (N, layers, heads)
    effects (see :func:`most_affected_images`), ``baseline`` predictions (N, K), ``kind``, ``layers``.
    """
    layers = _check_layers(model, layers)
    attn = model.attention_layers()
    device = next(model.parameters()).device
    effects, flags, baselines = [], [], []
    with inference_mode(model):
        kind = _check_kind(kind, _outputs(model, head_name))
        for batch in _batches(images, batch_size, device):
            x = tokens_before(model, batch, 0)
            b = len(batch)
            ablated = []
            for layer in range(layers[-1] + 1):
                if layer in layers:
                    h = attn[layer].num_heads
                    mask = torch.eye(h, dtype=torch.bool, device=device).repeat_interleave(b, dim=0)  # row i*B+j: head i
                    with model.uniform_cls_attention({layer: mask}):
                        out = forward_from(model, x.repeat(h, 1, 1), layer, head_name)
                    ablated.append(out.view(h, b, -1))
                x = run_blocks(model, x, layer, layer + 1)
            base = forward_from(model, x, layers[-1] + 1, head_name)
            effect, flag = _effects(kind, base, torch.stack(ablated))       # (layers, H, B)
            effects.append(effect.permute(2, 0, 1).float().cpu())
            flags.append(flag.permute(2, 0, 1).float().cpu())
            baselines.append(base.float().cpu())
    if not effects:
        raise ValueError("images is empty")
    return _table(kind, layers, torch.cat(effects).numpy(), torch.cat(flags).numpy(), torch.cat(baselines).numpy())


def _outputs(model, head_name: str | None) -> int:
    with torch.no_grad():
        return int(model._head(head_name)(torch.zeros(1, model.embed_dim, device=next(model.parameters()).device)).shape[-1])


def naive_head_importance(model, images, *, head_name: str | None = None, kind: str | None = None,
                          layers: Sequence[int] | None = None, batch_size: int = 8) -> pd.DataFrame:
    """Reference implementation: one full forward per (layer, head) with ``model.uniform_cls_attention``.
    Same output as :func:`head_importance` (to float rounding), ~``1 + L H`` forwards per image."""
    layers = _check_layers(model, layers)
    attn = model.attention_layers()
    device = next(model.parameters()).device
    effects, flags, baselines = [], [], []
    with inference_mode(model):
        kind = _check_kind(kind, _outputs(model, head_name))
        for batch in _batches(images, batch_size, device):
            base = model(batch, head_name=head_name)
            ablated = []
            for layer in layers:
                per_head = []
                for h in range(attn[layer].num_heads):
                    with model.uniform_cls_attention({layer: [h]}):
                        per_head.append(model(batch, head_name=head_name))
                ablated.append(torch.stack(per_head))
            effect, flag = _effects(kind, base, torch.stack(ablated))
            effects.append(effect.permute(2, 0, 1).float().cpu())
            flags.append(flag.permute(2, 0, 1).float().cpu())
            baselines.append(base.float().cpu())
    if not effects:
        raise ValueError("images is empty")
    return _table(kind, layers, torch.cat(effects).numpy(), torch.cat(flags).numpy(), torch.cat(baselines).numpy())


def importance_matrix(table: pd.DataFrame, value: str = "importance") -> np.ndarray:
    """(layers × heads) array of ``value`` from a :func:`head_importance` table (rows in layer order)."""
    missing = {"layer", "head", value} - set(table.columns)
    if missing:
        raise ValueError(f"importance table lacks columns {sorted(missing)}")
    return table.pivot(index="layer", columns="head", values=value).sort_index().to_numpy()


def top_heads(table: pd.DataFrame, k: int = 5, value: str = "importance") -> pd.DataFrame:
    """The ``k`` most important heads, most important first (ties: lower layer, then lower head)."""
    ordered = table.sort_values([value, "layer", "head"], ascending=[False, True, True], kind="mergesort")
    top = ordered.head(k).reset_index(drop=True)
    top.attrs = {}   # a summary: the per-image arrays stay with the full table (and would break pd.concat)
    return top


def importance_contrast(table: pd.DataFrame, value: str = "importance") -> float:
    """How much the most important head stands out: its importance over the median head's (absolute values;
    ``inf`` when the median head has no effect). About 1 when every head matters alike (no structure)."""
    magnitude = table[value].abs()
    median = float(magnitude.median())
    return float(magnitude.max()) / median if median > 0 else float("inf")


def most_affected_images(table: pd.DataFrame, layer: int, head: int, n: int = 5) -> np.ndarray:
    """Indices of the ``n`` images whose prediction the ablation of (layer, head) changed most —
    the images the paper shows for the most influential heads (§6, Figure 4)."""
    per_image = table.attrs.get("per_image")
    if per_image is None:
        raise ValueError("table has no per-image effects (attrs['per_image']); use a head_importance table")
    column = per_image[:, list(table.attrs["layers"]).index(layer), head]
    return np.argsort(-column, kind="stable")[:n]


# ----------------------------------------------------------------------------- attention maps
def _cls_patch_attention(model, images: torch.Tensor, layer: int, head: int | None) -> torch.Tensor:
    """CLS→patch attention of one head (``None``: mean over heads) of ``layer``, (B, gh, gw)."""
    attn = model.attention_layers()[layer]
    x = tokens_before(model, images, layer)
    attn.record_attention = True
    try:
        model.vit.blocks[layer](x)
        maps = attn.attention_map
    finally:
        attn.record_attention = False
        attn.attention_map = None
    vit = model.vit
    row = maps[:, :, 0, vit.num_prefix_tokens:]                           # (B, heads, patches)
    row = row.mean(1) if head is None else row[:, head]
    return row.reshape(len(images), *vit.patch_embed.grid_size)


def cls_attention_maps(model, images: torch.Tensor, layer: int, head: int | None = None,
                       original=None) -> dict:
    """CLS→patch attention grids (B, gh, gw) of head ``head`` in ``layer`` (paper §6, Figures 4, A.1, A.2).

    Returns ``{"finetuned", "original", "difference" (= finetuned - original), "layer", "head"}`` as
    numpy arrays. The original is the same model with LoRA disabled (``model.encoder.disable_adapter()``:
    the pretrained CLIP encoder); for a model without LoRA (frozen/full/merged) pass ``original=``
    another PerceptCLIP holding the pretrained encoder.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images.unsqueeze(0)
    images = images.to(next(model.parameters()).device)
    with inference_mode(model):
        finetuned = _cls_patch_attention(model, images, layer, head)
        if original is not None:
            with inference_mode(original):
                before = _cls_patch_attention(original, images.to(next(original.parameters()).device), layer, head)
        elif model.has_lora:
            with model.encoder.disable_adapter():
                before = _cls_patch_attention(model, images, layer, head)
        else:
            raise ValueError(f"this model has no LoRA adapter to disable (strategy {model.config.strategy!r}); "
                             f"pass original=<PerceptCLIP with the pretrained encoder>")
    finetuned, before = finetuned.float().cpu().numpy(), before.float().cpu().numpy()
    return {"finetuned": finetuned, "original": before, "difference": finetuned - before,
            "layer": layer, "head": head}


def top_head_attention(model, images: torch.Tensor, table: pd.DataFrame, k: int = 3, n_images: int = 2,
                       value: str = "importance", original=None) -> list[dict]:
    """The gallery of Figures 4, A.1, A.2: for each of the ``k`` most important heads of ``table`` (a
    :func:`head_importance` table of the same ``images``), the ``n_images`` images whose prediction its
    ablation changed most, with that head's CLS attention maps (:func:`cls_attention_maps`, one image each).
    Returns one dict per row, most important head first: ``layer, head, importance, image_index, effect,
    finetuned, original, difference``."""
    per_image = table.attrs.get("per_image")
    if per_image is None:
        raise ValueError("table has no per-image effects (attrs['per_image']); use a head_importance table")
    if per_image.shape[0] != len(images):
        raise ValueError(f"the importance table was computed on {per_image.shape[0]} images, not these "
                         f"{len(images)}; pass the images given to head_importance")
    layers = list(table.attrs["layers"])
    rows = []
    for _, top in top_heads(table, k=k, value=value).iterrows():
        layer, head = int(top["layer"]), int(top["head"])
        picked = most_affected_images(table, layer, head, n=n_images)
        maps = cls_attention_maps(model, images[torch.as_tensor(picked)], layer=layer, head=head, original=original)
        for j, index in enumerate(picked):
            rows.append({"layer": layer, "head": head, "importance": float(top[value]), "image_index": int(index),
                         "effect": float(per_image[index, layers.index(layer), head]),
                         **{name: maps[name][j] for name in ("finetuned", "original", "difference")}})
    return rows
