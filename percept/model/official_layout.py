"""The release's state-dict layout and ours, in both directions (one place; the exports use it).

The authors' checkpoints (``clip_lora_model``: transformers 4.45 ``CLIPVisionModel`` + peft 0.14) hold

* ``model.base_model.model.{embeddings.*, pre_layrnorm.*, encoder.layers.N.*, post_layernorm.*}`` — the
  CLIP vision transformer with peft LoRA on ``self_attn.{q,k,v}_proj`` (``base_layer`` + ``lora_A/B``);
* ``proj.weight`` — CLIP's visual projection (no bias);
* ``mlp.fc1/fc2/fc3.{weight,bias}`` — the MLP head.

percept holds a timm encoder with split q/k/v attention inside peft (``encoder.base_model.model.*``, the
projection as timm's ``head`` with a zero bias) and heads ``heads.<name>.*``.

* :func:`convert_official_state_dict` — official → percept; :func:`infer_architecture` reads the
  architecture from the tensors' shapes (head dim 64 as in CLIP);
* :func:`percept_to_official_state_dict` / :func:`percept_key_to_official` — percept → official.

Only ``torch`` is needed (no transformers); ``tests/test_official.py`` checks the round trip and, through an
independently built transformers + peft model, that both layouts compute the same function.
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import torch

from ..core.checkpoint import CheckpointMismatch

PREFIX = "model.base_model.model."
_ENCODER = "encoder.base_model.model."

# official key (after PREFIX) <-> percept's (timm's, inside peft) key, one table for both directions;
# "{name}" is a field of _FIELDS, the same on both sides
_FIELDS = {"i": r"\d+", "wb": "weight|bias", "fc": "fc1|fc2", "qkv": "q|k|v", "rest": ".+"}
_KEYS = [
    ("embeddings.patch_embedding.weight", "patch_embed.proj.weight"),
    ("embeddings.class_embedding", "cls_token"),
    ("embeddings.position_embedding.weight", "pos_embed"),
    ("pre_layrnorm.{wb}", "norm_pre.{wb}"),
    ("post_layernorm.{wb}", "norm.{wb}"),
    ("encoder.layers.{i}.layer_norm1.{wb}", "blocks.{i}.norm1.{wb}"),
    ("encoder.layers.{i}.layer_norm2.{wb}", "blocks.{i}.norm2.{wb}"),
    ("encoder.layers.{i}.mlp.{fc}.{wb}", "blocks.{i}.mlp.{fc}.{wb}"),
    ("encoder.layers.{i}.self_attn.out_proj.{wb}", "blocks.{i}.attn.proj.{wb}"),
    ("encoder.layers.{i}.self_attn.{qkv}_proj.{rest}", "blocks.{i}.attn.{qkv}.{rest}"),
]


def _rule(source: str, target: str) -> tuple[str, str]:
    """(regular expression of the key template ``source``, ``re.Match.expand`` template of ``target``)."""
    pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m[1]}>{_FIELDS[m[1]]})", re.escape(source))
    return pattern, re.sub(r"\{(\w+)\}", r"\\g<\1>", target)


_KEY_MAP = [_rule(official, ours) for official, ours in _KEYS]            # official -> percept
_INVERSE_KEY_MAP = [_rule(ours, official) for official, ours in _KEYS]    # percept -> official


def percept_key_to_official(key: str, head_name: str = "main") -> str | None:
    """The official name of percept parameter/buffer ``key`` (None for ``head.bias``, which the release's
    bias-free projection does not have, and for other heads than ``head_name``)."""
    if key == _ENCODER + "head.weight":
        return "proj.weight"
    if key == _ENCODER + "head.bias":
        return None
    if key.startswith(f"heads.{head_name}."):
        return "mlp." + key[len(f"heads.{head_name}."):]
    if key.startswith("heads."):
        return None
    if key.startswith(_ENCODER):
        rest = key[len(_ENCODER):]
        for pattern, target in _INVERSE_KEY_MAP:
            if (m := re.fullmatch(pattern, rest)):
                return PREFIX + m.expand(target)
    raise KeyError(f"percept key {key!r} has no place in the official layout")


def percept_to_official_state_dict(state: Mapping[str, torch.Tensor], head_name: str = "main") -> dict[str, torch.Tensor]:
    """A percept LoRA model's state dict in the release's layout (head ``head_name`` → ``mlp``).

    The inverse of :func:`convert_official_state_dict`. The projection's bias must be zero
    (CLIP's projection has none; timm keeps a zero bias); a non-zero bias cannot be expressed and raises.
    """
    bias = state.get(_ENCODER + "head.bias")
    if bias is not None and bool(bias.abs().max() > 0):
        raise ValueError("the encoder's projection has a non-zero bias; the official layout's projection has "
                         "no bias, so this model cannot be expressed in it")
    if f"heads.{head_name}.fc1.weight" not in state:
        raise KeyError(f"no MLP head {head_name!r} in this state dict")
    out = {}
    for key, value in state.items():
        new = percept_key_to_official(key, head_name)
        if new is None:
            continue
        if key.endswith("cls_token"):
            value = value.reshape(-1)
        elif key.endswith("pos_embed"):
            value = value.reshape(value.shape[-2], value.shape[-1])
        out[new] = value
    return out



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


def convert_official_state_dict(state: Mapping[str, torch.Tensor], head_name: str = "main") -> dict[str, torch.Tensor]:
    """Rename official keys to percept keys (LoRA-wrapped encoder + head ``head_name``)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue   # a buffer of token indices, not a weight
        if key == "proj.weight":
            out["encoder.base_model.model.head.weight"] = value
            out["encoder.base_model.model.head.bias"] = torch.zeros(value.shape[0], dtype=value.dtype)
        elif key.startswith("mlp."):
            out[f"heads.{head_name}.{key[len('mlp.'):]}"] = value
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
