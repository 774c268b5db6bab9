"""GPU fast-path pieces used by training (``percept.train``) and measured by ``percept bench``.

* :func:`cast_frozen_weights` — frozen Linear/Conv weights stored in bf16 (identical results under bf16
  autocast, less memory traffic);
* :func:`compile_or_eager` — ``torch.compile`` when it works, eager otherwise (the reason is recorded).

Device-side augmentation lives in :mod:`percept.gpu_augment`.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from .evaluate import autocast


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
                     log=None) -> tuple[nn.Module, dict]:
    """``torch.compile(module)`` if compiling works, else ``module`` itself; returns it and an info dict
    (``compiled``, ``compile_seconds`` or ``compile_error``).

    Compilation is lazy, so it is tried here on ``example`` (a forward, and a backward when the output needs
    gradients) under the given precision; the trial leaves no trace: the RNG state is restored (dropout) and
    the gradients it made are cleared. Switching to eval mode later recompiles once (expected).
    """
    t0 = time.perf_counter()
    devices = [example.device] if example.device.type == "cuda" else []
    try:
        compiled = torch.compile(module)
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
