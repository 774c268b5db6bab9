"""Pre-train the demo's tiny image-text prior: ``python -m percept.engine.prior.pretrain --out DIR``.

CLIP's recipe in miniature (Radford et al., 2021): an image tower (``tiny_clip_prior``: a conv-stem tiny
ViT with a 64-d projection, :mod:`percept.model.backbones`) and a text tower (:mod:`percept.engine.prior.text`) trained
with the symmetric contrastive loss on generated images and their generated captions
(:mod:`percept.engine.prior.scenes`; a batch's pairs with identical captions all count as positives). A batch holds
four appearances of each of its contents; from ``ladders_from`` of the run on, every ``ladder_every``-th content
shows a strength ladder instead (one degradation, clean and at each of its strength words: hard negatives that
differ only in strength; every other content measured better than every content). AdamW,
linear warm-up then cosine decay, random horizontal flips. Deterministic: seeded data, seeded batches, a
fixed number of CPU threads. Beside the contrastive loss, a caption loss (weight ``caption_loss``): a linear layer on
the image embedding predicts the caption's appearance words (:func:`percept.engine.prior.text.appearance_targets`), CoCa's
pairing of a contrastive and a captioning loss (Yu et al. 2022) restricted to the perceptual words; we measured
it lifting the demo's IQA from 0.675 to 0.811 (five-split means), where CLIP's loss alone (``caption_loss`` 0) left the
mild degradations unlearnt. ``crop_margin`` (random placement of the JPEG block grid) was measured and is not used.
``tools/prior_ceiling.py`` (beside the package) trains the same tower on the degradation parameters instead of captions: what the tower
and budget allow.

Writes ``DIR/tiny_clip_prior.safetensors`` (the image tower, timm layout, fp16) and
``DIR/tiny_clip_prior.json`` (the config, the loss of every step, the SHA-256 of the weights file, the
linear probe, the environment). ``percept.model.backbones`` loads the pair as ``tiny_clip_prior`` with
``pretrained=True``.

:func:`linear_probe` measures what the prior knows before any fine-tuning: ridge regression from frozen
features to the demo's synthetic quality (split 1 of ``synthetic_iqa``), test SRCC.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save as safetensors_save
from torch import nn

from ...core.files import atomic_write_bytes, atomic_write_text
from ...data.sources import DataConfig, open_source
from ...model.backbones import get_spec, normalization
from . import scenes
from .text import APPEARANCE_LABELS, TextTower, Tokenizer, appearance_targets

BACKBONE = "tiny_clip_prior"
WEIGHTS_FILE = "tiny_clip_prior.safetensors"


@dataclass
class PretrainConfig:
    n_scenes: int = 4000           # contents; every step draws fresh appearances of them (ScenePool)
    per_scene: int = 4             # appearances of one content per batch (hard negatives for the perceptual words)
    steps: int = 4200
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    image_size: int = 224
    crop_margin: int = 0           # > 0: scenes drawn (and degraded) this much larger, cropped at a random place
    threads: int = 2
    text_width: int = 64
    text_layers: int = 2
    ladders_from: float = 0.3      # from this fraction of the steps on (1.0: never), every ladder_every-th scene
    ladder_every: int = 2          # of a batch is a strength ladder (scenes.make_ladder_rung; needs per_scene 4)
    caption_loss: float = 10.0     # weight of the prediction of the caption's appearance words (0: CLIP's loss alone)


class ScenePool:
    """The undegraded images of scenes ``0..n-1`` of set ``seed``, drawn on first use and kept; a batch gives
    each of its scenes ``per_scene`` *fresh* appearances (variants ``per_scene * step + v``: new degradations,
    noise and caption at every step). The contents repeat across the run, the appearances never do, so the
    towers cannot memorise an image's caption; they have to read the blur, noise and compression. (With a fixed
    set of degraded images, we measured a run's features telling them apart on held-out scenes no better
    than random features.)"""

    def __init__(self, seed: int, n: int, size: int):
        self.seed, self.n, self.size = seed, n, size
        self.content: dict[int, Image.Image] = {}

    def batch(self, scene_ids: list[int], step: int, per_scene: int = 4, ladders: int = 0
              ) -> tuple[torch.Tensor, list[str], list[scenes.Scene]]:
        """(per_scene * len(scene_ids), 3, H, W) uint8 images, their captions and parameters: every scene's variant
        ``per_scene * step``, then every scene's variant ``per_scene * step + 1``, ... With ``ladders`` = k > 0,
        every k-th scene of ``scene_ids`` (positions k-1, 2k-1, ...) shows the rungs of a strength ladder instead
        (:func:`scenes.make_ladder_rung`: one degradation, clean then at each of its strength words)."""
        if ladders and per_scene != scenes.LADDER_RUNGS:
            raise ValueError(f"strength ladders have {scenes.LADDER_RUNGS} rungs; per_scene is {per_scene}")
        images, captions, drawn = [], [], []
        for v in range(per_scene):
            for position, index in enumerate(scene_ids):
                if index not in self.content:
                    self.content[index] = scenes.draw_scene_content(self.seed, index, self.size)
                variant = per_scene * step + v
                if ladders and position % ladders == ladders - 1:
                    image, text, scene = scenes.make_ladder_rung(self.content[index], self.seed, index, step, v,
                                                                 variant)
                else:
                    image, text, scene = scenes.make_variant(self.content[index], self.seed, index, variant)
                images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
                captions.append(text)
                drawn.append(scene)
        return torch.stack(images), captions, drawn


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A ``size`` x ``size`` crop of every image at a random place (offsets from ``generator``): the pre-training's
    ``crop_margin`` option, not used by the shipped prior. The demo crops its images anywhere, so the JPEG 8x8 block
    grid falls anywhere in the tower's 32-px patches, while the shipped prior only ever saw blocks aligned with its
    patches, and sees compression much better there (measured: JPEG level SRCC 0.74 on aligned demo crops, 0.44 on
    misaligned ones). Random placement narrowed that gap but made the demo worse (docs/prior.md, "The demo's own prior")."""
    margin_y, margin_x = images.shape[-2] - size, images.shape[-1] - size
    if margin_y < 0 or margin_x < 0:
        raise ValueError(f"images of {tuple(images.shape[-2:])} pixels are smaller than the crop size {size}")
    ys = torch.randint(0, margin_y + 1, (len(images),), generator=generator).tolist()
    xs = torch.randint(0, margin_x + 1, (len(images),), generator=generator).tolist()
    return torch.stack([image[:, y:y + size, x:x + size] for image, y, x in zip(images, ys, xs)])


