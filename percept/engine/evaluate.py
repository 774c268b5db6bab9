"""Inference over a dataset, per-image predictions and task metrics: shared by validation, test,
cross-dataset evaluation (Table 2, Table A.1) and ``percept predict``.

Test-time augmentation (App. A.1): an IQA test item is ``(15, 3, 224, 224)`` crops (positions by the
image's size alone, ``preprocessing.iqa_crop_positions``: the same crops as ``percept predict``); the image's
prediction is the mean over its crops (for classification: the mean of the crops' softmax
probabilities). Crops of one image are always reduced together, so batching, worker count and
order never mix images.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from ..core.metrics import (
    NEGATIVE_EMOTIONS,
    POSITIVE_EMOTIONS,
    classification_metrics,
    regression_metrics,
)
from ..data.sources import open_source
from ..model.perceptclip import load_model
from .distributed import DistContext, gather_objects
from .runs import RunDir
from .runtime import autocast, resolve_device, resolve_workers


def collate(items: list[dict]) -> dict:
    """Stack tensors, turn ints into a tensor, keep anything else (image ids) as a list."""
    out = {}
    for key, value in items[0].items():
        values = [it[key] for it in items]
        out[key] = (torch.stack(values) if torch.is_tensor(value) else
                    torch.tensor(values) if isinstance(value, int) else values)
    return out


def loader(dataset, batch_size: int, *, shuffle: bool = False, num_workers: int = 0, device=None,
           generator: torch.Generator | None = None, batch_sampler=None) -> DataLoader:
    pin = torch.device(device).type == "cuda" if device is not None else False
    kwargs = dict(num_workers=num_workers, collate_fn=collate, pin_memory=pin,
                  persistent_workers=False, generator=generator)
    if num_workers > 0:
        kwargs["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **kwargs)


@torch.no_grad()
def predict_outputs(model, dataset, *, head_name: str | None = None, kind: str = "regression", batch_size: int = 64,
                    device: torch.device | str = "cpu", precision: str = "fp32", num_workers: int = 0,
                    progress=None, dist=None) -> dict:
    """Run ``model`` over every item of ``dataset`` (one item = one image, possibly several crops).

    Returns ``{"id", "index", "label", "prediction", "crop_std" | "probs"}`` as numpy arrays in dataset
    order: regression ``prediction`` = mean over crops, ``crop_std`` = their standard deviation (0 for
    one crop); classification ``probs`` = crop-averaged softmax ``(N, C)``, ``prediction`` = argmax.
    ``batch_size`` counts forward passes (crops), so an IQA batch holds ``batch_size // 15`` images.
    Under ``torchrun`` (``dist``), each process predicts every ``world``-th image and all processes get
    every image exactly once (:mod:`percept.engine.distributed`).
    """
    dist = dist or DistContext()
    full_length = len(dataset)
    if dist.enabled:
        dataset = Subset(dataset, range(dist.rank, full_length, dist.world))
    device = torch.device(device)
    was_training = model.training
    model.eval()
    first = dataset[0]["image"]
    crops = first.shape[0] if first.ndim == 4 else 1
    images_per_batch = max(1, batch_size // crops)
    outputs, ids, index, labels = [], [], [], []
    try:
        batches = loader(dataset, images_per_batch, num_workers=num_workers, device=device)
        for batch in (progress(batches) if progress else batches):
            x = batch["image"].to(device, non_blocking=True)
            n = x.shape[0]
            x = x.reshape(n * crops, *x.shape[-3:])
            with autocast(device, precision):
                out = model(x, head_name).float()
            outputs.append(out.reshape(n, crops, -1).cpu())
            ids += batch["id"]
            index.append(batch["index"])
            labels.append(batch["label"])
    finally:
        model.train(was_training)
    shards = gather_objects((list(range(dist.rank, full_length, dist.world)), torch.cat(outputs), ids,
                             torch.cat(index), torch.cat(labels)), dist)
    order = np.argsort(np.concatenate([s[0] for s in shards]), kind="stable")   # back to dataset order
    per_crop = torch.cat([s[1] for s in shards])[torch.from_numpy(order)]      # (N, crops, outputs)
    return {"id": np.array(sum((s[2] for s in shards), []), dtype=object)[order],
            "index": torch.cat([s[3] for s in shards]).numpy()[order],
            "label": torch.cat([s[4] for s in shards]).numpy()[order], **reduce_crops(per_crop, kind)}


def reduce_crops(per_crop: torch.Tensor, kind: str) -> dict[str, np.ndarray]:
    """One prediction per image from the outputs of its crops, ``(N, crops, outputs)`` (App. A.1: the mean over
    the test crops). Regression: ``prediction`` = the crops' mean of output 0, ``crop_std`` = their standard
    deviation (0 for one crop). Classification (``per_crop`` = logits): ``probs`` = the mean of the crops'
    softmax ``(N, C)``, ``prediction`` = its argmax. Used by evaluation, stage 2 and ``percept predict``."""
    per_crop = per_crop.detach().float().cpu()
    if kind == "classification":
        probs = per_crop.softmax(-1).numpy().astype(np.float64).mean(1)
        return {"probs": probs, "prediction": probs.argmax(1)}
    scores = per_crop[:, :, 0].numpy().astype(np.float64)
    return {"prediction": scores.mean(1), "crop_std": scores.std(1)}


def predictions_frame(result: dict, class_names=None) -> pd.DataFrame:
    """The saved-predictions table: ``id, label, prediction`` + ``crop_std`` or ``prob_<class>``."""
    frame = pd.DataFrame({"id": result["id"], "label": result["label"], "prediction": result["prediction"]})
    if "probs" in result:
        names = class_names or [str(i) for i in range(result["probs"].shape[1])]
        for i, name in enumerate(names):
            frame[f"prob_{name}"] = result["probs"][:, i]
    else:
        frame["crop_std"] = result["crop_std"]
    return frame


def task_metrics(result: dict, kind: str, class_names=None) -> dict:
    """Regression: SRCC, KRCC, PLCC (raw and 4-parameter logistic, App. A.1), MSE, RMSE. Classification:
    accuracy, mAP, macro/weighted F1, and binary valence accuracy for emotion classes."""
    if kind == "classification":
        emotions = class_names is not None and all(
            str(c).lower() in POSITIVE_EMOTIONS | NEGATIVE_EMOTIONS for c in class_names)
        return classification_metrics(result["probs"], result["label"].astype(int),
                                      class_names if emotions else None)   # acc_2 only for emotion classes
    return regression_metrics(result["prediction"], result["label"])


def evaluate_source(model, source, split: int | None, part: str, *, head_name: str | None = None, batch_size: int = 64,
                    device="cpu", precision: str = "fp32", num_workers: int = 0, test_crops: int = 15,
                    cache_dir: str | None = None, dist=None) -> tuple[dict, pd.DataFrame]:
    """Metrics and per-image predictions of ``model`` on ``source``'s split ``split`` part ``part``
    (``split=None``: the whole dataset) with the task's test transform, normalised with the model's
    backbone statistics (``model.normalization``)."""
    dataset = source.dataset(split, part, train_transform=False, test_crops=test_crops, cache_dir=cache_dir,
                             normalization=model.normalization)
    result = predict_outputs(model, dataset, head_name=head_name, kind=source.kind, batch_size=batch_size, device=device,
                             precision=precision, num_workers=num_workers, dist=dist)
    metrics = task_metrics(result, source.kind, source.class_names) if len(dataset) > 1 else {}
    metrics["n_images"] = int(len(dataset))
    return metrics, predictions_frame(result, source.class_names)


def evaluate_run(run_dir: str | os.PathLike, data, *, split: int | None = None, part: str = "test",
                 head_name: str | None = None, out: str | os.PathLike | None = None, batch_size: int = 64,
                 device: str = "auto", num_workers: int | None = None) -> dict:
    """Cross-dataset generalisation (Table 2, Table A.1): evaluate a finished run's best weights on another
    dataset without retraining. ``data`` is a :class:`~percept.data.sources.DataConfig`; ``split=None``
    uses every image of it (e.g. THINGS), else split ``split``'s ``part``. Writes ``metrics.json`` and
    ``predictions.csv`` to ``out`` (default ``RUN_DIR/eval/<dataset>_<split or all>_<part>``, and
    ``_head-<name>`` for a run with several heads)."""
    run = RunDir(run_dir)
    weights = run.require_weights()
    config = run.read_config()
    device, precision = resolve_device(device, config.get("precision", "auto"))
    model = load_model(weights).to(device)
    source = open_source(data)
    heads = model.head_names()
    if head_name is None:
        head_name = source.name if source.name in heads else heads[0]
    elif head_name not in heads:
        raise ValueError(f"head {head_name!r} not in this run; its heads: {', '.join(heads)}")
    if model.config.heads[head_name] != source.num_outputs:
        raise ValueError(f"head {head_name!r} has {model.config.heads[head_name]} output(s) but {source.name} needs "
                         f"{source.num_outputs} ({source.kind}); evaluate a run of the same task")
    metrics, frame = evaluate_source(model, source, split, part, head_name=head_name, batch_size=batch_size, device=device,
                                     precision=precision, num_workers=resolve_workers(num_workers, device),
                                     test_crops=int(config.get("test_crops", 15)))
    name = f"{source.name}_{'all' if split is None else f'split{split}'}_{part}"
    # a run with several heads is evaluated on one dataset by each of them (e.g. two source heads of a unified
    # run on KonIQ-10k): the head is in the folder's name so that one never overwrites the other
    out = RunDir(out) if out else run.eval_dir(name + (f"_head-{head_name}" if len(heads) > 1 else ""))
    out.write_predictions(frame)
    record = {"run": str(run.path), "trained_on": [d["dataset"] for d in config["data"]], "head_name": head_name,
              "dataset": source.name, "split": split, "part": part, "metrics": metrics, "status": "complete"}
    out.write_metrics(record)
    return record
