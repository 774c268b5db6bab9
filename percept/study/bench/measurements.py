"""The measurements of ``percept bench``, one function each (see :mod:`percept.study.bench` for what they mean):
the fast path on random tensors, through the PIL pipeline and through the image cache with device-side
augmentation; inference; the two data pipelines alone; and the official-style reference path."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from ...data.cache import ImageCache
from ...data.dataset import ManifestDataset
from ...data.sources import DataConfig, open_source
from ...engine.gpu_augment import DeviceAugmentDataset
from ...engine.losses import get_loss
from ...engine.runtime import cast_frozen_weights, compile_or_eager
from ...model.official_reference import build_reference_model
from ...model.perceptclip import ModelConfig, PerceptCLIP, build_model
from .timing import (
    free_memory,
    infer,
    make_loader,
    measure,
    rate,
    time_loop,
    train_step,
)


@dataclass
class FastPath:
    """What the fast-path measurements share: the model (``runner``: compiled or not), its optimizer and loss,
    one random batch on the device, and the loop settings."""

    model: PerceptCLIP
    runner: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: object
    x: torch.Tensor
    y: torch.Tensor
    device: torch.device
    precision: str
    batch_size: int
    eval_batch_size: int
    steps: int
    warmup: int
    workers: int
    seed: int
    channels_last: bool

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return train_step(self.runner, self.optimizer, self.loss_fn, x, y, self.device, self.precision)

    def timed(self, step, images_per_step: int) -> dict:
        seconds = time_loop(step, self.steps, self.warmup, self.device)
        return {"images_per_s": rate(self.steps * images_per_step, seconds), "seconds": seconds}

    def loader(self, dataset):
        return make_loader(dataset, self.batch_size, self.warmup + self.steps, self.workers,
                           self.device.type == "cuda", self.seed)


def build_fast_path(backbone: str, *, batch_size: int, eval_batch_size: int, device: torch.device, precision: str,
                    steps: int, warmup: int, workers: int, seed: int, channels_last: bool, frozen_bf16: bool,
                    compile: bool, log, compile_backend: str = "inductor") -> tuple[FastPath, dict]:
    """The percept model with random weights, AdamW (fused on GPU), a random batch; returns it and the
    settings it adds to the record (frozen modules cast to bf16, compile outcome)."""
    torch.manual_seed(seed)
    model = build_model(backbone=backbone, pretrained=False).to(device)
    settings = {}
    if frozen_bf16:
        settings["frozen_modules_in_bf16"] = cast_frozen_weights(model, torch.bfloat16)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4, fused=device.type == "cuda")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, 3, *model.img_size, device=device).contiguous(memory_format=memory_format)
    y = torch.rand(batch_size, device=device)
    runner, compile_info = model, {"compiled": False}
    model.train()
    if compile:
        runner, compile_info = compile_or_eager(model, x, precision=precision, log=log, backend=compile_backend)
    settings.update(compile_info)
    return FastPath(model, runner, optimizer, get_loss("plcc"), x, y, device, precision, batch_size, eval_batch_size, steps, warmup,
                    workers, seed, channels_last), settings


def train_synthetic(fp: FastPath) -> dict:
    """Training steps on one random batch already on the device: the model alone."""
    losses = []
    record = fp.timed(lambda: losses.append(fp.step(fp.x, fp.y)), fp.batch_size)
    return {**record, "ms_per_step": 1000 * record["seconds"] / fp.steps,
            "loss_finite": bool(torch.isfinite(torch.stack(losses)).all())}


def data_pil(fp: FastPath, pil) -> dict:
    """The PIL pipeline alone: batches decoded, transformed and moved to the device."""
    it = iter(fp.loader(pil))
    return fp.timed(lambda: next(it)["image"].to(fp.device, non_blocking=True), fp.batch_size)


def data_cache(fp: FastPath, cached) -> dict:
    """The cache pipeline alone: uint8 crops from the cache, flips and normalisation on the device."""
    it = iter(fp.loader(cached))
    return fp.timed(lambda: cached.to_device(next(it), fp.device, fp.channels_last), fp.batch_size)


def train_from(fp: FastPath, dataset, to_device) -> dict:
    """Training steps on batches of ``dataset`` (``to_device``: batch -> input tensor on the device)."""
    it = iter(fp.loader(dataset))
    losses = []

    def step():
        batch = next(it)
        losses.append(fp.step(to_device(batch), batch["label"].to(fp.device, non_blocking=True)))
    record = fp.timed(step, fp.batch_size)
    return {**record, "ms_per_step": 1000 * record["seconds"] / fp.steps,
            "loss_finite": bool(torch.isfinite(torch.stack(losses)).all())}


def inference(fp: FastPath) -> dict:
    """Forward passes at ``eval_batch_size`` in eval and inference mode."""
    fp.model.eval()
    xe = torch.randn(fp.eval_batch_size, 3, *fp.model.img_size, device=fp.device).contiguous(
        memory_format=fp.memory_format)
    try:
        with torch.inference_mode():
            record = fp.timed(lambda: infer(fp.runner, xe, fp.device, fp.precision), fp.eval_batch_size)
    finally:
        fp.model.train()
    return {**record, "batch_size": fp.eval_batch_size}


def measure_fast_path(fp: FastPath, measurements: dict, open_data, log):
    """Every fast-path measurement in turn: the model alone first, then ``open_data()`` -> (PIL dataset,
    cached dataset) or (None, None), the data ones when a dataset was opened, inference last. Returns the
    PIL dataset (the reference path's pipeline measurement uses it)."""
    measure("train_synthetic", measurements, fp.device, log, lambda: train_synthetic(fp))
    pil, cached = open_data()
    if pil is not None:
        to_tensor = lambda b: b["image"].to(fp.device, non_blocking=True).contiguous(  # noqa: E731
            memory_format=fp.memory_format)
        measure("data_pil", measurements, fp.device, log, lambda: data_pil(fp, pil))
        measure("data_cache_gpu_augment", measurements, fp.device, log, lambda: data_cache(fp, cached))
        measure("train_pipeline", measurements, fp.device, log, lambda: train_from(fp, pil, to_tensor))
        measure("train_cache_gpu_augment", measurements, fp.device, log, lambda: train_from(
            fp, cached, lambda b: cached.to_device(b, fp.device, fp.channels_last)))
    measure("inference", measurements, fp.device, log, lambda: inference(fp))
    return pil


def bench_sources(dataset: str, data_root: str | None, max_images: int, log):
    """The training part of split 1 of ``dataset`` (at most ``max_images`` rows) as the three datasets."""
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


def cached_dataset(source, pil, cache_dir: str | None):
    """The same training items from the uint8 image cache, as crops + flips (:mod:`percept.engine.gpu_augment`)."""
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "percept-bench-cache")
    t0 = time.perf_counter()
    cache = ImageCache.build(source.root, pil.ids, pil.transform.pre_resize, cache_dir)
    built = time.perf_counter() - t0
    cached = ManifestDataset(source.frame, source.root, pil.split, pil.part, task=pil.task,
                             label_column=pil.label_column, transform=pil.transform, replicas=pil.replicas, cache=cache)
    return DeviceAugmentDataset(cached), {"cache_dir": str(cache_dir), "cache_build_seconds": round(built, 2)}


