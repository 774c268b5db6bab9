"""What head importance (:mod:`percept.study.interpret`) costs: block evaluations per image, projected seconds, and
a measurement of the batched against the naive implementation on a given model and device. A research diagnostic,
kept beside the package (not shipped in it)."""
from __future__ import annotations

import time
from typing import Sequence

import torch

from percept.study.interpret import (
    head_importance,
    inference_mode,
    naive_head_importance,
)


def head_importance_cost(depth: int, num_heads: int, layers: Sequence[int] | None = None) -> dict[str, float]:
    """Transformer-block evaluations per image, in units of one plain forward (``depth`` blocks).

    batched: ``depth`` (shared prefix + baseline) ``+ H * sum_l (depth - l)``; naive: ``(1 + n_layers H)
    * depth``. All layers: ``1 + H (L + 1) / 2`` vs ``1 + L H`` forwards (ViT-L/14: 201 vs 385).
    Patch embedding and heads are ignored (small next to the blocks).
    """
    layers = range(depth) if layers is None else layers
    batched = depth + num_heads * sum(depth - layer for layer in layers)
    naive = (1 + len(layers) * num_heads) * depth
    return {"batched": batched / depth, "naive": naive / depth, "ratio": naive / batched}


def estimate_seconds(n_images: int, forward_seconds_per_image: float, depth: int = 24, num_heads: int = 16,
                     layers: Sequence[int] | None = None) -> dict[str, float]:
    """Projected wall time of head importance on ``n_images``: ``n_images * forwards * t_forward``.

    ``forward_seconds_per_image``: one plain ``model(images)`` on the target hardware divided by the
    batch size, measured at the effective batch ``batch_size * num_heads``. Defaults are ViT-L/14
    (L=24, H=16): ``T ≈ 201 · N · t_forward`` batched, ``385 · N · t_forward`` naive.
    """
    cost = head_importance_cost(depth, num_heads, layers)
    return {"batched": n_images * cost["batched"] * forward_seconds_per_image,
            "naive": n_images * cost["naive"] * forward_seconds_per_image}


def time_head_importance(model, images: torch.Tensor, *, head_name: str | None = None, kind: str | None = None,
                         batch_size: int = 8, naive: bool = True) -> dict[str, float]:
    """Measure wall seconds of one plain forward, the batched and (``naive=True``) the naive head
    importance on ``images`` with this model on its current device; returns seconds and speed-up.

    Measured on 2 CPU cores, 16 images, batch 8 (best of 3): ``tiny_clip`` (L=4, H=2) forward 0.055 s,
    batched 0.25 s, naive 0.51 s (1.98x; block count alone predicts 1.5x, the rest is the shared patch
    embedding and larger batches); ``tiny_clip_p16`` (L=2, H=2) 1.32x (1.25x predicted).

    ViT-L/14: use :func:`estimate_seconds` with a measured forward time. Checked on CPU (random
    weights, 2 images): forward 2.8 s/image; layers=[23] took 10.6 s (9.4 s predicted), layers=[20]
    22.4 s (20.7 s predicted). All 24 layers: ``T ≈ 201 · N · t_forward`` (naive ``385 · N · t_forward``).
    """
    def clock(fn) -> float:
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if images.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with inference_mode(model):
        forward = clock(lambda: [model(b, head_name=head_name) for b in images.split(batch_size)])
    result = {"n_images": len(images), "forward_s": forward,
              "batched_s": clock(lambda: head_importance(model, images, head_name=head_name, kind=kind, batch_size=batch_size))}
    if naive:
        result["naive_s"] = clock(lambda: naive_head_importance(model, images, head_name=head_name, kind=kind,
                                                                batch_size=batch_size))
        result["speedup"] = result["naive_s"] / result["batched_s"]
    return result
