"""The training loop: PerceptCLIP's protocol (paper §3.1, §3.2, §4), readable in one sitting.

One run = one learning rate, one split, one or several datasets (several = the multi-dataset model of
§3.2: one shared LoRA encoder, one head per dataset; split k of such a group is split k of each dataset
that has several splits and the official split of a dataset that has one, e.g. EmoSet; the splits used
are recorded in ``metrics.json``). LaMem's split k trains and tests on split k's own official scores
(:meth:`~percept.data.sources.DatasetSource.label_column_for`). Per epoch:

1. batches from :class:`~percept.engine.sampling.ProportionalBatchSampler` (each dataset contributes to the
   batches in proportion to its number of images, a PLCC dataset with at least ``min_batch_items`` items
   whenever it enters a batch; with one dataset this is a plain shuffled epoch); loss = mean of the per-dataset task
   losses present in the batch (PLCC for IQA, MSE for memorability, cross-entropy for emotion; datasets of
   different tasks in one run — beyond the paper — normalise and weight them, :mod:`percept.engine.multitask`);
   AdamW (weight decay 1e-4) on the trainable weights (LoRA + heads by default);
2. validation with the test transform (15-crop average for IQA); the score is ``select_metric``
   (SRCC for regression, accuracy for classification) averaged over the datasets;
3. the best epoch's weights are kept (``best.safetensors``); early stopping after ``patience`` (12)
   epochs without improvement, at most ``max_epochs`` (40);
4. a checkpoint of the finished epoch, so an interrupted run resumes where it stopped.

Then, optionally, stage 2 (``head_finetune``: §3.2, Table A.9): the encoder is frozen and each head is
trained alone on its dataset from cached encoder features (:mod:`percept.engine.head_finetune`). Finally the
best weights are evaluated on each dataset's test part; predictions and metrics are written.

:func:`train` = :func:`setup` (device, data, model, optimizer, resume) → :func:`fit` (the epochs above) →
:func:`finish` (best weights, stage 2, test, ``metrics.json``); the run's files are :class:`~percept.engine.runs.RunDir`'s.

Determinism: every epoch reseeds torch (dropout, augmentation) and the sampler from ``(seed, epoch)``,
so a resumed run reproduces an uninterrupted one exactly (on the same device and settings).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.checkpoint import load_checkpoint, save_checkpoint
from ..core.files import exclusive_lock, read_json
from ..core.tasks import get_task, selection_score
from ..data.sources import check_trainable, open_source
from ..model.perceptclip import build_model, load_weights, save_weights
from .distributed import (
    DistContext,
    barrier,
    gather_global_batch,
    init_distributed,
    same_head_dropout,
)
from .evaluate import evaluate_source, loader
from .gpu_augment import DeviceAugmentDataset, normalize_on_device
from .head_finetune import adopt_stage1, finetune_heads
from .losses import batch_loss, get_loss
from .multitask import (
    MIXED_METRIC,
    is_mixed,
    loss_scales,
    loss_weights,
    selection_metrics,
    selection_value,
)
from .runs import RunDir, write_state
from .runtime import (
    autocast,
    cast_frozen_weights,
    compile_or_eager,
    resolve_device,
    resolve_workers,
)
from .sampling import ProportionalBatchSampler, TaggedConcat
from .tracking import Trackers, check_loggers
from .train_config import EXECUTION_FIELDS, TrainConfig  # noqa: F401 (percept.engine.train.TrainConfig)


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, out of memory); the message says what to do."""