def measure_reference(measurements: dict, backbone: str, batch_size: int, steps: int, warmup: int, device, pil,
                      workers: int, seed: int, log) -> None:
    """The official-style path: transformers CLIP + peft, eager attention, fp32, plain DataLoader."""
    try:
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
        def measured():
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
                free_memory(device)
                notes.append(f"out of memory at batch {batch}")
                batch //= 2
            record["batch_size"] = batch
            if notes:
                record["note"] = "; ".join(notes) + f"; measured at batch {batch}"
            return record
        return measured

    def synthetic(batch):
        xr = torch.randn(batch, 3, size, size, device=device)
        yr = torch.rand(batch, device=device)
        seconds = time_loop(lambda: train_step(reference, optimizer, loss_fn, xr, yr, device, "fp32"),
                            steps, warmup, device)
        return {"images_per_s": rate(steps * batch, seconds), "seconds": seconds, "ms_per_step": 1000 * seconds / steps}

    def pipeline(batch):
        it = iter(make_loader(pil, batch, total, workers, False, seed, fast=False))   # default collate, no pinning

        def step():
            b = next(it)
            train_step(reference, optimizer, loss_fn, b["image"].to(device), b["label"].to(device), device, "fp32")
        seconds = time_loop(step, steps, warmup, device)
        return {"images_per_s": rate(steps * batch, seconds), "seconds": seconds, "ms_per_step": 1000 * seconds / steps}

    measure("reference_synthetic", measurements, device, log, with_oom_fallback(synthetic))
    if pil is not None:
        measure("reference_pipeline", measurements, device, log, with_oom_fallback(pipeline))
    del reference, optimizer
    free_memory(device)
