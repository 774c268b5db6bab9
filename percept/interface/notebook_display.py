"""What the numbered notebooks display: captions that say what the data and the model are, dataset cards,
split counts, a run's log/config/metrics, example galleries, metric and parameter tables. Plots are in
:mod:`percept.study.figures` and :mod:`percept.study.analysis`; the paper-vs-ours block is :func:`percept.study.paper.show`."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

from ..data.cards import get_card, render_card_markdown
from ..data.sources import (
    SYNTHETIC_REFERENCES,
    SYNTHETIC_SPLITS,
    dataset_task,
    is_synthetic,
)
from ..data.splits import split_columns
from ..engine.runs import RunDir
from ..model.backbones import get_spec
from ..model.perceptclip import build_model
from ..study.analysis import gallery_images
from ..study.interpret import run_images
from ..study.paper import PAPER_DATASET_NAMES

DEMO_DESCRIPTIONS = {
    "synthetic_iqa": "IQA pipeline (PLCC loss, multi-crop test). Label `synthetic_quality` on 1..5 = "
                     "5 − 0.95·(level − 1) − a small per-type offset: a fixed function of the distortion level.",
    "synthetic_strength": "memorability pipeline (MSE loss, resize + centre crop). Label `distortion_strength` = "
                          "(level − 1) / 4 in [0, 1], in the range of a memorability score.",
    "synthetic_distortion": "emotion pipeline (cross-entropy, RandomResizedCrop). Label = the distortion *type*, "
                            "4 classes: gaussian_blur, gaussian_noise, jpeg, color_quantization.",
}


def caption(text: str, datasets, backbone: str, pretrained: bool = True) -> str:
    """A figure/table caption (markdown) that says what the data and the model are, briefly: the notebook's
    introduction says once what the demo data and prior are and what they can and cannot show."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    synthetic = [n for n in names if is_synthetic(n)]
    real = [PAPER_DATASET_NAMES.get(n, n) for n in names if not is_synthetic(n)]
    parts = []
    if synthetic:
        parts.append(f"demo data {', '.join(f'`{n}`' for n in synthetic)} (synthetic labels)")
    if real:
        parts.append(f"real dataset{'s' if len(real) > 1 else ''} {', '.join(real)} (human judgements)")
    model = f"`{backbone}` encoder, {'pretrained' if pretrained else 'random-initialised'}"
    if pretrained and get_spec(backbone).shipped_weights:     # the demo's own prior, shipped with percept
        model = f"`{backbone}`, the demo's own prior"
    return f"**{text}** Data: {'; '.join(parts)}. Model: {model}."


def dataset_markdown(dataset: str) -> str:
    """The dataset card (real dataset) or what the embedded demo set is (synthetic), as markdown."""
    if not is_synthetic(dataset):
        return render_card_markdown(get_card(dataset))
    return (f"### Embedded demo data: `{dataset}`\n\n"
            f"Procedural reference images (KADID-style) × 4 distortions (blur, noise, JPEG, colour "
            f"quantisation) × 5 levels; by default {SYNTHETIC_REFERENCES} references = "
            f"{SYNTHETIC_REFERENCES * 20} images, generated offline and deterministically on first use "
            f"(`percept.data.synthetic`). {DEMO_DESCRIPTIONS[dataset]}\n\n"
            f"**These labels are computed from the distortion parameters; they are not human judgements.** "
            f"Numbers on this set check the pipeline; they say nothing about the paper's results. "
            f"{SYNTHETIC_SPLITS} splits, by reference image (no reference in two parts).")


def split_counts(source) -> pd.DataFrame:
    """Images per part (rows) and split (columns) of a :class:`~percept.data.sources.DatasetSource`."""
    columns = split_columns(source.frame)
    table = pd.DataFrame({c: source.frame[c].value_counts() for c in columns}).fillna(0).astype(int)
    order = [p for p in ("train", "val", "test") if p in table.index] + \
        [p for p in table.index if p not in ("train", "val", "test")]
    return table.loc[order].rename_axis("part")


