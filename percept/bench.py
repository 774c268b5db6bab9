"""``percept bench``: training/inference/data throughput of the fast path and of the official-style
reference path, measured side by side in one process, plus projected wall times for the paper's tables.

What is measured (each for ``steps`` timed iterations after ``warmup`` untimed ones; on GPU with CUDA
events around the timed iterations after a ``synchronize``, on CPU with ``perf_counter``):

``train_synthetic``          fast path on random tensors already on the device: percept model (timm, split
                             q/k/v, SDPA attention, peft LoRA), bf16 autocast on GPU, fused AdamW on GPU,
                             channels-last input, frozen weights pre-cast to bf16 (``frozen_bf16``: the
                             values autocast would compute anyway), optional ``torch.compile`` (a failure
                             falls back to eager and the reason is recorded). No host syncs in the loop.
``train_pipeline``           the same with the real data pipeline of ``percept train`` today: PIL decode +
                             torchvision transforms in DataLoader workers (float32 crops, pinned memory).
``train_cache_gpu_augment``  the same with the fast pipeline: pre-resized uint8 image cache
                             (:mod:`percept.data.cache`), integer crops in the workers, flips + normalisation
                             on the device (:mod:`percept.gpu_augment`, exactly equal to the torchvision path).
``inference``                forward passes at ``eval_batch_size`` (eval mode, inference mode, autocast).
``data_pil`` / ``data_cache_gpu_augment``  the two pipelines alone (batches delivered to the device).
``reference_*``              the official-style model (transformers ``CLIPVisionModel`` + peft, eager
                             attention, fp32, ``torch.optim.AdamW`` defaults): on random tensors and with a
                             plain PIL DataLoader (same dataset, transforms, workers; no pinning). If it runs
                             out of memory at ``batch_size`` its batch is halved until it fits (recorded).

Ratios: ``speedup.train_synthetic`` = fast/reference on random tensors (the model alone);
``speedup.end_to_end`` = ``train_cache_gpu_augment`` / ``reference_pipeline``.

FLOPs: counted analytically from the encoder's sizes (:func:`model_flops`), a multiply-add = 2 FLOPs.
For ViT-L/14 at 224 the linear layers (patch embedding, q/k/v/out projections, MLPs) give 155.5 GFLOP per
image forward; the attention matmuls (QKᵀ and AV) add 6.5 GFLOP (162.0 in all), LoRA 1.2, the projection
and head < 0.01. Training with a frozen base and LoRA ≈ 2× forward, not 3×: backward needs the input
gradient of every layer (≈ 1× forward) but weight gradients only for LoRA and the head; the attention
matmuls need both operand gradients (2×); the patch embedding needs none. ``mfu`` = achieved FLOP/s /
the GPU's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`), when the GPU is in the table.

Projections (:func:`project_tables`): images processed per run = epochs × training items per epoch (images
× train fraction × IQA replicas) + validation every epoch (× 15 crops for IQA) + one final val/test
evaluation, divided by the measured training and inference rates. Grids: IQA (Table 1) 10 splits × 4
learning rates per dataset; LaMem and EmotionROI 5 splits, EmoSet 1 split, × 4 learning rates (the grid
of §3.1, ``percept.sweep.LR_GRID``). Two epoch counts: the cap (40) and an early-stopping "typical" value
(default 20 = a best epoch near 8 + patience 12; an assumption, not a measurement — replace it by the
epochs of real runs). 8 GPUs: runs are independent (``percept sweep`` runs one per GPU), so wall time
= max(total / 8, the longest single run).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from .files import atomic_write_text
from .evaluate import collate
from .losses import get_loss
from .tasks import get_task
from .model import ModelConfig, PerceptCLIP, build_model
from .runtime import autocast, cast_frozen_weights, compile_or_eager, resolve_device, resolve_workers  # noqa: F401

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; first match wins.
PEAK_BF16_TFLOPS = (("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0),
                    ("GH200", 989.0), ("B200", 2250.0), ("L40S", 362.0), ("A100", 312.0))

TARGETS = {   # issue 7: ViT-L/14 LoRA on one H100 at batch 128
    "train_images_per_s": 1300.0, "speedup_end_to_end": 4.0, "inference_images_per_s": 3000.0,
    "data_images_per_s": 2000.0}

IQA_SPLITS, OTHER_SPLITS = 10, {"lamem": 5, "emotionroi": 5, "emoset": 1}
# (train, val, test) fractions of the images: IQA 80/20 with 10% of train held out for validation (§4.1);
# LaMem 45,000 / 3,741 / 10,000 (official); EmoSet 80/5/15 (official); EmotionROI 75/5/20 (§4.3)
FRACTIONS = {"iqa": (0.72, 0.08, 0.20), "lamem": (45000 / 58741, 3741 / 58741, 10000 / 58741),
             "emoset": (0.80, 0.05, 0.15), "emotionroi": (0.75, 0.05, 0.20)}
PAPER_TABLES = {
    "Table 1 (IQA)": ("livec", "koniq10k", "spaq", "flive", "live", "tid2013", "kadid10k"),
    "Memorability (LaMem)": ("lamem",),
    "Emotion (EmoSet, EmotionROI)": ("emoset", "emotionroi"),
}
TEST_CROPS = 15


# -------------------------------------------------------------------------------------------- FLOPs
def model_flops(model: PerceptCLIP) -> dict[str, float]:
    """Analytic FLOPs per image (multiply-add = 2) of ``model``'s forward pass and training step."""
    vit = model.vit
    d, depth = vit.embed_dim, len(vit.blocks)
    n = vit.patch_embed.num_patches + getattr(vit, "num_prefix_tokens", 1)
    mlp = vit.blocks[0].mlp.fc1.out_features
    conv = vit.patch_embed.proj
    patch = 2.0 * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels * vit.patch_embed.num_patches
    linear = depth * 2.0 * n * (4 * d * d + 2 * d * mlp)
    attention = depth * 2.0 * 2.0 * n * n * d
    r = model.config.lora_r if model.has_lora else 0
    lora = depth * 3 * 2.0 * n * 2 * d * r
    proj = 2.0 * d * model.embed_dim if isinstance(getattr(vit, "head", None), nn.Linear) else 0.0
    head = sum(2.0 * m.in_features * m.out_features for h in model.heads.values() for m in h.modules()
               if isinstance(m, nn.Linear))
    forward = patch + linear + attention + lora + proj + head
    strategy = model.config.strategy
    if strategy == "full":
        backward = 2.0 * forward - patch                      # input + weight gradients; image needs none
    elif strategy == "lora":
        backward = linear + 2 * attention + 2 * lora + proj + 2 * head
    else:                                                     # frozen encoder: the head alone
        backward = 2 * head
    return {"forward_linear_layers": patch + linear, "forward_attention_matmuls": attention, "forward_lora": lora,
            "forward": forward, "train_step": forward + backward, "tokens": n}