# ------------------------------------------------------------------------------------------ one epoch
def train_one_epoch(model, batches, sources, optimizer, device, precision, epoch: int, progress,
                    encoder=None, dist: DistContext = DistContext(), to_device=None, loss_weights=None,
                    loss_scales=None) -> float:
    """One pass over ``batches``; returns the mean training loss. A batch's loss is :func:`batch_loss` (the mean
    of the present datasets' task losses, each divided by ``loss_scales[d]`` and weighted by ``loss_weights[d]``:
    1 and equal by default, the paper's plain mean). Under torchrun ``encoder`` is the DDP-wrapped encoder and
    the heads see the gathered global batch (:mod:`percept.engine.distributed`). Never syncs with the GPU per
    batch: a NaN/inf loss is found at the end of the epoch (the previous checkpoint is still on disk)."""
    encoder = encoder or model.encoder
    model.train()
    task_losses = [get_loss(get_task(s.task).loss) for s in sources]   # each dataset's task loss
    losses = []
    for step, batch in enumerate(progress(batches, desc=f"epoch {epoch}", leave=False)):
        x = to_device(batch) if to_device is not None else batch["image"].to(device, non_blocking=True)
        y, which = batch["label"].to(device, non_blocking=True), batch["dataset"]
        model.check_images(x)
        with autocast(device, precision):
            embedding = encoder(x)
        if dist.enabled:
            embedding, y, which = gather_global_batch(embedding, y, which, dist)
        with same_head_dropout(dist, device, seed=epoch * 1_000_003 + step):
            loss = batch_loss(model, sources, embedding, y, which, task_losses, device=device, precision=precision,
                              weights=loss_weights, scales=loss_scales)
        if loss is None:
            continue   # no dataset has enough items in this batch
        optimizer.zero_grad(set_to_none=True)
        _backward(loss, batch_size=x.shape[0])
        optimizer.step()
        losses.append(loss.detach())
    return _mean_finite_loss(losses, epoch)


def _backward(loss, batch_size: int) -> None:
    try:
        loss.backward()
    except torch.OutOfMemoryError as err:
        raise TrainingError(f"out of GPU memory at batch size {batch_size}; try --batch-size "
                            f"{max(2, batch_size // 2)}") from err


def _mean_finite_loss(losses: list, epoch: int) -> float:
    values = torch.stack(losses).float().cpu().numpy()
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise TrainingError(f"the loss became {values[bad[0]]} at epoch {epoch}, batch {bad[0] + 1} of "
                            f"{len(values)}; the checkpoint of epoch {epoch - 1} is kept. Try a lower learning "
                            f"rate")
    return float(values.mean())


def _normalize_batch(batch, *, device, mean, std, channels_last):
    return normalize_on_device(batch["image"], batch["hflip"], batch["vflip"], device=device, mean=mean, std=std,
                               channels_last=channels_last)


# ------------------------------------------------------------------------------------------ the run
def train(config: TrainConfig, run_dir: str | Path, log=print) -> dict:
    """Train (or resume, or return the result of a finished) run in ``run_dir``; returns its metrics."""
    run = RunDir(run_dir)
    dist = init_distributed()                      # torchrun: one process per GPU; else a single process
    with exclusive_lock(run.lock_file, f"the run {run.path}") if dist.is_main else nullcontext():
        return _train(config, run, dist, log)


def _train(config: TrainConfig, run: RunDir, dist: DistContext, log) -> dict:
    if dist.is_main:
        run.open(config.to_dict(), ignore=EXECUTION_FIELDS)
    barrier(dist)
    if run.is_complete():
        if run.splits_file.is_file() and dist.is_main:
            _check_finished_splits(config, run)
        return run.read_metrics()
    check_loggers(config.loggers)                  # a missing tracker package: an error before any work
    session = None
    try:
        session = setup(config, run, dist, log)
        if config.stage1_from and session.state["epoch"] == 0:
            adopt_stage1(session, RunDir(config.stage1_from))
        fit(session)
        result = finish(session)
    except BaseException as err:
        if session is not None and session.trackers is not None:
            session.trackers.close(failed=True)
        # an error is recorded for `percept status` (also one in setup: missing data, a bad split); a kill (Ctrl-C,
        # SLURM's signal) leaves "running", which the status shows as interrupted once the process is gone
        if dist.is_main and isinstance(err, Exception):
            write_state(run, "failed", epoch=session.state["epoch"] if session else 0,
                        error=f"{type(err).__name__}: {err}")
        raise
    session.trackers.close()
    return result


