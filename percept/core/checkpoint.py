"""Checkpoint files: safetensors for what we write, strict key/shape checks for what we read.

We write :mod:`safetensors` files (no pickle) whose metadata carries the model configuration as JSON,
so a file is self-describing. Whatever we read that is not safetensors goes through
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .files import atomic_path


class CheckpointMismatch(ValueError):
    """A state dict does not fit the model: missing or unexpected keys, or wrong shapes."""


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str = "checkpoint",
                     ignore_missing: tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointMismatch` naming every missing/unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k not in ignore_missing]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointMismatch(f"{what} in {source} does not match the model — " + "; ".join(problems))


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object]) -> None:
    """Write tensors + JSON-able metadata to a safetensors file atomically."""
    meta = {key: json.dumps(value) for key, value in metadata.items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Read a safetensors file written by :func:`save_tensors`: (tensors, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        tensors = load_file(str(path))
    except OSError:
        raise                           # unreadable (permissions, I/O): said as such by the caller
    except Exception as err:        # safetensors' own error types: a truncated or overwritten file
        raise ValueError(f"{path} is damaged or not a safetensors file ({type(err).__name__}: {err}); restore it, "
                         f"or train / export it again") from None
    try:
        meta = {key: json.loads(value) for key, value in raw.items()}
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path}: metadata is not percept JSON ({err})") from None
    return tensors, meta


def torch_load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a pickled state dict safely (tensors only)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not read {path} as a PyTorch state dict with weights_only=True: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not contain a flat state dict of tensors")
    return dict(state)


# ------------------------------------------------------------------------------------- training checkpoint
def save_checkpoint(path: str | os.PathLike, trainable: Mapping[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer | None, state: Mapping[str, Any]) -> None:
    """One safetensors file: ``model.*`` trainable weights, ``optim.<i>.<name>`` AdamW tensors, and the loop
    state + optimizer param groups as JSON metadata."""
    tensors = {f"model.{k}": v.detach() for k, v in trainable.items()}
    meta: dict[str, Any] = {"format": "percept-checkpoint", "state": dict(state)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for index, values in sd["state"].items():
            for name, value in values.items():
                value = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{index}.{name}"] = value
        meta["param_groups"] = sd["param_groups"]
    save_tensors(path, {k: v.contiguous().cpu() for k, v in tensors.items()}, meta)


def load_checkpoint(path: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore :func:`save_checkpoint`'s weights (and optimizer state) in place; returns the loop state."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != "percept-checkpoint":
        raise ValueError(f"{path} is not a percept training checkpoint")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = dict(model.named_parameters())
    missing = sorted(set(k for k, p in own.items() if p.requires_grad) - set(weights))
    unknown = sorted(set(weights) - set(model.state_dict()))
    if missing or unknown:
        raise ValueError(f"checkpoint {path} does not fit the model (missing {missing[:3]}, unexpected "
                         f"{unknown[:3]}); it belongs to a different configuration")
    model.load_state_dict(weights, strict=False)
    if optimizer is not None and "param_groups" in meta:
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return dict(meta["state"])
