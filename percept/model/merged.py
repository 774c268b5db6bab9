"""The merged format (``percept export --format merged``): one safetensors file, LoRA folded into the encoder's
weights, in timm's own layout (fused ``qkv``), the heads beside it under ``perceptclip_heads.<name>.``.

Its metadata holds everything needed to rebuild it: ``timm_name`` and ``timm_kwargs`` (JSON: the architecture
arguments of ``timm.create_model``; ``{}`` for the paper's backbones, the sizes of the small ones), the percept
``config``, and ``scoring`` (:mod:`percept.engine.scoring`: each head's task and test preprocessing, as its run scored).

* :func:`load_merged` rebuilds the :class:`~percept.model.perceptclip.PerceptCLIP` (every head), with no pretrained weights
  fetched: the file holds the whole encoder.
* Plain timm, without percept: ``timm.create_model(meta["timm_name"], **json.loads(meta["timm_kwargs"]))`` and
  ``load_state_dict`` of the file's keys that do not start with ``perceptclip_heads.`` — for every backbone whose
  architecture timm builds from arguments alone. The demo prior (``tiny_clip_prior``) has a convolutional patch
  stem of percept's own (``timm_kwargs`` then names ``embed_layer`` as ``percept.model.backbones.ConvStemPatchEmbed``):
  load it with :func:`load_merged`.
"""
from __future__ import annotations

import copy
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..core.checkpoint import check_state_dict
from .backbones import get_spec
from .perceptclip import ModelConfig, PerceptCLIP

MERGED_FORMAT = "percept-merged"
MERGED_HEAD_PREFIX = "perceptclip_heads."


def timm_arguments(model) -> tuple[str, dict]:
    """``(timm_name, timm_kwargs)`` that build ``model``'s encoder architecture with ``timm.create_model``; a
    class argument (a custom patch embedding) is written as its dotted name."""
    spec = get_spec(model.config.backbone)
    kwargs = {**spec.timm_kwargs, **model.config.backbone_kwargs}
    named = {k: (f"{v.__module__}.{v.__qualname__}" if isinstance(v, type) else v) for k, v in kwargs.items()}
    return spec.timm_name, named


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """LoRA folded into q, k, v and the three fused back into timm's ``qkv``: a plain timm state dict of the
    backbone's ``timm_name``; the heads under ``perceptclip_heads.<name>.``."""
    merged = copy.deepcopy(model).cpu().merge_lora()
    encoder = {k: v.detach().contiguous() for k, v in merged.vit.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in encoder.items():
        head, _, leaf = key.rpartition(".")
        if head.endswith(".attn.q"):
            block = head[:-len(".q")]
            out[f"{block}.qkv.{leaf}"] = torch.cat([encoder[f"{block}.{p}.{leaf}"] for p in ("q", "k", "v")])
        elif not head.endswith((".attn.k", ".attn.v")):
            out[key] = value
    for key, value in merged.heads.state_dict().items():
        out[MERGED_HEAD_PREFIX + key] = value.detach().contiguous()
    return out


def merged_metadata(model, scoring: dict | None = None) -> dict[str, str]:
    """The file's metadata (safetensors metadata is str → str)."""
    name, kwargs = timm_arguments(model)
    meta = {"format": MERGED_FORMAT, "timm_name": name, "timm_kwargs": json.dumps(kwargs, sort_keys=True),
            "config": json.dumps({**model.config.to_dict(), "strategy": "full", "weights_path": None,
                                  "pretrained": False})}
    if scoring is not None:
        meta["scoring"] = json.dumps(scoring, sort_keys=True)
    return meta


def read_merged_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The metadata of a merged file, or None when ``path`` is a safetensors file of another kind."""
    try:
        with safe_open(os.fspath(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:         # safetensors raises its own error types for a damaged header
        raise ValueError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    return meta if meta.get("format") == MERGED_FORMAT else None


def load_merged(path: str | os.PathLike):
    """The :class:`~percept.model.perceptclip.PerceptCLIP` of a merged file (every head; eval mode). Nothing is downloaded:
    the file holds the whole encoder. ``ValueError`` naming the file when it is not a merged export or does not
    match its own configuration."""
    meta = read_merged_metadata(path)
    if meta is None or "config" not in meta:
        raise ValueError(f"{path} is not a percept merged export (its metadata has no \"format\": "
                         f"\"{MERGED_FORMAT}\"); write one with `percept export RUN --format merged`")
    try:
        tensors = load_file(os.fspath(path))
    except Exception as err:        # safetensors' own error types: a truncated or overwritten file
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {err}); export it again") from None
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path}: its percept config is unreadable ({err})") from None
    config.strategy, config.pretrained, config.weights_path = "full", False, None
    model = PerceptCLIP(config)
    state = {}
    for key, value in tensors.items():
        if key.startswith(MERGED_HEAD_PREFIX):
            state["heads." + key[len(MERGED_HEAD_PREFIX):]] = value
        elif ".attn.qkv." in key:
            block, leaf = key.split(".attn.qkv.")
            for part, chunk in zip("qkv", value.chunk(3)):
                state[f"encoder.{block}.attn.{part}.{leaf}"] = chunk
        else:
            state["encoder." + key] = value
    check_state_dict(model, state, source=os.fspath(path), what="merged percept weights")
    model.load_state_dict(state)
    return model.eval()
