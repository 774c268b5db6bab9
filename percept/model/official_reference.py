"""The official-style PerceptCLIP model (the release's layout), as the reference for tests and benchmarks.

The release (``modeling.py`` of the authors' code; checkpoints on the HF hub, see :mod:`percept.model.official`)
builds ``clip_lora_model`` from transformers' CLIP vision transformer + peft:

* ``model`` — ``CLIPVisionModel``'s vision transformer with peft LoRA (r=16, alpha=8, dropout 0.1) on
  ``self_attn.{q,k,v}_proj`` of every layer (state-dict keys ``model.base_model.model.*``);
* ``proj`` — CLIP's visual projection, ``Linear(width, 768, bias=False)``;
* ``mlp`` — the head ``fc1 → ReLU → Dropout(0.5) → fc2 → ReLU → Dropout(0.5) → fc3``.

Forward = ``mlp(proj(model(pixel_values=x).pooler_output))``: the post-layernorm CLS token, projected.

:func:`build_reference_model` makes this model (random weights, or transformers' ``eager`` attention
by default: the plain, unfused implementation) for a percept backbone spec / model config;
:func:`reference_from_percept` makes one that computes the same function as a given percept model
(weights copied with :func:`percept.model.official_layout.percept_to_official_state_dict`, the inverse of
:func:`percept.model.official_layout.convert_official_state_dict`). The two compute the same outputs, and — because
peft draws LoRA dropout masks for q, k, v in the same order on tensors of the same shape — even the same
training-mode outputs and gradients for the same RNG state (``tests/test_bench.py``).

transformers is only needed here (it is a test/benchmark dependency, not a runtime one).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import timm
import torch
from torch import nn

from . import backbones
from .official_layout import (
    convert_official_state_dict,
    percept_key_to_official,
    percept_to_official_state_dict,
)
from .perceptclip import ModelConfig, PerceptCLIP

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


class ReleaseMLP(nn.Module):
    """The release's head: in → hidden[0] → ReLU → Dropout → hidden[1] → ReLU → Dropout → out."""

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, int] = (512, 256), dropout: float = 0.5):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(in_dim, hidden[0]), nn.Linear(hidden[0], hidden[1]), \
            nn.Linear(hidden[1], out_dim)
        self.relu, self.dropout1, self.dropout2 = nn.ReLU(), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x):
        return self.fc3(self.dropout2(self.relu(self.fc2(self.dropout1(self.relu(self.fc1(x)))))))


@dataclass(frozen=True)
class ClipArchitecture:
    """What the official layout needs to know about a CLIP vision transformer."""

    width: int
    depth: int
    num_heads: int
    mlp_width: int
    patch_size: int
    img_size: int
    proj_dim: int
    layer_norm_eps: float = 1e-5


def clip_architecture(backbone: str = "clip_vit_l14", **backbone_kwargs) -> ClipArchitecture:
    """Sizes of percept backbone ``backbone`` (a CLIP spec), read from its timm model built on the meta
    device (no memory, no weights)."""
    spec = backbones.get_spec(backbone)
    if spec.family != "clip":
        raise ValueError(f"backbone {backbone!r} is a {spec.family} encoder; the official layout is CLIP only")
    with torch.device("meta"):
        vit = timm.create_model(spec.timm_name, pretrained=False, **{**spec.timm_kwargs, **backbone_kwargs})
    return _architecture_of(vit)


def _architecture_of(vit: nn.Module) -> ClipArchitecture:
    if not isinstance(getattr(vit, "head", None), nn.Linear) or getattr(vit, "global_pool", "token") != "token":
        raise ValueError("the official layout needs a CLIP encoder: CLS-token pooling and a projection head")
    patch = vit.patch_embed.patch_size
    img = vit.patch_embed.img_size
    if patch[0] != patch[1] or img[0] != img[1]:
        raise ValueError(f"transformers' CLIP needs square patches and images; got patch {patch}, image {img}")
    block = vit.blocks[0]
    return ClipArchitecture(width=vit.embed_dim, depth=len(vit.blocks), num_heads=vit.blocks[0].attn.num_heads,
                            mlp_width=block.mlp.fc1.out_features, patch_size=patch[0], img_size=img[0],
                            proj_dim=vit.head.out_features, layer_norm_eps=block.norm1.eps)