def read_log(run_dir) -> pd.DataFrame:
    """A run's per-epoch ``log.csv``."""
    return RunDir(run_dir).read_log()


def read_config(run_dir) -> dict:
    """A run's ``config.json``."""
    return RunDir(run_dir).read_config()


def read_metrics(run_dir) -> dict:
    """A run's ``metrics.json``."""
    return RunDir(run_dir).read_metrics()


def run_datasets(run_dir) -> list[str]:
    """The datasets a run was trained on."""
    return [d["dataset"] for d in read_config(run_dir)["data"]]


def run_task(run_dir) -> str:
    """The task (``iqa``, ``memorability``, ``emotion``) of a run's (first) dataset."""
    return dataset_task(run_datasets(run_dir)[0])


def run_caption(text: str, run_dir) -> str:
    """:func:`caption` for the data and model of a run directory."""
    config = read_config(run_dir)
    return caption(text, run_datasets(run_dir), config["model"]["backbone"], config["model"]["pretrained"])


def score_titles(scores: pd.DataFrame) -> list[str]:
    """Gallery captions for :func:`percept.engine.predict.predict_images` output (score or predicted class)."""
    value = scores["score"].map("score {:.3f}".format) if "score" in scores else "class " + scores["prediction"]
    return [f"{Path(p).stem}\n{v}" for p, v in zip(scores["image"], value)]


def examples(source, split: int = 1, n: int = 8, part: str = "test"):
    """(PIL images, captions) of ``n`` images of a source's split part, spread evenly over the label range."""
    rows = source.frame[source.frame[f"split{split}"] == part].sort_values([source.label_column, "image"],
                                                                           kind="mergesort")
    if len(rows) > n:
        rows = rows.iloc[[round(i * (len(rows) - 1) / (n - 1)) for i in range(n)]] if n > 1 else rows.head(1)
    labels = rows[source.label_column]
    captions = [f"{source.class_names[int(v)]}" if source.class_names else f"label {v:.2f}" for v in labels]
    return gallery_images(rows["image"].tolist(), source.root), captions


def metrics_table(metrics: Mapping, part: str = "test", digits: int = 4) -> pd.DataFrame:
    """``metrics.json`` of a run (or a dict with it) as a table: rows = datasets, columns = metrics."""
    table = pd.DataFrame(metrics[part]).T.rename_axis("dataset")
    if "n_images" in table.columns:
        table["n_images"] = table["n_images"].astype(int)
    return table.round(digits)


def sample_images(run_dir, n: int = 8, part: str = "test", dataset: str | None = None):
    """(images (n, 3, H, W) normalised, ids, labels) from a run's dataset with its test transform — single
    crops (an IQA item's first crop) as :mod:`percept.study.interpret` expects — normalised with the run's backbone
    statistics (plot them with ``denormalize=config["model"]["backbone"]``): :func:`percept.study.interpret.run_images`."""
    return run_images(read_config(run_dir), dataset=dataset, part=part, n=n)


def parameter_table(backbone: str = "tiny_clip", strategies: Sequence[str] = ("lora", "frozen", "full"),
                    head_types: Sequence[str] = ("mlp",), outputs: int = 1, meta: bool = True) -> pd.DataFrame:
    """Parameter counts per (strategy, head type) of ``backbone`` (random weights). ``meta=True`` builds on
    PyTorch's meta device: exact counts, no memory, about a second even for ViT-L/14."""
    rows = []
    for strategy in strategies:
        for head_type in head_types:
            with torch.device("meta") if meta else contextlib.nullcontext():
                model = build_model(backbone=backbone, pretrained=False, strategy=strategy, head_type=head_type,
                                    heads={"main": outputs})
            counts = model.parameter_counts()
            rows.append({"backbone": backbone, "strategy": strategy, "head_type": head_type, "lora": counts["lora"],
                         "head_params": counts["heads"], "trainable": counts["trainable"], "total": counts["total"]})
            del model
    table = pd.DataFrame(rows)
    table["trainable %"] = (100 * table["trainable"] / table["total"]).round(3)
    return table
