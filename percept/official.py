"""Load the authors' released PerceptCLIP checkpoints into a percept model.

The release (Hugging Face hub: ``PerceptCLIP/PerceptCLIP_IQA``, ``_Memorability``, ``_Emotions``) ships
a pickled state dict of its ``clip_lora_model`` (transformers 4.45 ``CLIPVisionModel`` + peft 0.14):

* ``model.base_model.model.{embeddings.*, pre_layrnorm.*, encoder.layers.N.*, post_layernorm.*}`` — the
  CLIP vision transformer with peft LoRA on ``self_attn.{q,k,v}_proj`` (``base_layer`` + ``lora_A/B``);
* ``proj.weight`` — CLIP's visual projection (no bias);
* ``mlp.fc1/fc2/fc3.{weight,bias}`` — the MLP head.

Forward = post-layernorm CLS (``pooler_output``) → ``proj`` → ``mlp``. We map it onto a timm encoder with
split q/k/v attention (same function), inferring the architecture from tensor shapes (head dim 64 as in
CLIP). LoRA's alpha is not stored in the weights; the release uses ``lora_alpha=8`` (scaling alpha/r).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from .checkpoint import CheckpointMismatch, check_state_dict, torch_load_weights
from .metrics import EMOSET_CLASSES
from .model import ModelConfig, PerceptCLIP

PREFIX = "model.base_model.model."


@dataclass(frozen=True)
class OfficialCheckpoint:
    repo_id: str
    filename: str
    task: str
    trained_on: str
    outputs: str
    labels: tuple[str, ...] | None = None


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    "iqa": OfficialCheckpoint(
        "PerceptCLIP/PerceptCLIP_IQA", "perceptCLIP_IQA.pth", "iqa", "KonIQ-10k (PLCC loss, lr 5e-5)",
        "one quality score per image; higher = better quality. Trained with a correlation (PLCC) loss, so "
        "only its order and linear relation to MOS are meaningful, not its scale."),
    "memorability": OfficialCheckpoint(
        "PerceptCLIP/PerceptCLIP_Memorability", "perceptCLIP_Memorability.pth", "memorability",
        "LaMem (MSE loss)", "one memorability score per image on LaMem's scale (fraction of repeat "
        "detections, roughly 0.4-1.0); higher = more memorable."),
    "emotions": OfficialCheckpoint(
        "PerceptCLIP/PerceptCLIP_Emotions", "perceptCLIP_Emotions.pth", "emotion",
        "EmoSet (cross-entropy, lr 1e-4)", "8 logits in EmoSet's info.json order; softmax gives class "
        "probabilities; the first four classes are positive valence.", EMOSET_CLASSES),
}
ALIASES = {**{f"official-{k}": k for k in OFFICIAL_CHECKPOINTS},
           **{c.repo_id: k for k, c in OFFICIAL_CHECKPOINTS.items()}, **{k: k for k in OFFICIAL_CHECKPOINTS}}

# official key (after PREFIX) -> timm key; "{i}" is the layer index
_KEY_MAP = [
    (r"embeddings\.patch_embedding\.weight", "patch_embed.proj.weight"),
    (r"embeddings\.class_embedding", "cls_token"),
    (r"embeddings\.position_embedding\.weight", "pos_embed"),
    (r"pre_layrnorm\.(weight|bias)", r"norm_pre.\1"),
    (r"post_layernorm\.(weight|bias)", r"norm.\1"),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(.+)", r"blocks.\1.attn.\2.\3"),
]


def resolve_official(source: str) -> tuple[str, OfficialCheckpoint]:
    """Map a name (``iqa``, ``official-iqa``, ``PerceptCLIP/PerceptCLIP_IQA``) to its checkpoint card."""
    if source not in ALIASES:
        raise ValueError(f"{source!r} is neither an existing file nor an official checkpoint; "
                         f"known names: {sorted(ALIASES)}")
    key = ALIASES[source]
    return key, OFFICIAL_CHECKPOINTS[key]


def download_official(source: str) -> Path:
    """Download (or find in the HF cache) an official checkpoint file."""
    _, card = resolve_official(source)
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(card.repo_id, card.filename))
    except Exception as err:
        raise RuntimeError(
            f"could not fetch {card.filename} from the Hugging Face hub repo {card.repo_id!r} "
            f"({type(err).__name__}: {err}). Without internet: on a connected machine run "
            f"`huggingface-cli download {card.repo_id} {card.filename}` and pass the file's path "
            f"to load_official(path).") from err


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """Architecture of an official state dict, from tensor shapes alone."""
    def get(key):
        if key not in state:
            raise CheckpointMismatch(f"official checkpoint lacks {key!r}; is this a PerceptCLIP .pth state dict?")
        return state[key]

    width = get(PREFIX + "embeddings.class_embedding").shape[0]
    patch = get(PREFIX + "embeddings.patch_embedding.weight").shape[-1]
    positions = get(PREFIX + "embeddings.position_embedding.weight").shape[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise CheckpointMismatch(f"{positions} position embeddings is not 1 + a square grid")
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(PREFIX) + r"encoder\.layers\.(\d+)\.", k)))
    mlp_width = get(PREFIX + "encoder.layers.0.mlp.fc1.weight").shape[0]
    lora_key = PREFIX + "encoder.layers.0.self_attn.q_proj.lora_A.default.weight"
    return {
        "width": width, "patch_size": patch, "img_size": grid * patch, "depth": layers,
        "num_heads": width // 64, "mlp_ratio": mlp_width / width,
        "proj_dim": get("proj.weight").shape[0],
        "lora_r": get(lora_key).shape[0],
        "head_hidden": (get("mlp.fc1.weight").shape[0], get("mlp.fc2.weight").shape[0]),
        "outputs": get("mlp.fc3.weight").shape[0],
    }


def convert_official_state_dict(state: Mapping[str, torch.Tensor], head: str = "main") -> dict[str, torch.Tensor]:
    """Rename official keys to percept keys (LoRA-wrapped encoder + head ``head``)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue   # a buffer of token indices, not a weight
        if key == "proj.weight":
            out["encoder.base_model.model.head.weight"] = value
            out["encoder.base_model.model.head.bias"] = torch.zeros(value.shape[0], dtype=value.dtype)
        elif key.startswith("mlp."):
            out[f"heads.{head}.{key[len('mlp.'):]}"] = value
        elif key.startswith(PREFIX):
            for pattern, target in _KEY_MAP:
                if (m := re.fullmatch(pattern, key[len(PREFIX):])):
                    new = m.expand(target)
                    if new == "cls_token":
                        value = value.reshape(1, 1, -1)
                    elif new == "pos_embed":
                        value = value.unsqueeze(0)
                    out["encoder.base_model.model." + new] = value
                    break
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointMismatch(f"unexpected keys in official checkpoint: {unknown[:8]}"
                                 + (f" ... ({len(unknown)} in all)" if len(unknown) > 8 else ""))
    return out


