"""What the prior's tower can learn within the pre-training's budget: ``python tools/prior_ceiling.py --out DIR``.

A research diagnostic, kept beside the package (not shipped in it), not a prior the demo uses. The image tower of :mod:`percept.engine.prior.pretrain`, the same data
stream (fresh appearances of the same scenes, batches of ``per_scene`` appearances of each content), optimiser,
schedule, steps and seed, trained *without captions*: a linear layer on the tower's embedding regresses the scene's
degradation parameters directly (:func:`parameter_targets`). It is no image–text pre-training, and it reads the
quantities the demo's labels are made of, so it only bounds what the tiny tower and the 30-minute budget allow:
the gap between it and the image–text prior is what the captions fail to teach. Writes the tower as the
pre-training does (``DIR/tiny_clip_prior.safetensors`` and its JSON record), so it can be evaluated the same way.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from percept.engine.prior import scenes
from percept.engine.prior.pretrain import (
    PretrainConfig,
    ScenePool,
    flip_and_normalise,
    image_tower,
    optimizer_and_schedule,
    save,
    take_step,
)
from percept.model.backbones import get_spec, shipped_weights_path

# (parameter, weakest, strongest) of the scenes' degradation ranges
RANGES = tuple((name, weakest, strongest) for name, (weakest, strongest) in scenes.DEGRADATION_RANGES.items())


def parameter_targets(scene: scenes.Scene) -> list[float]:
    """Presence of each degradation (0/1), then its strength: ``0.2 + 0.8 * t`` with ``t`` the position of its value
    between the weakest and the strongest of its range on a log scale (0 when absent)."""
    values = [getattr(scene, name) for name, _, _ in RANGES]
    strengths = [0.2 + 0.8 * math.log(v / weak) / math.log(strong / weak) if v else 0.0
                 for v, (_, weak, strong) in zip(values, RANGES)]
    return [float(bool(v)) for v in values] + strengths


def train_ceiling(config: PretrainConfig, out: str | Path | None = None, log=print) -> dict:
    """``config.steps`` steps of parameter regression (logistic loss on presence + 4 x squared error on strength)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        model = nn.ModuleDict({"image": image_tower(), "readout": nn.Linear(64, 2 * len(RANGES))})
        optimizer, schedule = optimizer_and_schedule(model, config)
        generator = torch.Generator().manual_seed(config.seed)
        pool = ScenePool(config.seed, config.n_scenes, config.image_size)
        losses, start = [], time.time()
        for step in range(config.steps):
            ids = torch.randperm(config.n_scenes, generator=generator)[:config.batch_size // config.per_scene].tolist()
            x, _, drawn = pool.batch(ids, step, config.per_scene)
            y = torch.tensor([parameter_targets(scene) for scene in drawn])
            out_ = model["readout"](model["image"](flip_and_normalise(x, generator)))
            k = len(RANGES)
            loss = (nn.functional.binary_cross_entropy_with_logits(out_[:, :k], y[:, :k])
                    + 4 * nn.functional.mse_loss(out_[:, k:], y[:, k:]))
            take_step(loss, model, optimizer, schedule, losses, step, config.steps, start, log)
        record = {"config": asdict(config), "objective": "degradation parameters (tools/prior_ceiling.py)",
                  "losses": losses, "seconds": round(time.time() - start, 1)}
        if out is not None:
            record.update(save(model["image"], out, record))
        record["image_tower"] = model["image"]
        return record
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/prior_ceiling.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the tower (never the shipped prior's folder)")
    parser.add_argument("--steps", type=int, default=PretrainConfig().steps)
    args = parser.parse_args(argv)
    shipped = shipped_weights_path(get_spec("tiny_clip_prior")).parent.resolve()   # the package's, wherever it is
    if Path(args.out).resolve() == shipped:
        parser.error(f"--out {args.out} is the shipped prior's folder; the ceiling is a diagnostic, write it elsewhere")
    train_ceiling(replace(PretrainConfig(), steps=args.steps), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
