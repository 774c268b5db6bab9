"""Stage 2 of multi-dataset training (paper §3.2, App. A.3, Table A.9): each dataset's head is fine-tuned
alone on its dataset while the shared encoder (LoRA included) stays frozen.

Because the encoder is frozen, its output for an input never changes: the encoder runs once per
image view and the heads train on cached features (a few seconds instead of a full training run).
Training views are the training transform's augmentations, one per item of the training set (IQA:
``replicas`` independently augmented views per image), drawn once with a fixed seed; validation and
test views are the test transform's (15 crops for IQA, predictions averaged over crops). The protocol
is stage 1's: AdamW (same learning rate and weight decay), early stopping on the same validation
metric with the same patience and epoch limit, best head kept.

A two-phase run can take stage 1 from the finished one-stage run of its configuration (:func:`adopt_stage1`,
``TrainConfig.stage1_from``) and train stage 2 alone.
"""
from __future__ import annotations

import copy
import math
import shutil

import torch

from ..core.checkpoint import load_checkpoint
from ..core.files import atomic_path
from ..core.tasks import get_task, selection_score
from .distributed import barrier
from .evaluate import loader, reduce_crops, task_metrics
from .losses import get_loss
from .runs import RunDir
from .runtime import autocast
from .train_config import EXECUTION_FIELDS, TrainConfig


@torch.no_grad()
def encode(model, dataset, device, precision, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features ``(N, views, D)`` on CPU in fp32, labels ``(N,)``) for every item of ``dataset``."""
    model.eval()
    feats, labels = [], []
    for batch in loader(dataset, max(1, batch_size // _views(dataset)), device=device):
        x = batch["image"].to(device, non_blocking=True)
        n, views = x.shape[0], (x.shape[1] if x.ndim == 5 else 1)
        with autocast(device, precision):
            f = model.embed(x.reshape(n * views, *x.shape[-3:])).float()
        feats.append(f.reshape(n, views, -1).cpu())
        labels.append(batch["label"])
    return torch.cat(feats), torch.cat(labels)


def _views(dataset) -> int:
    first = dataset[0]["image"]
    return first.shape[0] if first.ndim == 4 else 1


def _metrics(head, feats, labels, source) -> dict:
    """Task metrics of ``head`` on cached features ``(N, views, D)``: views reduced as evaluation does."""
    head.eval()
    with torch.no_grad():
        out = head(feats.reshape(-1, feats.shape[-1])).reshape(feats.shape[0], feats.shape[1], -1)
    head.train()
    return task_metrics({**reduce_crops(out, source.kind), "label": labels.numpy()}, source.kind, source.class_names)


def finetune_heads(model, sources, config, device, precision, metric: str | dict, log=print,
                   splits: dict[str, int] | None = None) -> dict:
    """Freeze the encoder and fine-tune ``model.heads[source.name]`` for each source; returns, per dataset,
    ``{"val_score", "best_epoch", "epochs_run"}``. The best head replaces the stage-1 head in ``model``.
    ``metric``: the validation metric, or one per dataset name (a mixed-task run: each head its task's)."""

    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    model.freeze_encoder()
    report = {}
    for source in sources:
        head_metric = metric[source.name] if isinstance(metric, dict) else metric
        torch.manual_seed(config.seed + 7919)
        split = (splits or {}).get(source.name, config.split)   # a group's split k may be a dataset's only split
        views = dict(test_crops=config.test_crops, normalization=model.normalization)   # the backbone's mean/std
        train_x, train_y = encode(model, source.dataset(split, "train", **views),
                                  device, precision, config.eval_batch_size)
        val_x, val_y = encode(model, source.dataset(split, "val", **views),
                              device, precision, config.eval_batch_size)
        head = model.heads[source.name]
        train_x, val_x = train_x.to(device), val_x.to(device)
        loss_fn = get_loss(get_task(source.task).loss)
        optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best = {"score": -math.inf, "value": None, "epoch": 0, "state": copy.deepcopy(head.state_dict())}
        waited, epoch = 0, 0
        x_all = train_x[:, 0]
        y_all = (train_y.long() if source.kind == "classification" else train_y.float()).to(device)
        for epoch in range(1, config.max_epochs + 1):
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 500_000 + epoch)
            torch.manual_seed(config.seed * 1_000_003 + 500_000 + epoch)
            order = torch.randperm(len(x_all), generator=generator).to(device)
            head.train()
            for i in range(0, len(order), config.batch_size):
                rows = order[i:i + config.batch_size]
                if len(rows) < 2:
                    continue
                loss = loss_fn(head(x_all[rows]).float(), y_all[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            value = _metrics(head, val_x, val_y, source)[head_metric]
            score = selection_score(value, head_metric)
            if score > best["score"] or best["epoch"] == 0:
                best = {"score": score, "value": value, "epoch": epoch, "state": copy.deepcopy(head.state_dict())}
                waited = 0
            else:
                waited += 1
                if waited >= config.patience:
                    break
        head.load_state_dict(best["state"])
        report[source.name] = {"val_score": best["value"], "best_epoch": best["epoch"], "epochs_run": epoch}
        log(f"stage 2 {source.name}: best val {head_metric} {best['value']:.4f} at epoch {best['epoch']}")
    for name, p in model.named_parameters():   # so that the weights file keeps LoRA (stored by requires_grad)
        p.requires_grad_(trainable[name])
    return report


def adopt_stage1(s, source: RunDir) -> None:
    """Take stage 1 from ``source`` into the training session ``s`` (:class:`percept.engine.train.Session`), a finished one-stage run of the same configuration (all fields but
    ``head_finetune`` and the execution settings equal): its best weights, log and last checkpoint are copied
    into this run, so :func:`fit` has nothing left to do and :func:`finish` goes on with stage 2. Stage 1 does
    not depend on ``head_finetune`` (same seed, same data order), so the result is what retraining would give on
    the same machine, in the time of stage 2 alone."""
    if not s.config.head_finetune:
        raise ValueError("stage1_from is for a two-phase run (head_finetune=True)")
    if not source.is_complete():
        raise ValueError(f"stage1_from {source.path} is not a finished run; train it first")
    ignore = set(EXECUTION_FIELDS) | {"head_finetune"}
    ours = {k: v for k, v in s.config.to_dict().items() if k not in ignore}
    theirs = {k: v for k, v in TrainConfig.from_dict(source.read_config()).to_dict().items() if k not in ignore}
    if ours != theirs or source.read_config().get("head_finetune"):
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)) or ["head_finetune"]
        raise ValueError(f"stage1_from {source.path} is not the one-stage run of this configuration "
                         f"(differs in {', '.join(differ)})")
    if s.main:
        for src, dst in ((source.best_weights, s.run.best_weights), (source.log_file, s.run.log_file),
                         (source.checkpoint_file, s.run.checkpoint_file)):
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    barrier(s.dist)
    s.state = load_checkpoint(s.run.checkpoint_file, s.model, s.optimizer)
    s.state["stage1_from"] = str(source.path)
    s.log(f"stage 1 taken from {source.path} (best epoch {s.state['best_epoch']})")
