"""Procedurally generated, offline, deterministic IQA demo dataset.

The layout imitates KADID-10k (Lin, Hosu & Saupe, 2019: 81 pristine references x
25 distortion types x 5 levels, only the distorted images are rated): here
``n_references`` procedural references x 4 distortion types x 5 levels.

IMPORTANT: nothing here is a human judgement.  The images are drawn by code and the
"quality" column (:func:`synthetic_quality`) is a fixed function of the distortion
level (plus a small per-type offset).  Use it to exercise pipelines, never to claim
results about perceived quality.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from ..core.files import atomic_write_bytes

DISTORTIONS = ("gaussian_blur", "gaussian_noise", "jpeg", "color_quantization")
LEVELS = (1, 2, 3, 4, 5)  # 5 = strongest
_PARAMS = {  # per-level strength of each distortion, index = level - 1
    "gaussian_blur": (0.5, 1.0, 2.0, 3.5, 5.0),  # GaussianBlur radius
    "gaussian_noise": (5.0, 10.0, 20.0, 35.0, 55.0),  # sigma in 0..255 units
    "jpeg": (60, 35, 20, 10, 5),  # JPEG quality
    "color_quantization": (64, 24, 12, 6, 3),  # palette size
}
# Small type-dependent offset subtracted from the synthetic quality so that the
# distortion type matters a little (arbitrary, NOT fitted to any human data).
TYPE_OFFSET = {"gaussian_blur": 0.0, "gaussian_noise": 0.1, "jpeg": 0.2, "color_quantization": 0.15}
MANIFEST_COLUMNS = ("image", "reference", "distortion", "distortion_id", "level", "synthetic_quality")
_FORMAT_VERSION = 1


def _check(distortion: str | None, level: int) -> None:
    if distortion is not None and distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; valid values: {', '.join(DISTORTIONS)}")
    if isinstance(level, bool) or int(level) != level or level not in LEVELS:
        raise ValueError(f"distortion level must be an integer in 1..5 (got {level!r})")


def make_reference_image(index: int, size: int = 256, seed: int = 0) -> Image.Image:
    """Procedural "natural-ish" RGB reference of width ``size + 32`` and height ``size``.

    Smooth colour gradient + random filled ellipses/rectangles + a faint sinusoidal
    grating and pixel noise (fine texture, so blur/JPEG visibly change it).  Fully
    determined by ``numpy.random.default_rng((seed, index))``.
    """
    rng = np.random.default_rng((seed, index))
    w, h = size + 32, size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1, c2 = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    u, v = xx / (w - 1), yy / (h - 1)
    bg = c0 + u[..., None] * (c1 - c0) + v[..., None] * (c2 - c0) * (1 - u[..., None])
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 10))):
        x0, y0 = rng.uniform(-0.2, 0.9) * w, rng.uniform(-0.2, 0.9) * h
        box = [x0, y0, x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.1, 0.5) * h]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    arr = np.asarray(img, dtype=np.float32)
    theta, period = rng.uniform(0, np.pi), rng.uniform(3.0, 8.0)
    grating = 12.0 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    arr = arr + grating[..., None] + rng.normal(0.0, 4.0, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def distort(image: Image.Image, distortion: str, level: int, seed: int) -> Image.Image:
    """Apply ``distortion`` at ``level`` (1..5, 5 strongest); returns a new RGB image.

    ``seed`` only matters for ``gaussian_noise`` (noise drawn from ``default_rng((seed, level))``).
    """
    _check(distortion, level)
    p, image = _PARAMS[distortion][level - 1], image.convert("RGB")
    if distortion == "gaussian_blur":
        return image.filter(ImageFilter.GaussianBlur(radius=p))
    if distortion == "gaussian_noise":
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + np.random.default_rng((seed, level)).normal(0.0, p, arr.shape)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    if distortion == "jpeg":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=p)
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    # FASTOCTREE: ~100x faster than the default median cut on these images, same palette size.
    return image.quantize(colors=p, method=Image.Quantize.FASTOCTREE).convert("RGB")


def synthetic_quality(level: int, distortion: str | None = None) -> float:
    """Deterministic MOS-like score on 1..5 -- NOT a human judgement.

    ``5 - 0.95 * (level - 1) - TYPE_OFFSET[distortion]`` (offset 0 if ``distortion`` is
    None), so level 1 blur -> 5.0 and level 5 JPEG -> 1.0; strictly decreasing in level.
    """
    _check(distortion, level)
    offset = TYPE_OFFSET[distortion] if distortion is not None else 0.0
    return round(5.0 - 0.95 * (level - 1) - offset, 4)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast; lossless either way
    return buf.getvalue()


def generate_synthetic_iqa(root, n_references: int = 12, size: int = 256, seed: int = 0,
                           overwrite: bool = False) -> pd.DataFrame:
    """Write the synthetic KADID-style set under ``root`` and return its manifest.

    Files: ``references/refRR.png``, ``images/refRR_{distortion}_{level}.png``,
    ``synthetic_params.json`` and ``manifest.csv`` (written last, atomically; columns
    :data:`MANIFEST_COLUMNS`; sorted by reference, distortion_id, level).  References
    are not rows (KADID-style: only distorted images are scored).  If ``root`` already
    holds a complete set with the same parameters it is returned untouched; different
    parameters raise ValueError unless ``overwrite=True``.
    """
    if int(n_references) != n_references or n_references < 1:
        raise ValueError(f"n_references must be a positive integer (got {n_references!r})")
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16 (got {size!r})")
    root = Path(root)
    manifest, params_path = root / "manifest.csv", root / "synthetic_params.json"
    params = {"format_version": _FORMAT_VERSION, "n_references": int(n_references),
              "size": int(size), "seed": int(seed), "distortions": list(DISTORTIONS)}
    if manifest.exists():
        old = json.loads(params_path.read_text()) if params_path.exists() else None
        if old == params:
            df = pd.read_csv(manifest)
            if all((root / p).exists() for p in pd.concat([df["image"], df["reference"]])):
                return df
        elif not overwrite:
            raise ValueError(f"{root} already holds a synthetic set with parameters {old}, which differ "
                             f"from the requested {params}; pass overwrite=True or choose another root")
    manifest.unlink(missing_ok=True)  # the manifest marks a complete set: drop it before touching images
    for sub in ("images", "references"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for stale in (root / sub).glob("ref*.png"):  # drop leftovers of other parameter sets
            stale.unlink()
    rows = []
    for r in range(n_references):
        ref = make_reference_image(r, size=size, seed=seed)
        ref_rel = f"references/ref{r:02d}.png"
        atomic_write_bytes(root / ref_rel, _png_bytes(ref))
        noise_seed = int(np.random.SeedSequence((seed, r)).generate_state(1)[0])
        for d_id, d in enumerate(DISTORTIONS):
            for level in LEVELS:
                rel = f"images/ref{r:02d}_{d}_{level}.png"
                atomic_write_bytes(root / rel, _png_bytes(distort(ref, d, level, seed=noise_seed)))
                rows.append((rel, ref_rel, d, d_id, level, synthetic_quality(level, d)))
    atomic_write_bytes(params_path, (json.dumps(params, indent=2, sort_keys=True) + "\n").encode())
    csv = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(index=False, lineterminator="\n")
    atomic_write_bytes(manifest, csv.encode())
    return pd.read_csv(manifest)
