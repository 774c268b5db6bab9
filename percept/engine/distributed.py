"""One run on several GPUs with ``torchrun`` (DDP), computing what a single process would compute.

``torchrun --nproc_per_node 8 -m percept train ...`` starts one process per GPU. Every process draws the
same global batches (same seed) and takes every ``world``-th item of each (:func:`shard`). The encoder
is wrapped in ``DistributedDataParallel``; the embeddings of the whole global batch are gathered
with an autograd-aware all-gather (:func:`gather_rows`), and every process computes the heads and the
loss on the *whole* batch. That matters for the PLCC loss, a correlation over the batch: a per-GPU
PLCC averaged over GPUs would be a different loss. Gradients are exact: the all-gather's backward
sums ``world`` identical contributions per embedding and DDP divides by ``world``.

Evaluation shards the images, not the crops: each process predicts ``dataset[rank::world]`` (all
15 crops of an image stay in one process), and :func:`gather_objects` reassembles every image exactly
once, in dataset order, on every process. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed() -> DistContext:
    """The ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); a single process otherwise.
    Initialises the process group (NCCL on GPU, gloo on CPU) on first call."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch_dist.init_process_group(backend)
    return DistContext(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shard(items: list, ctx: DistContext) -> list:
    """This process's share of a global batch (every ``world``-th item)."""
    return items[ctx.rank::ctx.world] if ctx.enabled else items


def gather_rows(x: torch.Tensor, ctx: DistContext, differentiable: bool = True) -> torch.Tensor:
    """Concatenate every process's rows of ``x`` (rank order). Shards may differ in length by one:
    they are padded for the collective and the padding is removed."""
    if not ctx.enabled:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world)]
    torch_dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = torch.cat([x, x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))]) if x.shape[0] < max(sizes) else x
    if differentiable:
        from torch.distributed.nn.functional import all_gather  # only under torchrun
        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(ctx.world)]
        torch_dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def gather_objects(obj, ctx: DistContext) -> list:
    """Every process's ``obj`` (picklable), in rank order."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world
    torch_dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        torch_dist.barrier()


def gather_global_batch(embedding: torch.Tensor, y: torch.Tensor, which: torch.Tensor, ctx: DistContext):
    """The whole global batch on every process: the embeddings (differentiable), labels and dataset indices.
    Labels travel as float32 on every process: a shard of class indices alone is int64, one with regression labels
    float32 (a mixed-task run), and the collective needs one dtype everywhere (indices < 2^24 are exact)."""
    which = gather_rows(which.to(embedding.device), ctx, differentiable=False).cpu()
    return gather_rows(embedding, ctx), gather_rows(y.float(), ctx, differentiable=False), which


@contextmanager
def same_head_dropout(ctx: DistContext, device: torch.device, seed: int):
    """Under torchrun every process runs the heads on the same global batch: their dropout must draw the same masks
    everywhere (the heads are not DDP-synchronised), hence one seed per step, drawn in a forked RNG so that the
    processes' own streams (augmentation) go on untouched. A single process: nothing to do."""
    if not ctx.enabled:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
