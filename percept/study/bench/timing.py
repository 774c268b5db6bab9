"""The measuring harness of ``percept bench``: timed loops (CUDA events on GPU), peak memory, a cycling
sampler, one optimisation step, and :func:`measure`, which records a measurement or its error."""
from __future__ import annotations

import gc
import math
import time
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ...engine.evaluate import collate
from ...engine.runtime import autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loop(step: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones (GPU: CUDA events)."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    if device.type == "cuda":   # GPU memory of the previous measurement must not count in the next one's peak
        gc.collect()
        torch.cuda.empty_cache()


class CyclingSampler(Sampler):
    """``total`` indices: successive random permutations of ``range(n)`` (no epoch boundary to stall on)."""

    def __init__(self, n: int, total: int, seed: int = 0):
        self.n, self.total, self.seed = int(n), int(total), seed

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        order = np.concatenate([rng.permutation(self.n) for _ in range(-(-self.total // self.n))])
        return iter(order[:self.total].tolist())

    def __len__(self) -> int:
        return self.total


def train_step(model, optimizer, loss_fn, x, y, device, precision: str) -> torch.Tensor:
    """One optimisation step; returns the detached loss (no host sync)."""
    with autocast(device, precision):
        out = model(x)
    loss = loss_fn(out.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()



def infer(model, x, device, precision):
    with autocast(device, precision):
        return model(x)


def make_loader(dataset, batch_size: int, total_batches: int, workers: int, pin: bool, seed: int,
            fast: bool = True) -> DataLoader:
    kwargs = dict(batch_size=batch_size, sampler=CyclingSampler(len(dataset), total_batches * batch_size, seed),
                  num_workers=workers, drop_last=True)
    if fast:
        kwargs.update(collate_fn=collate, pin_memory=pin)
        if workers > 0:
            kwargs.update(prefetch_factor=4, persistent_workers=False)
    return DataLoader(dataset, **kwargs)


def rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("inf")


def measure(name: str, results: dict, device, log, fn: Callable[[], dict]) -> None:
    """Run one measurement; record its fields or its error (the other measurements go on)."""
    free_memory(device)
    reset_peak(device)
    try:
        record = fn()
    except Exception as err:
        record = {"error": f"{type(err).__name__}: {err}"[:1000]}
        log(f"{name}: FAILED {record['error']}")
    else:
        if device.type == "cuda":
            record["peak_memory_gib"] = round(peak_bytes(device) / 2 ** 30, 3)
        log(f"{name}: {record.get('images_per_s', float('nan')):,.1f} images/s")
    results[name] = record


def rate_of(measurements: dict, name: str) -> float | None:
    """The images/s of measurement ``name``, or None when it failed or is missing."""
    value = measurements.get(name, {}).get("images_per_s")
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None