@dataclass
class Session:
    """What :func:`setup` prepares for :func:`fit` and :func:`finish`: one run's data, model and loop state."""

    config: TrainConfig
    run: RunDir
    dist: DistContext
    log: object
    progress: object
    device: torch.device
    precision: str
    sources: list
    splits: dict
    metric: str
    model: object
    optimizer: torch.optim.Optimizer
    encoder: torch.nn.Module
    state: dict
    workers: int
    train_sets: list = field(default_factory=list)
    image_counts: list = field(default_factory=list)   # §3.2: batches in proportion to images, not replicas
    to_device: object = None
    metrics: dict = field(default_factory=dict)        # dataset -> its validation metric (percept.engine.multitask)
    loss_scales: list = field(default_factory=list)    # dataset -> what its loss is divided by (mixed tasks)
    loss_weights: list = field(default_factory=list)   # dataset -> its task's weight
    trackers: Trackers | None = None                   # TensorBoard / W&B / MLflow (main process; percept.engine.tracking)

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def evaluate(self, source, part: str) -> tuple[dict, pd.DataFrame]:
        c = self.config
        return evaluate_source(self.model, source, self.splits[source.name], part, head_name=source.name,
                               batch_size=c.eval_batch_size, device=self.device, precision=self.precision,
                               num_workers=self.workers, test_crops=c.test_crops, cache_dir=c.cache_dir, dist=self.dist)


def run_splits(sources: list, split: int) -> dict[str, int]:
    """Each dataset's split of the run: ``split`` itself, or in a multi-dataset group its group split."""
    return {s.name: s.group_split(split) if len(sources) > 1 else split for s in sources}


def _check_finished_splits(config: TrainConfig, run: RunDir) -> None:
    """A finished run is reused only while its datasets' splits are those it was trained on (when its data is
    here to tell; a finished run whose data is elsewhere is reused as it is)."""
    try:
        sources = [open_source(d) for d in config.data]
    except (OSError, ValueError):
        return
    try:
        splits = run_splits(sources, config.split)
        digests = {s.name: s.split_digest(splits[s.name]) for s in sources}
    except (KeyError, ValueError):
        return
    run.check_splits(digests)


def setup(config: TrainConfig, run: RunDir, dist: DistContext, log=print) -> Session:
    """Device, datasets and splits, the model and AdamW (restored from the checkpoint when resuming), the
    training datasets with the backbone's normalisation."""
    main = dist.is_main
    log = (lambda *a, **k: None) if config.quiet or not main else log
    progress = (lambda it, **k: it) if config.quiet or not main else (lambda it, **k: tqdm(it, **k))
    device_name = config.device
    if dist.enabled and torch.cuda.is_available() and config.device in ("auto", "cuda"):
        device_name = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    device, precision = resolve_device(device_name, config.precision)
    if main:
        run.write_environment(device, precision=precision, world_size=dist.world)

    sources = [open_source(d) for d in config.data]
    # split k of a multi-dataset group = split k of each dataset with several splits, the official one otherwise
    splits = run_splits(sources, config.split)
    for s in sources:
        check_trainable(s, splits[s.name], config.batch_size)
    if main:                                               # changed splits never resume the old weights
        run.check_splits({s.name: s.split_digest(splits[s.name]) for s in sources})
    metrics = selection_metrics(sources, config.select_metric)     # per dataset (mixed tasks: each its own)
    metric = MIXED_METRIC if is_mixed(sources) else metrics[sources[0].name]
    train_labels = {s.name: s.dataset(splits[s.name], "train").labels for s in sources}
    scales, weights = loss_scales(sources, train_labels), loss_weights(sources, config.task_weights)

    torch.manual_seed(config.seed)
    model = build_model(config.model, heads={s.name: s.num_outputs for s in sources}).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    state = {"epoch": 0, "best_score": -math.inf, "best_value": None, "best_epoch": 0, "waited": 0,
             "stopped": False, "history": []}
    if run.checkpoint_file.is_file():
        state = load_checkpoint(run.checkpoint_file, model, optimizer)
        log(f"resuming {run.path} after epoch {state['epoch']}")
    session = Session(config, run, dist, log, progress, device, precision, sources, splits, metric, model,
                      optimizer, _fast_encoder(config, model, device, precision, dist, log), state,
                      resolve_workers(config.num_workers, device, processes=dist.world),
                      metrics=metrics, loss_scales=scales, loss_weights=weights)
    if is_mixed(sources):
        log("mixed tasks: losses / constant-prediction loss " + ", ".join(
            f"{src.name} ({src.task}) /{sc:.4g} x{w:g}" for src, sc, w in zip(sources, scales, weights)))
    counts = model.parameter_counts()
    log(f"{', '.join(s.name for s in sources)} split {config.split}: {config.model.backbone} "
        f"({config.model.strategy}), {counts['trainable']:,} trainable parameters, lr {config.lr:g}, {device}")
    _training_data(session)
    group = config.log_group or "+".join(s.name for s in sources)
    session.trackers = Trackers(config.loggers if main else [], run.path, group)
    if main:
        session.trackers.start(config.to_dict(), read_json(run.environment_file), resumed_after=state["epoch"])
        write_state(run, "running", epoch=state["epoch"])
    return session