def peak_bf16_tflops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


# -------------------------------------------------------------------------------------------- timing
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


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _free(device: torch.device) -> None:
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


# -------------------------------------------------------------------------------------------- fast path
def train_step(model, optimizer, loss_fn, x, y, device, precision: str) -> torch.Tensor:
    """One optimisation step; returns the detached loss (no host sync)."""
    with autocast(device, precision):
        out = model(x)
    loss = loss_fn(out.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


# -------------------------------------------------------------------------------------------- data
def _bench_sources(dataset: str, data_root: str | None, max_images: int, log):
    """The training part of split 1 of ``dataset`` (at most ``max_images`` rows) as the three datasets."""
    from .data.sources import DataConfig, open_source
    root = data_root or os.path.join(tempfile.gettempdir(), "percept-bench-synthetic")
    t0 = time.perf_counter()
    source = open_source(DataConfig(dataset, root))
    frame = source.frame
    if "split1" not in frame.columns:
        raise ValueError(f"{dataset} has no split1 column")
    train_rows = frame.index[frame["split1"].fillna("").astype(str) == "train"]
    if len(train_rows) > max_images:
        frame = frame.loc[train_rows[:max_images]]
        source = replace(source, frame=frame.reset_index(drop=True))
    pil = source.dataset(1, "train")
    return source, pil, {"dataset": dataset, "root": str(root), "train_items": len(pil), "train_images": pil.n_rows,
                         "open_seconds": round(time.perf_counter() - t0, 2)}


def _cached_dataset(source, pil, cache_dir: str | None):
    """The same training items from the uint8 image cache, as crops + flips (:mod:`percept.gpu_augment`)."""
    from .data.cache import ImageCache
    from .data.dataset import ManifestDataset
    from .gpu_augment import DeviceAugmentDataset
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "percept-bench-cache")
    t0 = time.perf_counter()
    cache = ImageCache.build(source.root, pil.ids, pil.transform.pre_resize, cache_dir)
    built = time.perf_counter() - t0
    cached = ManifestDataset(source.frame, source.root, pil.split, pil.part, task=pil.task,
                             label_column=pil.label_column, transform=pil.transform, replicas=pil.replicas, cache=cache)
    return DeviceAugmentDataset(cached), {"cache_dir": str(cache_dir), "cache_build_seconds": round(built, 2)}


