"""Load the authors' released PerceptCLIP checkpoints into a percept model.

The release (Hugging Face hub: ``PerceptCLIP/PerceptCLIP_IQA``, ``_Memorability``, ``_Emotions``) ships
a pickled state dict of its ``clip_lora_model`` (transformers 4.45 ``CLIPVisionModel`` + peft 0.14):

* ``model.base_model.model.{embeddings.*, pre_layrnorm.*, encoder.layers.N.*, post_layernorm.*}`` — the
  CLIP vision transformer with peft LoRA on ``self_attn.{q,k,v}_proj`` (``base_layer`` + ``lora_A/B``);
* ``proj.weight`` — CLIP's visual projection (no bias);
* ``mlp.fc1/fc2/fc3.{weight,bias}`` — the MLP head.

Forward = post-layernorm CLS (``pooler_output``) → ``proj`` → ``mlp``. We map it onto a timm encoder with
split q/k/v attention (same function), inferring the architecture from tensor shapes (head dim 64 as in
CLIP); the key mapping, in both directions, is :mod:`percept.model.official_layout`. LoRA's alpha is not stored
in the weights; the release uses ``lora_alpha=8`` (scaling alpha/r).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping
from urllib.parse import urlparse

from ..core.tasks import EMOSET_CLASSES

if TYPE_CHECKING:
    import torch

    from .perceptclip import PerceptCLIP

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
    how = (f"Without internet: on a connected machine run `hf download {card.repo_id} {card.filename}` (or `percept "
           f"download`) into the Hugging Face cache this machine uses, or pass the file's path")
    try:
        return Path(hf_hub_download(card.repo_id, card.filename, local_files_only=True))   # the cache first
    except Exception:
        pass
    if not _hub_reachable():                            # fail fast: no 30-40 s of retries on a closed network
        raise RuntimeError(f"{card.repo_id}/{card.filename} is not in the Hugging Face cache and the hub cannot be "
                           f"reached (offline). {how}.")
    try:
        return Path(hf_hub_download(card.repo_id, card.filename))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RuntimeError(f"could not fetch {card.filename} from the Hugging Face hub repo {card.repo_id!r} "
                           f"({type(err).__name__}: {first}). {how}.") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """False when huggingface_hub is set offline or its endpoint does not answer a TCP connection in ``timeout`` s."""
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return True                                     # through a proxy: only the download itself can tell
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def load_official(source: str | os.PathLike | Mapping[str, torch.Tensor], lora_alpha: float = 8) -> PerceptCLIP:
    """An official PerceptCLIP checkpoint as a percept model in eval mode.

    ``source``: a path to the ``.pth`` file, a state dict, or a hub name (``PerceptCLIP/PerceptCLIP_IQA``,
    ``official-iqa``, ``memorability``, ...). ``model(images)`` equals the official model's output;
    ``model.official`` holds the checkpoint's card (task, labels, score meaning) when known.
    """
    # torch and the model, here and not at the top: the catalogue above is read by `percept list` in a moment
    from ..core.checkpoint import check_state_dict, torch_load_weights
    from .official_layout import convert_official_state_dict, infer_architecture
    from .perceptclip import ModelConfig, PerceptCLIP
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
        backbone="clip_vit_l14", pretrained=False, strategy="lora", head_type="mlp",
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