def flip_and_normalise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The pre-training's augmentation of a uint8 batch: a horizontal flip of each image with probability 1/2 (draws
    from ``generator``), then the backbone's normalisation, as float."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in get_spec(BACKBONE).normalization)
    flip = torch.rand(len(images), generator=generator) < 0.5
    return (torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images).float() - mean) / std


def image_tower() -> nn.Module:
    """The image tower in timm's own layout (fused qkv), as the shipped file stores it."""
    spec = get_spec(BACKBONE)
    return timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                     caption_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch; pairs with the same caption are all positives (uniform targets)."""
    logits = scale * nn.functional.normalize(image, dim=-1) @ nn.functional.normalize(text, dim=-1).T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-targets * logits.log_softmax(1), 1).mean()
                  + torch.sum(-targets * logits.T.log_softmax(1), 1).mean())


def optimizer_and_schedule(model: nn.Module, config: PretrainConfig, extra: list[nn.Parameter] = ()):
    """AdamW (weight decay on matrices, none on biases, norms, positions and ``extra``) and the schedule: linear
    warm-up over ``config.warmup`` steps, then cosine decay to 0 at ``config.steps``."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "position" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "position" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest + list(extra), "weight_decay": 0.0}], lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / config.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / config.steps))))
    return optimizer, schedule