def _loader(dataset, batch_size: int, total_batches: int, workers: int, pin: bool, seed: int,
            fast: bool = True) -> DataLoader:
    kwargs = dict(batch_size=batch_size, sampler=CyclingSampler(len(dataset), total_batches * batch_size, seed),
                  num_workers=workers, drop_last=True)
    if fast:
        kwargs.update(collate_fn=collate, pin_memory=pin)
        if workers > 0:
            kwargs.update(prefetch_factor=4, persistent_workers=False)
    return DataLoader(dataset, **kwargs)


# -------------------------------------------------------------------------------------------- bench
def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("inf")


def _measure(name: str, results: dict, device, log, fn: Callable[[], dict]) -> None:
    """Run one measurement; record its fields or its error (the other measurements go on)."""
    _free(device)
    _reset_peak(device)
    try:
        record = fn()
    except Exception as err:
        record = {"error": f"{type(err).__name__}: {err}"[:1000]}
        log(f"{name}: FAILED {record['error']}")
    else:
        if device.type == "cuda":
            record["peak_memory_gib"] = round(_peak(device) / 2 ** 30, 3)
        log(f"{name}: {record.get('images_per_s', float('nan')):,.1f} images/s")
    results[name] = record


def benchmark(backbone: str = "tiny_clip", batch_size: int = 32, precision: str = "auto", device: str = "auto",
              steps: int = 20, warmup: int = 5, compile: bool = False, reference: bool = True,
              data_root: str | None = None, *, dataset: str = "synthetic_iqa", eval_batch_size: int | None = None,
              num_workers: int | None = None, channels_last: bool | None = None, frozen_bf16: bool | None = None,
              max_images: int = 2048, cache_dir: str | None = None, typical_epochs: int = 20, seed: int = 0,
              data: bool = True, precision_check_epochs: int = 0, out: str | os.PathLike | None = None,
              log=print) -> dict:
    """Measure the fast and the reference training paths side by side; returns (and writes to ``out``,
    atomically, as JSON) the record described in the module docstring.

    ``backbone``: a percept backbone (random weights: speed does not depend on their values).
    ``precision``/``device``: as ``percept train`` (auto = bf16 on GPU, fp32 on CPU). ``data_root``: the
    dataset folder (default: the embedded synthetic IQA set, generated in a temporary folder);
    ``max_images`` caps the training images used. ``num_workers`` default: :func:`percept.runtime.resolve_workers`.
    ``channels_last`` and ``frozen_bf16`` default to on for GPU bf16. ``data=False`` skips the data-pipeline
    measurements (random tensors only). ``precision_check_epochs`` > 0 adds :func:`compare_precisions`
    (a short fp32 and bf16 training run of ``backbone`` on ``dataset``) as ``precision_check``.
    """
    quiet = log is None
    log = (lambda *a, **k: None) if quiet else log
    device, precision = resolve_device(device, precision)
    cuda = device.type == "cuda"
    if steps < 1 or warmup < 0 or batch_size < 2:
        raise ValueError("need steps >= 1, warmup >= 0 and batch_size >= 2 (the PLCC loss needs two samples)")
    channels_last = cuda if channels_last is None else bool(channels_last)
    frozen_bf16 = (cuda and precision == "bf16") if frozen_bf16 is None else bool(frozen_bf16)
    if frozen_bf16 and precision != "bf16":
        raise ValueError("frozen_bf16 needs precision bf16 (the frozen weights are only cast under autocast)")
    workers = resolve_workers(num_workers, device)
    eval_batch_size = eval_batch_size or (max(256, batch_size) if cuda else batch_size)
    if cuda:
        torch.backends.cudnn.benchmark = True

    settings = {"backbone": backbone, "batch_size": batch_size, "eval_batch_size": eval_batch_size,
                "precision": precision, "device": str(device), "steps": steps, "warmup": warmup, "compile": compile,
                "channels_last": channels_last, "frozen_bf16": frozen_bf16, "num_workers": workers,
                "fused_adamw": cuda, "attention": "torch SDPA (timm split q/k/v)", "seed": seed,
                "weights": "random (throughput does not depend on weight values)",
                "float32_matmul_precision": torch.get_float32_matmul_precision()}
    result: dict = {"format": "percept-bench-v1", "settings": settings, "environment": _environment(device)}
    log(f"percept bench: {backbone}, batch {batch_size}, {precision}, {device} "
        f"({result['environment'].get('gpu') or result['environment']['cpu']})")

    torch.manual_seed(seed)
    model = build_model(backbone=backbone, pretrained=False).to(device)
    counts = model.parameter_counts()
    flops = model_flops(model)
    result["model"] = {"parameters": counts, "flops_per_image": flops,
                       "img_size": list(model.img_size)}
    if frozen_bf16:
        settings["frozen_modules_in_bf16"] = cast_frozen_weights(model, torch.bfloat16)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4, fused=cuda)
    loss_fn = get_loss("plcc")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    h, w = model.img_size
    x = torch.randn(batch_size, 3, h, w, device=device).contiguous(memory_format=memory_format)
    y = torch.rand(batch_size, device=device)
    runner, compile_info = model, {"compiled": False}
    model.train()
    if compile:
        runner, compile_info = compile_or_eager(model, x, precision=precision, log=log)
    settings.update(compile_info)
    measurements: dict = {}
    result["measurements"] = measurements

    def fast_synthetic():
        losses = []
        seconds = time_loop(lambda: losses.append(train_step(runner, optimizer, loss_fn, x, y, device, precision)),
                            steps, warmup, device)
        return {"images_per_s": _rate(steps * batch_size, seconds), "seconds": seconds,
                "ms_per_step": 1000 * seconds / steps, "loss_finite": bool(torch.isfinite(torch.stack(losses)).all())}

    _measure("train_synthetic", measurements, device, log, fast_synthetic)

    source = pil = cached = None
    if data:
        try:
            source, pil, result["data"] = _bench_sources(dataset, data_root, max_images, log)
            cached, info = _cached_dataset(source, pil, cache_dir)
            result["data"].update(info)
        except Exception as err:
            result["data"] = {"error": f"{type(err).__name__}: {err}"[:1000]}
            log(f"data: FAILED {result['data']['error']}")
            source = None
    total = warmup + steps

    if source is not None:
        def data_pil():
            it = iter(_loader(pil, batch_size, total, workers, cuda, seed))
            seconds = time_loop(lambda: next(it)["image"].to(device, non_blocking=True), steps, warmup, device)
            return {"images_per_s": _rate(steps * batch_size, seconds), "seconds": seconds}

        def data_cache():
            it = iter(_loader(cached, batch_size, total, workers, cuda, seed))
            seconds = time_loop(lambda: cached.to_device(next(it), device, channels_last), steps, warmup, device)
            return {"images_per_s": _rate(steps * batch_size, seconds), "seconds": seconds}

        def train_with(dataset_, to_device):
            def run():
                it = iter(_loader(dataset_, batch_size, total, workers, cuda, seed))
                losses = []

                def step():
                    batch = next(it)
                    xb = to_device(batch)
                    yb = batch["label"].to(device, non_blocking=True)
                    losses.append(train_step(runner, optimizer, loss_fn, xb, yb, device, precision))
                seconds = time_loop(step, steps, warmup, device)
                return {"images_per_s": _rate(steps * batch_size, seconds), "seconds": seconds,
                        "ms_per_step": 1000 * seconds / steps,
                        "loss_finite": bool(torch.isfinite(torch.stack(losses)).all())}
            return run

        _measure("data_pil", measurements, device, log, data_pil)
        _measure("data_cache_gpu_augment", measurements, device, log, data_cache)
        _measure("train_pipeline", measurements, device, log, train_with(
            pil, lambda b: b["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)))
        _measure("train_cache_gpu_augment", measurements, device, log, train_with(
            cached, lambda b: cached.to_device(b, device, channels_last)))

    def inference():
        model.eval()
        xe = torch.randn(eval_batch_size, 3, h, w, device=device).contiguous(memory_format=memory_format)
        try:
            with torch.inference_mode():
                seconds = time_loop(lambda: _infer(runner, xe, device, precision), steps, warmup, device)
        finally:
            model.train()
        return {"images_per_s": _rate(steps * eval_batch_size, seconds), "seconds": seconds,
                "batch_size": eval_batch_size}

    _measure("inference", measurements, device, log, inference)
    del runner, model, optimizer, x, y
    _free(device)

    if reference:
        _reference(measurements, backbone, batch_size, steps, warmup, device, pil, workers, seed, log)

    result["speedup"] = _speedups(measurements)
    result["mfu"] = _mfu(measurements, flops, result["environment"].get("gpu"), precision, cuda)
    result["projection"] = project_tables(_get(measurements, "train_cache_gpu_augment") or
                                          _get(measurements, "train_synthetic"),
                                          _get(measurements, "inference"), typical_epochs=typical_epochs)
    result["projection"]["measured_on"] = {"backbone": backbone, "device": result["environment"].get("gpu") or "cpu",
                                           "train_rate_from": "train_cache_gpu_augment" if
                                           _get(measurements, "train_cache_gpu_augment") else "train_synthetic"}
    result["targets"] = _targets(result, backbone, batch_size, cuda)
    if precision_check_epochs > 0:
        try:
            result["precision_check"] = compare_precisions(
                backbone, dataset, data_root, epochs=precision_check_epochs, batch_size=batch_size,
                device=str(device), seed=seed, num_workers=workers)
            log(f"precision check: test differences bf16 - fp32 "
                f"{result['precision_check']['test_differences_bf16_minus_fp32']}")
        except Exception as err:
            result["precision_check"] = {"error": f"{type(err).__name__}: {err}"[:1000]}
    if not quiet:
        log(format_table(result))
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=2, default=_json_default) + "\n")
    return result


def _infer(model, x, device, precision):
    with autocast(device, precision):
        return model(x)


def _reference(measurements: dict, backbone: str, batch_size: int, steps: int, warmup: int, device, pil,
               workers: int, seed: int, log) -> None:
    """The official-style path: transformers CLIP + peft, eager attention, fp32, plain DataLoader."""
    try:
        from .official_reference import build_reference_model
        torch.manual_seed(seed)
        reference = build_reference_model(ModelConfig(backbone=backbone, pretrained=False)).to(device).train()
    except Exception as err:   # transformers missing, non-CLIP backbone
        for name in ("reference_synthetic", "reference_pipeline"):
            measurements[name] = {"error": f"{type(err).__name__}: {err}"[:1000]}
        log(f"reference path skipped: {err}")
        return
    optimizer = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    loss_fn = get_loss("plcc")
    size = reference.arch.img_size
    total = warmup + steps

    def with_oom_fallback(run):
        def measure():
            batch, notes = batch_size, []
            while True:
                try:
                    record = run(batch)
                    break
                except torch.OutOfMemoryError:
                    if batch <= 2:
                        raise
                # outside the except block, so that the failed step's tensors (held by the traceback) are freed
                optimizer.zero_grad(set_to_none=True)
                _free(device)
                notes.append(f"out of memory at batch {batch}")
                batch //= 2
            record["batch_size"] = batch
            if notes:
                record["note"] = "; ".join(notes) + f"; measured at batch {batch}"
            return record
        return measure

    def synthetic(batch):
        xr = torch.randn(batch, 3, size, size, device=device)
        yr = torch.rand(batch, device=device)
        seconds = time_loop(lambda: train_step(reference, optimizer, loss_fn, xr, yr, device, "fp32"),
                            steps, warmup, device)
        return {"images_per_s": _rate(steps * batch, seconds), "seconds": seconds, "ms_per_step": 1000 * seconds / steps}

    def pipeline(batch):
        it = iter(_loader(pil, batch, total, workers, False, seed, fast=False))   # default collate, no pinning

        def step():
            b = next(it)
            train_step(reference, optimizer, loss_fn, b["image"].to(device), b["label"].to(device), device, "fp32")
        seconds = time_loop(step, steps, warmup, device)
        return {"images_per_s": _rate(steps * batch, seconds), "seconds": seconds, "ms_per_step": 1000 * seconds / steps}

    _measure("reference_synthetic", measurements, device, log, with_oom_fallback(synthetic))
    if pil is not None:
        _measure("reference_pipeline", measurements, device, log, with_oom_fallback(pipeline))
    del reference, optimizer
    _free(device)


# -------------------------------------------------------------------------------------------- derived
def _get(measurements: dict, name: str) -> float | None:
    value = measurements.get(name, {}).get("images_per_s")
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None


def _speedups(m: dict) -> dict:
    def ratio(a, b):
        fa, fb = _get(m, a), _get(m, b)
        return fa / fb if fa and fb else None
    return {"train_synthetic": ratio("train_synthetic", "reference_synthetic"),
            "end_to_end": ratio("train_cache_gpu_augment", "reference_pipeline"),
            "pipeline_vs_reference_pipeline": ratio("train_pipeline", "reference_pipeline"),
            "cache_gpu_augment_vs_pil_training": ratio("train_cache_gpu_augment", "train_pipeline")}


def _mfu(m: dict, flops: dict, gpu: str | None, precision: str, cuda: bool) -> dict:
    peak = peak_bf16_tflops(gpu) if cuda else None
    out = {"peak_bf16_tflops": peak, "train_flops_per_image": flops["train_step"],
           "forward_flops_per_image": flops["forward"]}
    for name, per_image in (("train_synthetic", flops["train_step"]), ("train_cache_gpu_augment", flops["train_step"]),
                            ("inference", flops["forward"]), ("reference_synthetic", flops["train_step"])):
        rate = _get(m, name)
        if rate:
            achieved = rate * per_image / 1e12
            out[f"{name}_tflops"] = achieved
            out[f"{name}_fraction_of_peak"] = achieved / peak if peak else None
    if peak and precision != "bf16":
        out["note"] = "the peak is the bf16 tensor-core peak; this run did not use bf16"
    return out


def project_tables(train_rate: float | None, eval_rate: float | None, *, max_epochs: int = 40,
                   typical_epochs: int = 20, lrs: int = 4, gpus=(1, 8)) -> dict:
    """Projected wall time (hours) of each paper table's training grid from measured rates (images/s)."""
    from .data.cards import CARDS
    if not train_rate or not eval_rate:
        return {"error": "no measured training/inference rate"}
    tables = {}
    for table, names in PAPER_TABLES.items():
        rows, totals, longest = {}, {"max": 0.0, "typical": 0.0}, {"max": 0.0, "typical": 0.0}
        for name in names:
            card = CARDS[name]
            iqa = card.task == "iqa"
            splits = IQA_SPLITS if iqa else OTHER_SPLITS[name]
            f_train, f_val, f_test = FRACTIONS["iqa" if iqa else name]
            crops = TEST_CROPS if iqa else 1
            n = card.expected_images
            train_items = n * f_train * (card.train_replicas or 1)
            val_items, test_items = n * f_val * crops, n * f_test * crops
            row = {"images": n, "runs": splits * lrs, "train_items_per_epoch": round(train_items),
                   "eval_forwards_per_epoch": round(val_items)}
            for label, epochs in (("max", max_epochs), ("typical", typical_epochs)):
                seconds = (epochs * train_items / train_rate + (epochs + 1) * val_items / eval_rate
                           + test_items / eval_rate)
                row[f"hours_per_run_{label}"] = seconds / 3600
                totals[label] += seconds * splits * lrs
                longest[label] = max(longest[label], seconds)
            rows[name] = row
        entry = {"datasets": rows, "runs": sum(r["runs"] for r in rows.values())}
        for label in ("max", "typical"):
            for g in gpus:
                entry[f"hours_{label}_epochs_{g}gpu"] = max(totals[label] / g, longest[label]) / 3600
        tables[table] = entry
    return {"tables": tables, "train_images_per_s": train_rate, "inference_images_per_s": eval_rate,
            "assumptions": {
                "max_epochs": max_epochs, "typical_epochs": typical_epochs, "learning_rates": lrs,
                "splits": {"iqa": IQA_SPLITS, **OTHER_SPLITS}, "fractions_train_val_test": FRACTIONS,
                "iqa_test_crops": TEST_CROPS,
                "notes": "images = dataset cards' expected_images; IQA training items include LoDa's replicas; "
                         "validation every epoch + a final val and test evaluation; typical_epochs is an "
                         "assumption (best epoch ~8 + patience 12), not a measurement; multi-GPU wall time = "
                         "max(total / GPUs, longest run) (independent runs, one per GPU); data preparation, "
                         "cache building and model loading are not included; ablation tables (6, 7, A.7-A.11) "
                         "repeat these grids with other model variants."}}


def _targets(result: dict, backbone: str, batch_size: int, cuda: bool) -> dict:
    m = result["measurements"]
    applicable = cuda and backbone == "clip_vit_l14" and batch_size == 128 and \
        "H100" in (result["environment"].get("gpu") or "")
    values = {"train_images_per_s": _get(m, "train_cache_gpu_augment") or _get(m, "train_synthetic"),
              "speedup_end_to_end": result["speedup"]["end_to_end"],
              "inference_images_per_s": _get(m, "inference"),
              "data_images_per_s": _get(m, "data_cache_gpu_augment")}
    return {"applicable": applicable,
            "note": "targets of issue 7 apply to ViT-L/14, batch 128, one H100",
            **{k: {"target": t, "value": values[k], "met": None if values[k] is None else values[k] >= t}
               for k, t in TARGETS.items()}}


def _environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    for module in ("timm", "peft", "transformers", "torchvision"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), flash_sdp=torch.backends.cuda.flash_sdp_enabled())
    return info


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


