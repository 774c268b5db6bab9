"""Image loading and CLIP's normalisation statistics (the preprocessing itself: :mod:`percept.data.preprocessing`).

Paper §3.1: "all images are normalized using the CLIP preprocessor" — OpenAI CLIP's mean/std, the default
here. Normalisation belongs to the backbone: a DINOv2 or MAE model (Table A.8) takes ImageNet's statistics
(``percept.model.backbones.normalization(name)`` / ``model.normalization``; the transforms of
:mod:`percept.data.preprocessing` take them as ``mean``/``std``).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# What any image may be, checked on the file's header before decoding and on every image before scoring: a
# 100-byte PNG can claim 50000x50000 pixels, and a 1xN strip upscaled to a shorter side of 224 becomes 224x224N.
MAX_PIXELS = 178_956_970   # PIL's default decompression-bomb limit (2 x MAX_IMAGE_PIXELS), ~179 MP, ~540 MB as RGB
MAX_ASPECT = 20                             # longer side / shorter side; 1:20 keeps a 224-pixel upscale ≤ 1 MP

CLIP_MEAN = tuple(OPENAI_CLIP_MEAN)   # (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = tuple(OPENAI_CLIP_STD)     # (0.26862954, 0.26130258, 0.27577711)


def _high_bit_depth_to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit (``I;16*``, ``I``) or float (``F``) single-channel image as 8-bit ``L``, scaled by its bit depth.
    PIL's own ``convert("RGB")`` clips such values at 255, which turns most of a 16-bit image white."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F" and values.size and np.nanmax(values) <= 1.0:
        values = values * 255.0                            # a float image in [0, 1]
    elif img.mode.startswith("I;16") or (values.size and np.nanmax(values) > 255):
        values = values / 257.0                            # 16-bit range 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8), mode="L")


def check_size(width: int, height: int, name: str = "the image") -> None:
    """``ValueError`` naming ``name`` when an image of ``width`` x ``height`` is over :data:`MAX_PIXELS` or more
    elongated than 1 : :data:`MAX_ASPECT` (or empty)."""
    if width < 1 or height < 1:
        raise ValueError(f"{name} is {width}x{height} pixels: empty")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{name} is {width}x{height} = {width * height / 1e6:.0f} MP, over the limit of "
                         f"{MAX_PIXELS / 1e6:.0f} MP; downscale it first")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ValueError(f"{name} is {width}x{height} pixels, more elongated than 1:{MAX_ASPECT}; crop it to a "
                         f"less extreme aspect ratio first")


def header_problem(path: str | os.PathLike) -> str:
    """Why the image file ``path`` cannot be used ('' when it can), from its header alone (nothing is decoded):
    unreadable, or a size over the limits (:func:`check_size`). For checking a whole dataset before training."""
    try:
        with Image.open(path) as img:
            check_size(*img.size, name=os.fspath(path))
    except Image.DecompressionBombError as err:
        return f"{os.fspath(path)}: {err}"
    except ValueError as err:
        return str(err)
    except (OSError, SyntaxError) as err:
        return f"{os.fspath(path)}: {err} (corrupt or not an image)"
    return ""


def to_rgb(img: Image.Image) -> Image.Image:
    """An image as RGB with its EXIF orientation applied (grayscale/CMYK/palette/alpha → RGB, alpha composited on
    white; 16-bit and float grayscale scaled to 8 bits by their depth, not clipped): what :func:`load_rgb` gives
    for its file, so a PIL image and its file score the same. Its size is checked first (:func:`check_size`)."""
    check_size(*img.size, name=os.fspath(getattr(img, "filename", "") or "the image"))
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_bit_depth_to_8bit(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGB", img.size, (255, 255, 255))   # composite alpha on white
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB (:func:`to_rgb`: EXIF orientation applied, any mode converted); ``ValueError``
    naming the file when it cannot be read or its header claims a size over the limits (:func:`check_size`,
    before anything is decoded)."""
    try:
        with Image.open(path) as img:
            return to_rgb(img)                         # its size is checked first, from the header
    except Image.DecompressionBombError as err:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {err}") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {err} (corrupt, truncated or not an image)") from err
