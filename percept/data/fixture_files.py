"""The generated content of a fixture dataset (:mod:`percept.data.fixtures`): seeded random streams per dataset,
labels that follow an image's brightness level, the images themselves, and the MATLAB, image and text files
they are written to."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

_SIZES = ((64, 48), (96, 64), (64, 64), (48, 64), (80, 60))  # (width, height), cycled per image


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _levels(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` brightness levels in (0, 1), evenly spread, in random order."""
    return rng.permutation((np.arange(n) + rng.uniform(0.1, 0.9, n)) / n)


def _scale(level, lo: float, hi: float, rng: np.random.Generator, noise: float = 0.04) -> np.ndarray:
    """A label in [lo, hi] increasing with ``level`` (plus a little noise)."""
    level = np.asarray(level, dtype=float)
    u = np.clip(0.1 + 0.8 * level + rng.normal(0, noise, level.shape), 0.0, 1.0)
    return lo + (hi - lo) * u


def _pixels(rng: np.random.Generator, level: float, index: int, tint=None, size=None) -> np.ndarray:
    """An HxWx3 uint8 image: mean brightness ~ 30 + 190 * level, a random gradient, noise, optional tint."""
    w, h = size or _SIZES[index % len(_SIZES)]
    y, x = np.linspace(0, 1, h)[:, None], np.linspace(0, 1, w)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    grad = np.cos(angle) * x + np.sin(angle) * y
    img = ((30 + 190 * level) + 50 * (grad - grad.mean())[..., None] * rng.uniform(0.5, 1.5, 3)
           + rng.normal(0, 12, (h, w, 3)))
    if tint is not None:
        img = img * np.asarray(tint, dtype=float)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tint(i: int, k: int) -> np.ndarray:
    return 0.7 + 0.3 * np.cos(2 * np.pi * (i / k + np.arange(3) / 3))


def _save(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # format from the (case-insensitive) extension


def _savemat(path: Path, data: dict) -> None:
    import scipy.io
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), data)


def _cells(names, column: bool = False) -> np.ndarray:
    arr = np.array(list(names), dtype=object)
    return arr.reshape(-1, 1) if column else arr.reshape(1, -1)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