def _fast_encoder(config: TrainConfig, model, device, precision: str, dist: DistContext, log):
    """The encoder as the training steps call it: frozen weights in bf16 under bf16 autocast, DDP-wrapped
    under torchrun when it has trainable weights, compiled when asked (:mod:`percept.engine.runtime`)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if precision == "bf16" and (config.model.pretrained or config.model.weights_path):
        cast_frozen_weights(model.encoder)     # not for a random base: its full state is saved
    encoder = model.encoder
    if dist.enabled and any(p.requires_grad for p in model.encoder.parameters()):
        encoder = torch.nn.parallel.DistributedDataParallel(
            model.encoder, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        example = torch.zeros(config.batch_size, 3, *model.img_size, device=device)
        encoder, _ = compile_or_eager(encoder, example, precision=precision, log=log)
    return encoder


def _training_data(s: Session) -> None:
    """Each dataset's training part with the backbone's mean/std (CLIP, ImageNet); on the GPU by default the
    integer crops stay in the loader workers and flips + normalisation run on the device."""
    c = s.config
    s.train_sets = [src.dataset(s.splits[src.name], "train", test_crops=c.test_crops, cache_dir=c.cache_dir,
                                normalization=s.model.normalization) for src in s.sources]
    s.image_counts = [t.n_rows for t in s.train_sets]
    if c.device_augment == "on" or (c.device_augment == "auto" and s.device.type == "cuda"):
        s.train_sets = [DeviceAugmentDataset(t) for t in s.train_sets]
        plan = s.train_sets[0].plan
        s.to_device = partial(_normalize_batch, device=s.device, mean=plan.mean, std=plan.std,
                              channels_last=s.device.type == "cuda")


def fit(s: Session) -> None:
    """Stage 1: epochs of training, validation, selection of the best epoch and early stopping; a checkpoint
    after every epoch."""
    c, state = s.config, s.state
    union = TaggedConcat(s.train_sets)
    min_items = [c.min_batch_items if get_task(src.task).loss == "plcc" else 1 for src in s.sources]
    epochs = s.progress(range(state["epoch"] + 1, c.max_epochs + 1), desc="epochs", initial=state["epoch"],
                        total=c.max_epochs)
    for epoch in epochs if not state["stopped"] else []:
        start = time.time()
        torch.manual_seed(c.seed * 1_000_003 + epoch)          # dropout + augmentation of this epoch
        sampler = ProportionalBatchSampler([len(t) for t in s.train_sets], c.batch_size,
                                           seed=c.seed * 1_000_003 + epoch, dist=s.dist, images=s.image_counts,
                                           min_items=min_items)
        batches = loader(union, c.batch_size, num_workers=s.workers, device=s.device, batch_sampler=sampler,
                         generator=torch.Generator().manual_seed(c.seed + epoch))
        train_loss = train_one_epoch(s.model, batches, s.sources, s.optimizer, s.device, s.precision, epoch,
                                     s.progress, encoder=s.encoder, dist=s.dist, to_device=s.to_device,
                                     loss_weights=s.loss_weights, loss_scales=s.loss_scales)
        val = {src.name: s.evaluate(src, "val")[0] for src in s.sources}
        value = selection_value(val, s.sources, s.metrics)
        score = selection_score(value, s.metric)
        state["history"].append({"epoch": epoch, "stage": 1, "lr": c.lr, "train_loss": train_loss,
                                 f"val_{s.metric}": value,
                                 **{f"val_{k}_{n}": v[k] for n, v in val.items() for k in v if k != "n_images"},
                                 "seconds": round(time.time() - start, 2)})
        if score > state["best_score"] or state["best_epoch"] == 0:
            state.update(best_score=score, best_value=value, best_epoch=epoch, waited=0)
            if s.main:
                save_weights(s.model, s.run.best_weights)
        else:
            state["waited"] += 1
        state["epoch"] = epoch
        state["stopped"] = state["waited"] >= c.patience
        if s.main:
            s.run.write_log(pd.DataFrame(state["history"]))
            save_checkpoint(s.run.checkpoint_file, s.model.trainable_state_dict(), s.optimizer, state)
            s.trackers.epoch(state["history"][-1])
            write_state(s.run, "running", epoch=epoch)
        barrier(s.dist)
        s.log(f"epoch {epoch:3d}  train loss {train_loss:.4f}  val {s.metric} {value:.4f}"
              f"{'  *' if state['best_epoch'] == epoch else ''}")
        if state["stopped"]:
            s.log(f"early stopping: no better validation {s.metric} for {c.patience} epochs")
            break


def finish(s: Session) -> dict:
    """The best epoch's weights, stage 2 when asked (heads alone on cached features), then every dataset's
    validation and test metrics and test predictions; ``metrics.json`` marks the run complete."""
    c, state = s.config, s.state
    load_weights(s.model, s.run.best_weights)
    result = {"status": "complete", "select_metric": s.metric, "splits": s.splits, "best_epoch": state["best_epoch"],
              "epochs_run": state["epoch"], "val_score": state["best_value"], "parameters": s.model.parameter_counts()}
    if state.get("stage1_from"):
        result["stage1_from"] = state["stage1_from"]
    if c.head_finetune:
        result["stage2"] = finetune_heads(s.model, s.sources, c, s.device, s.precision, s.metrics, s.log,
                                          splits=s.splits)
        if s.main:   # every process ran the same stage 2 on all images (it is cheap: cached features)
            save_weights(s.model, s.run.best_weights)
        result["val_score"] = selection_value({n: {s.metrics[n]: r["val_score"]} for n, r in result["stage2"].items()},
                                              s.sources, s.metrics)    # the stage-1 rule over the stage-2 heads
    result["val"], result["test"] = {}, {}
    for src in s.sources:
        result["val"][src.name] = s.evaluate(src, "val")[0]
        result["test"][src.name], frame = s.evaluate(src, "test")
        if s.main:
            s.run.write_predictions(frame, src.name if len(s.sources) > 1 else None)
    if s.main:
        s.run.write_metrics(result)
        s.trackers.final(result, s.run.best_weights)
    barrier(s.dist)
    for name, m in result["test"].items():
        shown = {k: round(v, 4) for k, v in m.items() if k in ("srcc", "plcc_logistic", "mse", "accuracy")}
        s.log(f"test {name}: {shown} (best epoch {state['best_epoch']})")
    return result
