"""The offline demo: PerceptCLIP's IQA protocol, end to end, on embedded synthetic data, on CPU, in minutes.

It is one call of the training engine (:func:`percept.train.train`) with the paper's protocol pieces —
LoRA (r=16, alpha=8) on q, k, v + the MLP head, PLCC loss, AdamW (weight decay 1e-4), early stopping on
validation SRCC with the best epoch kept, 15-crop test-time averaging — on:

* the procedurally generated KADID-style set (``synthetic_iqa``, :mod:`percept.data.synthetic`): its
  labels are *distortion levels*, not human judgements; split by reference image (no reference in
  two parts, as for synthetic IQA datasets, paper §4.1);
* a ``tiny_clip`` encoder with random weights (no weights can be downloaded offline).

It exercises the pipeline; its numbers say nothing about CLIP. ``make demo`` runs the notebooks, which
build on the same engine.
"""
from __future__ import annotations

from pathlib import Path

from .data.sources import DataConfig
from .model import ModelConfig
from .train import TrainConfig, train


def demo_config(out: str | Path, epochs: int = 8, seed: int = 0, quiet: bool = False) -> TrainConfig:
    return TrainConfig(data=[DataConfig("synthetic_iqa", str(Path(out) / "synthetic"))],
                       model=ModelConfig(backbone="tiny_clip", pretrained=False), lr=1e-3, batch_size=16,
                       max_epochs=epochs, patience=3, seed=seed, quiet=quiet)


def run_demo(out: str | Path, epochs: int = 8, seed: int = 0, log=print) -> dict:
    """Train the demo run into ``out/run`` (the synthetic set is generated in ``out/synthetic``)."""
    config = demo_config(out, epochs, seed, quiet=log is None)
    log = log or (lambda *a, **k: None)
    log("synthetic IQA set (KADID-style; labels are distortion levels, not human judgements), tiny random-"
        "initialised encoder: a pipeline check, not a paper result")
    result = train(config, Path(out) / "run", log=log)
    log("A random-initialised encoder has no perceptual prior, so low correlations are expected here; "
        "PerceptCLIP's premise is that CLIP's pretrained weights supply that prior.")
    return result