# -------------------------------------------------------------------------------------------- numerics
PRECISION_TOLERANCE = 0.02   # |bf16 - fp32| allowed on each test metric of a short run (SRCC, PLCC, accuracy)


def compare_precisions(backbone: str = "tiny_clip", dataset: str = "synthetic_iqa", data_root: str | None = None,
                       *, epochs: int = 3, batch_size: int = 32, lr: float = 1e-4, device: str = "auto",
                       seed: int = 0, test_crops: int = 15, pretrained: bool = False, num_workers: int = 0,
                       run_dir: str | os.PathLike | None = None, tolerance: float = PRECISION_TOLERANCE) -> dict:
    """Train the same short run (``epochs`` epochs, no early stop) in fp32 and in bf16 autocast with the
    same seed and compare the test metrics: ``within_tolerance`` says whether every compared metric differs
    by at most ``tolerance``. On GPU this is the bf16 numerics check of issue 7; on CPU (bf16 autocast
    exists there too) it exercises the same code."""
    from .data.sources import DataConfig, dataset_task
    from .train import TrainConfig, train
    root = data_root or os.path.join(tempfile.gettempdir(), "percept-bench-synthetic")
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="percept-precision-"))
    task = dataset_task(dataset)
    metrics = ("accuracy",) if get_task(task).is_classification else ("srcc", "plcc", "plcc_logistic")
    runs_ = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(data=[DataConfig(dataset, str(root))], model=ModelConfig(backbone=backbone,
                             pretrained=pretrained), lr=lr, batch_size=batch_size, max_epochs=epochs, patience=epochs,
                             test_crops=test_crops, precision=precision, device=device, seed=seed,
                             num_workers=num_workers, quiet=True)
        t0 = time.perf_counter()
        result = train(config, run_dir / precision)
        runs_[precision] = {"test": next(iter(result["test"].values())), "val_score": result["val_score"],
                            "best_epoch": result["best_epoch"], "seconds": round(time.perf_counter() - t0, 2)}
    differences = {k: runs_["bf16"]["test"][k] - runs_["fp32"]["test"][k] for k in metrics
                   if k in runs_["bf16"]["test"] and k in runs_["fp32"]["test"]}
    ok = all(math.isfinite(v) and abs(v) <= tolerance for v in differences.values())
    return {"backbone": backbone, "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "device": str(resolve_device(device)[0]), "runs": runs_, "test_differences_bf16_minus_fp32": differences,
            "tolerance": tolerance, "within_tolerance": ok, "run_dir": str(run_dir)}


