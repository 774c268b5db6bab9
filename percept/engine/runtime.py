"""Where and how a run computes: device, precision, DataLoader workers, autocast, ``torch.compile``.

Every engine module (training, evaluation, stage 2, prediction, benchmarks) asks these functions, so a
choice such as "bf16 autocast on GPU, fp32 on CPU" is made in one place:

* :func:`resolve_device` — ``auto`` = the GPU when there is one; precision ``auto`` = bf16 on GPU, fp32 on CPU;
* :func:`resolve_workers` — DataLoader worker processes for a device;
* :func:`autocast` — the autocast context of a precision;
* :func:`cast_frozen_weights` — frozen Linear/Conv weights stored in bf16 (identical results under bf16
  autocast, less memory traffic);
* :func:`compile_or_eager` — ``torch.compile`` when it works, eager otherwise (the reason is recorded).

Device-side augmentation lives in :mod:`percept.engine.gpu_augment`.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext

import torch
from torch import nn


def resolve_device(device: str = "auto", precision: str = "auto") -> tuple[torch.device, str]:
    """``auto``: the GPU when there is one. Precision ``auto``: bf16 autocast on GPU, fp32 on CPU."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return device, precision


def resolve_workers(num_workers: int | None, device: torch.device, processes: int = 1) -> int:
    """DataLoader worker processes; ``None``: 0 on CPU (the tiny models are faster in-process), and on GPU
    the CPU cores shared among the ``processes`` of this machine, at most 16: decoding, cropping and flipping
    224 px images takes about 2 ms per image per core, so a training step of 128 images at GPU speed
    (~0.1 s) needs several cores."""
    if num_workers is not None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        return int(num_workers)
    if device.type != "cuda":
        return 0
    return max(1, min(16, (os.cpu_count() or 1) // max(1, processes)))


# ------------------------------------------------------------------------------------------ batches


def autocast(device: torch.device, precision: str):
    """bf16 autocast when ``precision`` is ``bf16``; plain fp32 otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def cast_frozen_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store the frozen Linear/Conv2d weights (and biases) of ``model`` in ``dtype``; returns how many modules.

    Under ``torch.autocast(dtype=bfloat16)`` these layers compute with bf16 copies of their weights anyway
    (round to nearest), so storing them in bf16 gives identical results while saving the cast kernels of
    every step and half the weight memory. Only for use under autocast; LayerNorms, embeddings and every
    trainable weight (LoRA, heads) stay float32.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.to(dtype)
                count += 1
    return count


def compile_or_eager(module: nn.Module, example: torch.Tensor, *, precision: str = "fp32", backward: bool = True,
                     log=None, backend: str = "inductor") -> tuple[nn.Module, dict]:
    """``torch.compile(module)`` if compiling works, else ``module`` itself; returns it and an info dict
    (``compiled``, ``compile_seconds`` or ``compile_error``). ``backend``: torch.compile's (``aot_eager`` traces the
    same graphs without generating kernels: the GPU check's dry run).

    Compilation is lazy, so it is tried here on ``example`` (a forward, and a backward when the output needs
    gradients) under the given precision; the trial leaves no trace: the RNG state is restored (dropout) and
    the gradients it made are cleared. Switching to eval mode later recompiles once (expected).
    """
    t0 = time.perf_counter()
    devices = [example.device] if example.device.type == "cuda" else []
    try:
        compiled = torch.compile(module, backend=backend)
        with torch.random.fork_rng(devices=devices):
            with autocast(example.device, precision):
                out = compiled(example)
            if backward and out.requires_grad:
                out.float().sum().backward()
        info = {"compiled": True, "compile_seconds": round(time.perf_counter() - t0, 2)}
    except Exception as err:   # no compiler, unsupported op, ...: eager is always correct
        text = str(err).strip()
        reason = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:500]
        compiled, info = module, {"compiled": False, "compile_error": reason}
        if log:
            log(f"torch.compile failed, falling back to eager: {reason}")
    for p in module.parameters():
        p.grad = None
    return compiled, info