class OfficialReferenceModel(nn.Module):
    """Same structure and state-dict layout as the release's ``clip_lora_model``."""

    def __init__(self, arch: ClipArchitecture, outputs: int = 1, lora_r: int = 16, lora_alpha: float = 8,
                 lora_dropout: float = 0.1, head_hidden: tuple[int, int] = (512, 256), head_dropout: float = 0.5,
                 attn_implementation: str = "eager"):
        super().__init__()
        import peft  # transformers + peft: the reference path alone needs them
        import transformers  # transformers + peft: the reference path alone needs them
        if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}")
        config = transformers.CLIPVisionConfig(
            hidden_size=arch.width, intermediate_size=arch.mlp_width, num_hidden_layers=arch.depth,
            num_attention_heads=arch.num_heads, image_size=arch.img_size, patch_size=arch.patch_size,
            hidden_act="quick_gelu", layer_norm_eps=arch.layer_norm_eps, attn_implementation=attn_implementation)
        config._attn_implementation = attn_implementation      # transformers 4.x reads the private field
        vision = transformers.CLIPVisionModel(config)
        vision = getattr(vision, "vision_model", vision)      # transformers 4.x nests it, 5.x does not
        lora = peft.LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=["q_proj", "k_proj", "v_proj"],
                               lora_dropout=lora_dropout, bias="none")
        self.arch = arch
        self.attn_implementation = attn_implementation
        with warnings.catch_warnings():                       # transformers 5 deprecation noise from peft
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.model = peft.get_peft_model(vision, lora)   # freezes the vision transformer but LoRA
        self.proj = nn.Linear(arch.width, arch.proj_dim, bias=False)
        self.proj.requires_grad_(False)                       # the release freezes CLIP's projection
        self.mlp = ReleaseMLP(arch.proj_dim, outputs, head_hidden, head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.proj(self.model(pixel_values=x).pooler_output))


def _config_of(config_like) -> tuple[ModelConfig, ClipArchitecture]:
    if isinstance(config_like, PerceptCLIP):
        return config_like.config, _architecture_of(config_like.vit)
    if isinstance(config_like, str):
        config_like = ModelConfig(backbone=config_like, pretrained=False)
    elif isinstance(config_like, Mapping):
        config_like = ModelConfig.from_dict(dict(config_like))
    if not isinstance(config_like, ModelConfig):
        raise TypeError(f"expected a ModelConfig, a PerceptCLIP model, a dict or a backbone name; "
                        f"got {type(config_like).__name__}")
    return config_like, clip_architecture(config_like.backbone, **config_like.backbone_kwargs)


def build_reference_model(config_like="clip_vit_l14", *, head_name: str | None = None,
                          attn_implementation: str = "eager") -> OfficialReferenceModel:
    """The official-style model (random weights) for a percept backbone name, :class:`ModelConfig`
    (dict) or :class:`PerceptCLIP`: same sizes, LoRA r/alpha/dropout, head widths/dropout, outputs.

    Only what the release can express: a CLIP backbone, ``strategy="lora"``, the MLP head (one head:
    ``head_name`` picks which of a multi-head config, default the only one).
    """
    config, arch = _config_of(config_like)
    if config.strategy != "lora":
        raise ValueError(f"the official layout is LoRA fine-tuning; got strategy {config.strategy!r}")
    if config.head_type != "mlp":
        raise ValueError(f"the official layout has the MLP head; got head_type {config.head_type!r}")
    head = _head_name(config, head_name)
    return OfficialReferenceModel(arch, outputs=int(config.heads[head]), lora_r=config.lora_r,
                                  lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                  head_hidden=tuple(config.head_hidden), head_dropout=config.head_dropout,
                                  attn_implementation=attn_implementation)


def _head_name(config: ModelConfig, head_name: str | None) -> str:
    if head_name is None:
        if len(config.heads) != 1:
            raise ValueError(f"the model has several heads {list(config.heads)}; pass head_name=<name>")
        return next(iter(config.heads))
    if head_name not in config.heads:
        raise KeyError(f"unknown head {head_name!r}; the model has {list(config.heads)}")
    return head_name


@torch.no_grad()
def reference_from_percept(model: PerceptCLIP, *, head_name: str | None = None,
                           attn_implementation: str = "eager") -> OfficialReferenceModel:
    """An official-style model computing the same function as percept model ``model`` (weights copied;
    same device, dtype, train/eval mode and trainable set: LoRA + head)."""
    if not model.has_lora:
        raise ValueError("reference_from_percept needs a LoRA model (strategy 'lora', not merged)")
    head = _head_name(model.config, head_name)
    param = next(model.parameters())
    reference = build_reference_model(model, head_name=head, attn_implementation=attn_implementation)
    state = percept_to_official_state_dict(model.state_dict(), head)
    missing, unexpected = reference.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]     # a buffer of token indices
    if missing or unexpected:
        raise RuntimeError(f"official layout mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    reference.to(device=param.device, dtype=param.dtype)
    reference.mlp.requires_grad_(model.heads[head].fc1.weight.requires_grad)
    return reference.train(model.training)


def official_parameter_names(model: PerceptCLIP, head_name: str | None = None) -> dict[str, str]:
    """percept name → official name for every trainable parameter of ``model`` (LoRA + head ``head_name``)."""
    head = _head_name(model.config, head_name)
    names = {}
    for name, p in model.named_parameters():
        if p.requires_grad and (new := percept_key_to_official(name, head)) is not None:
            names[name] = new
    return names


def roundtrip_check(model: PerceptCLIP, head_name: str | None = None) -> None:
    """Assert that percept → official → percept keys and tensors round-trip (used by tests)."""
    head = _head_name(model.config, head_name)
    state = model.state_dict()
    back = convert_official_state_dict(percept_to_official_state_dict(state, head), head_name=head)
    for key, value in back.items():
        if not torch.equal(state[key], value):
            raise AssertionError(f"{key} does not round-trip")