# -------------------------------------------------------------------------------------------- output
def format_table(result: dict) -> str:
    """The human-readable summary printed by ``percept bench``."""
    m = result["measurements"]
    lines = [f"{'measurement':<26}{'images/s':>12}{'ms/step':>10}{'peak GiB':>10}  note"]
    for name in ("train_synthetic", "train_pipeline", "train_cache_gpu_augment", "inference", "data_pil",
                 "data_cache_gpu_augment", "reference_synthetic", "reference_pipeline"):
        if name not in m:
            continue
        r = m[name]
        if "error" in r:
            lines.append(f"{name:<26}{'-':>12}{'-':>10}{'-':>10}  {r['error'][:60]}")
            continue
        ms = f"{r['ms_per_step']:.1f}" if "ms_per_step" in r else "-"
        peak = f"{r['peak_memory_gib']:.2f}" if r.get("peak_memory_gib") is not None else "-"
        lines.append(f"{name:<26}{r['images_per_s']:>12,.1f}{ms:>10}{peak:>10}  {r.get('note', '')}")
    s = result["speedup"]
    fmt = lambda v: f"{v:.2f}x" if v else "-"   # noqa: E731
    lines.append(f"speed-up vs reference: model {fmt(s['train_synthetic'])}, end to end {fmt(s['end_to_end'])}")
    mfu = result["mfu"]
    if mfu.get("peak_bf16_tflops") and mfu.get("train_synthetic_tflops"):
        lines.append(f"training {mfu['train_synthetic_tflops']:.0f} TFLOP/s = "
                     f"{100 * mfu['train_synthetic_fraction_of_peak']:.1f}% of {mfu['peak_bf16_tflops']:.0f} "
                     f"(bf16 peak); {mfu['train_flops_per_image'] / 1e9:.1f} GFLOP/image per step")
    else:
        lines.append(f"{mfu['train_flops_per_image'] / 1e9:.2f} GFLOP/image per training step, "
                     f"{mfu['forward_flops_per_image'] / 1e9:.2f} forward")
    proj = result["projection"]
    if "tables" in proj:
        lines.append(f"projected wall time, hours at the measured rates ({proj['measured_on']['backbone']}, "
                     f"{proj['measured_on']['device']}): max epochs / typical, 1 GPU | 8 GPUs")
        for table, t in proj["tables"].items():
            lines.append(f"  {table:<30} {t['runs']:>4} runs  {t['hours_max_epochs_1gpu']:>10.2f} / "
                         f"{t['hours_typical_epochs_1gpu']:<10.2f} | {t['hours_max_epochs_8gpu']:>9.2f} / "
                         f"{t['hours_typical_epochs_8gpu']:.2f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``percept bench`` options (shared by ``python -m percept.bench`` and the CLI)."""
    parser.add_argument("--backbone", default="tiny_clip", help="percept backbone (clip_vit_l14 for the paper's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: max(256, batch) on GPU")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations before each measurement")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the official-style reference path")
    parser.add_argument("--no-data", dest="data", action="store_false", help="random tensors only")
    parser.add_argument("--dataset", default="synthetic_iqa", help="dataset for the data-pipeline measurements")
    parser.add_argument("--data-root", default=None, help="its folder (default: a generated synthetic IQA set)")
    parser.add_argument("--max-images", type=int, default=2048, help="training images used at most")
    parser.add_argument("--cache-dir", default=None, help="where the uint8 image cache is built (default: tmp)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 0 on CPU, "
                        "min(16, CPUs) on GPU)")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--frozen-bf16", dest="frozen_bf16", action="store_true", default=None)
    parser.add_argument("--no-frozen-bf16", dest="frozen_bf16", action="store_false")
    parser.add_argument("--typical-epochs", type=int, default=20, help="epochs assumed for early-stopped runs")
    parser.add_argument("--precision-check", type=int, default=0, metavar="EPOCHS",
                        help="also train EPOCHS epochs in fp32 and in bf16 and compare the test metrics")
    parser.add_argument("--out", default=None, help="write the JSON record here")
    return parser


def run_from_args(args: argparse.Namespace) -> dict:
    return benchmark(backbone=args.backbone, batch_size=args.batch_size, precision=args.precision,
                     device=args.device, steps=args.steps, warmup=args.warmup, compile=args.compile,
                     reference=args.reference, data_root=args.data_root, dataset=args.dataset,
                     eval_batch_size=args.eval_batch_size, num_workers=args.workers,
                     channels_last=args.channels_last, frozen_bf16=args.frozen_bf16, max_images=args.max_images,
                     cache_dir=args.cache_dir, typical_epochs=args.typical_epochs, data=args.data,
                     precision_check_epochs=args.precision_check, out=args.out)


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="percept bench", description="Training/inference/data throughput of the fast path and of the "
                                          "official-style reference path, side by side; JSON with --out."))
    run_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