def take_step(loss: torch.Tensor, model: nn.Module, optimizer, schedule, losses: list[float], step: int, steps: int,
              start: float, log) -> None:
    """Back-propagate ``loss`` (the gradient norm of ``model`` clipped at 1), step the optimiser and the schedule,
    append the loss to ``losses`` and log the mean of the last 100 every 100 steps."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    losses.append(round(float(loss.detach()), 6))
    if step % 100 == 0 or step == steps - 1:
        log(f"step {step:5d}  loss {np.mean(losses[-100:]):.4f}  ({time.time() - start:.0f} s)")


def pretrain(config: PretrainConfig, out: str | Path | None = None, log=print, stop_after: int | None = None) -> dict:
    """Train (``config.steps`` steps) and, with ``out``, write the weights and their record; returns the record
    (``losses``: the loss of every step). ``stop_after``: replay only the first steps (the schedule is still
    the full run's), as the test that compares them with the recorded curve does. Runs on ``config.threads``
    CPU threads (part of what makes it deterministic) and restores the caller's thread count."""
    if config.batch_size % config.per_scene:
        raise ValueError(f"batch_size {config.batch_size} is not a multiple of per_scene {config.per_scene}")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _pretrain(config, out, log, stop_after)
    finally:
        torch.set_num_threads(threads)


def _pretrain(config: PretrainConfig, out, log, stop_after) -> dict:
    torch.manual_seed(config.seed)
    pool = ScenePool(config.seed, config.n_scenes, config.image_size + config.crop_margin)
    tokenizer = Tokenizer()
    towers = nn.ModuleDict({"image": image_tower(), "text": TextTower(len(tokenizer.words), config.text_width,
                                                                      config.text_layers, out_dim=64)})
    if config.caption_loss:     # (created after the towers: without it, the random stream is that of CLIP's loss alone)
        towers["words"] = nn.Linear(64, len(APPEARANCE_LABELS))
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    optimizer, schedule = optimizer_and_schedule(towers, config, extra=[log_scale])
    generator = torch.Generator().manual_seed(config.seed)
    losses, start = [], time.time()
    towers.train()
    for step in range(config.steps if stop_after is None else min(stop_after, config.steps)):
        scene_ids = torch.randperm(config.n_scenes, generator=generator)[:config.batch_size // config.per_scene]
        x, captions, _ = pool.batch(scene_ids.tolist(), step, config.per_scene,
                                 ladders=config.ladder_every if step >= config.ladders_from * config.steps else 0)
        if config.crop_margin:        # (no random numbers drawn without a margin: the shipped run had none)
            x = random_crops(x, config.image_size, generator)
        x = flip_and_normalise(x, generator)
        _, caption_ids = np.unique(np.array(captions), return_inverse=True)
        image = towers["image"](x)
        loss = contrastive_loss(image, towers["text"](tokenizer(captions)), log_scale.exp().clamp(max=100),
                                torch.from_numpy(caption_ids))
        if config.caption_loss:
            loss = loss + config.caption_loss * nn.functional.binary_cross_entropy_with_logits(
                towers["words"](image), appearance_targets(captions))
        take_step(loss, towers, optimizer, schedule, losses, step, config.steps, start, log)
    record = {"config": asdict(config), "losses": losses, "seconds": round(time.time() - start, 1),
              "environment": {"torch": torch.__version__, "python": platform.python_version(),
                              "machine": platform.machine(), "threads": config.threads,
                              # the CPU kernels torch dispatches to (AVX2, AVX512, ...): summation order differs
                              "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    if out is not None:
        record.update(save(towers["image"], out, record))
    record["image_tower"] = towers["image"]
    return record


def save(tower: nn.Module, out: str | Path, record: dict) -> dict:
    """Write the image tower (fp16, timm layout) and its JSON record (with the file's SHA-256) atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # one metadata key: safetensors writes its metadata map in hash order, so two keys made the same weights
    # give files with different bytes (and SHA-256) from one run to the next (the backbone is in the record)
    data = safetensors_save({k: v.detach().to(torch.float16).contiguous() for k, v in tower.state_dict().items()},
                metadata={"format": "pt"})
    atomic_write_bytes(out / WEIGHTS_FILE, data)
    extra = {"sha256": hashlib.sha256(data).hexdigest(), "weights": WEIGHTS_FILE}
    atomic_write_text((out / WEIGHTS_FILE).with_suffix(".json"),
                      json.dumps({**{k: v for k, v in record.items() if k != "image_tower"}, **extra}, indent=1))
    return extra


@torch.no_grad()
def linear_probe(model: nn.Module, data_root: str | Path, backbone: str = BACKBONE, split: int = 1) -> float:
    """Test SRCC of ridge regression (sklearn ``RidgeCV``) from ``model``'s frozen features to the demo's
    synthetic quality: trained on split ``split``'s train+val images, tested on its test images (one
    centre-ish IQA crop each)."""
    from scipy.stats import spearmanr            # scipy and sklearn: the linear probe alone needs them
    from sklearn.linear_model import RidgeCV     # (they add seconds to importing the pre-training)

    source = open_source(DataConfig("synthetic_iqa", str(data_root)))
    model.eval()
    features = {}
    for part in ("train", "val", "test"):
        items = source.dataset(split, part, train_transform=False, test_crops=1, normalization=normalization(backbone))
        x = torch.stack([items[i]["image"][0] for i in range(len(items))])
        features[part] = (torch.cat([model(x[i:i + 64]) for i in range(0, len(x), 64)]).numpy(), items.labels)
    train_x = np.concatenate([features["train"][0], features["val"][0]])
    train_y = np.concatenate([features["train"][1], features["val"][1]])
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(train_x, train_y)
    return float(spearmanr(ridge.predict(features["test"][0]), features["test"][1])[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m percept.engine.prior.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "weights"),
                        help="folder for tiny_clip_prior.safetensors and .json (default: the shipped ones)")
    for name, value in asdict(PretrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--probe-data", default=None, help="folder for the demo's synthetic_iqa set (linear probe)")
    args = parser.parse_args(argv)
    config = PretrainConfig(**{k: getattr(args, k) for k in asdict(PretrainConfig())})
    record = pretrain(config, args.out)
    if args.probe_data:
        torch.manual_seed(0)
        probe = {"prior": linear_probe(record["image_tower"], args.probe_data),
                 "random_init": linear_probe(image_tower(), args.probe_data)}
        print(f"linear probe, synthetic_iqa split 1 test SRCC: {probe}")
        path = Path(args.out) / WEIGHTS_FILE
        sidecar = json.loads(path.with_suffix(".json").read_text())
        sidecar["linear_probe_srcc"] = probe
        atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
