"""Score your own images with a trained run or an official PerceptCLIP checkpoint (``percept predict``).

* a run directory (``best.safetensors`` + ``config.json``): exactly the test transform evaluation uses for
  the run's (first) dataset and backbone (:func:`percept.data.sources.dataset_transform`): the dataset's
  LoDa pre-resize for IQA (e.g. KonIQ-10k's 512x384), then the mean over 15 deterministic random crops
  keyed by the file's base name (App. A.1; the same crops evaluation takes of that file), or for
  memorability/emotion resize + centre crop; normalised with the backbone's mean/std. The dataset's
  files are not needed;
* ``official-iqa`` / ``official-memorability`` / ``official-emotions`` (or a path to an official
  ``.pth``): the release's preprocessing (resize 224, centre crop, CLIP normalisation).

Output: one row per image: ``image``, ``score`` (regression) or ``prediction`` + ``prob_<class>``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from .runs import RunDir
from .tasks import get_task
from .data.preprocessing import center_crop_transform
from .images import load_rgb


def _run_predictor(run: RunDir):
    from .data.cards import CARDS
    from .data.sources import SYNTHETIC, dataset_transform

    config = run.read_config()
    first = config["data"][0]["dataset"]
    task, classes = (SYNTHETIC[first][0], SYNTHETIC[first][2]) if first in SYNTHETIC else \
        (CARDS[first].task, CARDS[first].classes)
    model = run.load_model()
    transform = dataset_transform(first, train=False, test_crops=int(config.get("test_crops", 15)),
                                  normalization=model.normalization)   # what evaluation of the run uses
    return model, first, get_task(task).kind, classes, transform


def _official_predictor(source: str):
    from .official import load_official
    model = load_official(source)
    card = model.official
    kind = "classification" if card is not None and card.labels else "regression"
    mean, std = model.normalization                                  # CLIP ViT-L/14: CLIP's statistics
    return model, "main", kind, (card.labels if card is not None else None), center_crop_transform(mean=mean, std=std)


def load_predictor(model: str | os.PathLike):
    """(model, head_name, kind, class names, transform) for a run directory or an official checkpoint name/file."""
    path = Path(model)
    if path.is_dir():
        run = RunDir(path)
        run.require_weights()
        return _run_predictor(run)
    return _official_predictor(os.fspath(model))


@torch.no_grad()
def predict_images(images: list[str | os.PathLike], model: str | os.PathLike = "official-iqa",
                   device: str = "auto", batch_size: int = 8) -> pd.DataFrame:
    """Scores for ``images`` (files) with ``model`` (a run directory or an official checkpoint)."""
    from .evaluate import reduce_crops
    from .runtime import autocast, resolve_device
    paths = [Path(p) for p in images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {', '.join(missing[:5])}")
    net, head_name, kind, classes, transform = load_predictor(model)
    device, precision = resolve_device(device)
    net = net.to(device).eval()
    rows = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        views = []
        for p in chunk:
            image = load_rgb(p)
            x = transform(image, key=p) if getattr(transform, "needs_key", False) else transform(image)   # base name
            views.append(x if x.ndim == 4 else x.unsqueeze(0))
        n_views = views[0].shape[0]
        x = torch.cat(views).to(device)
        with autocast(device, precision):
            out = net(x, head_name).float().reshape(len(chunk), n_views, -1)
        reduced = reduce_crops(out, kind)
        for i, p in enumerate(chunk):
            if kind == "classification":
                probs = reduced["probs"][i]
                names = classes or [str(c) for c in range(len(probs))]
                rows.append({"image": str(p), "prediction": names[int(reduced["prediction"][i])],
                             **{f"prob_{c}": float(v) for c, v in zip(names, probs)}})
            else:
                rows.append({"image": str(p), "score": float(reduced["prediction"][i])})
    return pd.DataFrame(rows)
