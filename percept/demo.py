"""The offline demo: PerceptCLIP's IQA recipe, end to end, on embedded synthetic data, on CPU, in minutes.

What it is: the procedurally generated KADID-style set of :mod:`percept.data.synthetic` (labels are
*distortion levels*, not human judgements), split by reference image (no reference in two parts, as
for synthetic IQA datasets, paper §4.1 / LoDa), a ``tiny_clip`` encoder (random-initialised: no weights
can be downloaded offline) with LoRA on q, k, v + the MLP head, the PLCC loss, AdamW (weight decay 1e-4),
early stopping on validation SRCC, and test SRCC/PLCC. It exercises the pipeline; its numbers say
nothing about CLIP. The full protocol (LR grid, 15-crop test, 10 splits) is the training engine's job.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms as T

from .checkpoint import atomic_write_text
from .data.synthetic import generate_synthetic_iqa
from .losses import plcc_loss
from .metrics import regression_metrics
from .model import build_model, save_weights
from .transforms import CLIP_MEAN, CLIP_STD, load_rgb

TRAIN_TRANSFORM = T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomCrop(224),
                             T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])   # App. A.1 (IQA)
TEST_TRANSFORM = T.Compose([T.CenterCrop(224), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def split_by_reference(references: np.ndarray, seed: int, fractions=(0.6, 0.2, 0.2)) -> np.ndarray:
    """'train'/'val'/'test' per row; all images of one reference land in the same part."""
    unique = np.array(sorted(set(references)))
    np.random.default_rng(seed).shuffle(unique)
    n_train, n_val = round(fractions[0] * len(unique)), round(fractions[1] * len(unique))
    part = {ref: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, ref in enumerate(unique)}
    return np.array([part[r] for r in references])


def predict(model, images, batch_size: int = 32) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        batches = [model(torch.stack([TEST_TRANSFORM(im) for im in images[i:i + batch_size]]))
                   for i in range(0, len(images), batch_size)]
    return torch.cat(batches).squeeze(1).numpy()


def run_demo(out: str | Path, epochs: int = 8, patience: int = 3, lr: float = 1e-3, batch_size: int = 16,
             n_references: int = 10, seed: int = 0, log=print) -> dict:
    out = Path(out)
    start = time.time()
    torch.manual_seed(seed)
    table = generate_synthetic_iqa(out / "synthetic_iqa", n_references=n_references, seed=seed)
    images = [load_rgb(out / "synthetic_iqa" / p) for p in table["image"]]
    labels = table["synthetic_quality"].to_numpy(np.float32)
    part = split_by_reference(table["reference"].to_numpy(), seed)
    idx = {name: np.flatnonzero(part == name) for name in ("train", "val", "test")}
    log(f"synthetic IQA set: {len(table)} distorted images of {n_references} references "
        f"(train/val/test = {len(idx['train'])}/{len(idx['val'])}/{len(idx['test'])}); "
        f"labels are distortion levels, not human judgements")

    model = build_model(backbone="tiny_clip", pretrained=False)
    counts = model.parameter_counts()
    log(f"model: tiny_clip (random init) + LoRA r=16 alpha=8 on q,k,v + MLP head; "
        f"{counts['trainable']:,} trainable of {counts['total']:,} parameters")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    best, best_state, waited, history = -np.inf, None, 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(idx["train"])
        losses = []
        for i in range(0, len(order) - 1, batch_size):   # a PLCC batch needs >= 2 images
            batch = order[i:i + batch_size]
            x = torch.stack([TRAIN_TRANSFORM(images[j]) for j in batch])
            loss = plcc_loss(model(x).squeeze(1), torch.from_numpy(labels[batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val = regression_metrics(predict(model, [images[j] for j in idx["val"]]), labels[idx["val"]])
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_srcc": val["srcc"]})
        log(f"epoch {epoch:2d}  train PLCC-loss {np.mean(losses):.4f}  val SRCC {val['srcc']:.3f}")
        if val["srcc"] > best:
            best, waited = val["srcc"], 0
            best_state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                log(f"early stopping: no better validation SRCC for {patience} epochs")
                break
    model.load_state_dict(best_state, strict=False)
    test = regression_metrics(predict(model, [images[j] for j in idx["test"]]), labels[idx["test"]])
    result = {"best_val_srcc": best, "test": test, "history": history, "parameters": counts,
              "seconds": round(time.time() - start, 1),
              "note": "synthetic distortion levels and a random-initialised tiny encoder: a pipeline check, "
                      "not a reproduction of any paper number"}
    save_weights(model, out / "weights.safetensors")
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    log(f"test SRCC {test['srcc']:.3f}  PLCC (4-param logistic) {test['plcc_logistic']:.3f}  "
        f"in {result['seconds']} s -> {out / 'metrics.json'}")
    log("A random-initialised encoder has no perceptual prior, so low correlations are expected here; "
        "PerceptCLIP's premise is that CLIP's pretrained weights supply that prior.")
    return result
