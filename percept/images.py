"""Image loading and CLIP's normalisation statistics (the preprocessing itself: :mod:`percept.data.preprocessing`).

Paper §3.1: "all images are normalized using the CLIP preprocessor" — OpenAI CLIP's mean/std, the default
here. Normalisation belongs to the backbone: a DINOv2 or MAE model (Table A.8) takes ImageNet's statistics
(``percept.backbones.normalization(name)`` / ``model.normalization``; the transforms of
:mod:`percept.data.preprocessing` take them as ``mean``/``std``).
"""
from __future__ import annotations

import os

from PIL import Image, ImageOps
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

CLIP_MEAN = tuple(OPENAI_CLIP_MEAN)   # (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = tuple(OPENAI_CLIP_STD)     # (0.26862954, 0.26130258, 0.27577711)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB with its EXIF orientation applied (grayscale/CMYK/palette/alpha → RGB)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                background = Image.new("RGB", img.size, (255, 255, 255))   # composite alpha on white
                background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
                return background
            return img.convert("RGB")
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {err} (corrupt, truncated or not an image)") from err
