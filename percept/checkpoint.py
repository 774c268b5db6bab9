"""Checkpoint files: atomic writes, safetensors for what we write, strict key/shape checks for what we read.

We write :mod:`safetensors` files (no pickle) whose metadata carries the model configuration as JSON,
so a file is self-describing. Whatever we read that is not safetensors goes through
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointMismatch(ValueError):
    """A state dict does not fit the model: missing or unexpected keys, or wrong shapes."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    A crash mid-write leaves the previous file intact (never a half-written one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    try:
        meta = {key: json.loads(value) for key, value in raw.items()}
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path}: metadata is not percept JSON ({err})") from None
    return load_file(str(path)), meta


def torch_load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a pickled state dict safely (tensors only)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not read {path} as a PyTorch state dict with weights_only=True: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not contain a flat state dict of tensors")
    return dict(state)
