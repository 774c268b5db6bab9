"""Stage 2 of multi-dataset training (paper §3.2, App. A.3, Table A.9): each dataset's head is fine-tuned
alone on its dataset while the shared encoder (LoRA included) stays frozen.

Because the encoder is frozen, its output for an input never changes: the encoder runs once per
image view and the heads train on cached features (a few seconds instead of a full training run).
Training views are the training transform's augmentations, one per item of the training set (IQA:
``replicas`` independently augmented views per image), drawn once with a fixed seed; validation and
test views are the test transform's (15 crops for IQA, predictions averaged over crops). The protocol
is stage 1's: AdamW (same learning rate and weight decay), early stopping on the same validation
metric with the same patience and epoch limit, best head kept.
"""
from __future__ import annotations

import copy
import math

import torch

from .evaluate import loader, reduce_crops, task_metrics
from .runtime import autocast
from .losses import get_loss
from .tasks import get_task, selection_score


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