def load_official(source: str | os.PathLike | Mapping[str, torch.Tensor], lora_alpha: float = 8) -> PerceptCLIP:
    """An official PerceptCLIP checkpoint as a percept model in eval mode.

    ``source``: a path to the ``.pth`` file, a state dict, or a hub name (``PerceptCLIP/PerceptCLIP_IQA``,
    ``official-iqa``, ``memorability``, ...). ``model(images)`` equals the official model's output;
    ``model.official`` holds the checkpoint's card (task, labels, score meaning) when known.
    """
    card = None
    if isinstance(source, Mapping):
        state, name = dict(source), "<state dict>"
    elif Path(source).is_file():
        state, name = torch_load_weights(source), os.fspath(source)
        card = next((c for c in OFFICIAL_CHECKPOINTS.values() if c.filename == Path(source).name), None)
    else:
        _, card = resolve_official(os.fspath(source))
        path = download_official(os.fspath(source))
        state, name = torch_load_weights(path), os.fspath(path)

    arch = infer_architecture(state)
    standard = (arch["width"], arch["depth"], arch["patch_size"], arch["img_size"], arch["proj_dim"]) == (1024, 24, 14, 224, 768)
    config = ModelConfig(
        backbone="clip_vit_l14", pretrained=False, strategy="lora", head="mlp",
        heads={"main": arch["outputs"]}, lora_r=arch["lora_r"], lora_alpha=lora_alpha,
        head_hidden=arch["head_hidden"],
        backbone_kwargs={} if standard else {
            "embed_dim": arch["width"], "depth": arch["depth"], "num_heads": arch["num_heads"],
            "mlp_ratio": arch["mlp_ratio"], "patch_size": arch["patch_size"], "img_size": arch["img_size"],
            "num_classes": arch["proj_dim"]})
    model = PerceptCLIP(config)
    converted = convert_official_state_dict(state)
    check_state_dict(model, converted, source=name, what="official PerceptCLIP checkpoint")
    model.load_state_dict(converted)
    model.official = card
    return model.eval()
