"""The offline demo: PerceptCLIP's IQA protocol, end to end, on embedded synthetic data, on CPU, in minutes.

It is one call of the training engine (:func:`percept.engine.train.train`) with the paper's protocol pieces —
LoRA (r=16, alpha=8) on q, k, v + the MLP head, PLCC loss, AdamW (weight decay 1e-4), early stopping on
validation SRCC with the best epoch kept, 15-crop test-time averaging — on:

* the procedurally generated KADID-style set (``synthetic_iqa``, :mod:`percept.data.synthetic`): its
  labels are *distortion levels*, not human judgements; split by reference image (no reference in
  two parts, as for synthetic IQA datasets, paper §4.1);
* the demo's own image-text prior, ``tiny_clip_prior`` (no weights can be downloaded offline): a tiny CLIP-style
  image tower pre-trained by :mod:`percept.engine.prior.pretrain` on generated images and generated captions — no human
  judgement anywhere — shipped with percept (``percept/engine/prior/weights``) and loaded like a hub checkpoint.

It shows the paper's recipe in miniature; its numbers say nothing about CLIP or about human perception. ``make demo`` runs the notebooks, which
build on the same engine.
"""
from __future__ import annotations

from pathlib import Path

from ..data.preprocessing import N_TEST_CROPS
from ..data.sources import DataConfig
from ..engine.presets import preset_config
from ..engine.train import TrainConfig, train


def demo_config(out: str | Path, epochs: int | None = None, seed: int = 0, quiet: bool = False) -> TrainConfig:
    """The ``demo`` preset (:mod:`percept.engine.presets`) on the generated set, with the paper's 15 IQA test crops
    (the notebooks keep the preset's 3: they train many runs)."""
    budget = {} if epochs is None else {"max_epochs": epochs}     # None: the preset's
    return preset_config("demo", [DataConfig("synthetic_iqa", str(Path(out) / "synthetic"))], test_crops=N_TEST_CROPS,
                         seed=seed, quiet=quiet, **budget)


def run_demo(out: str | Path, epochs: int | None = None, seed: int = 0, log=print) -> dict:
    """Train the demo run into ``out/run`` (the synthetic set is generated in ``out/synthetic``)."""
    config = demo_config(out, epochs, seed, quiet=log is None)
    log = log or (lambda *a, **k: None)
    log("synthetic IQA set (KADID-style; labels are distortion levels, not human judgements), the demo's tiny "
        "image-text prior (pre-trained on generated images and captions) + LoRA: the recipe in miniature, not a "
        "paper result")
    return train(config, Path(out) / "run", log=log)
