"""Image loading and inference-time preprocessing.

Paper §3.1: "all images are normalized using the CLIP preprocessor" — OpenAI CLIP's mean/std, the default
here. Normalisation belongs to the backbone: a DINOv2 or MAE model (Table A.8) takes ImageNet's statistics
(``percept.backbones.normalization(name)`` / ``model.normalization``; pass them as ``mean``/``std``).
Inference for memorability and emotion (App. A.1): resize the shorter side to 224, centre crop 224.
The official release's inference code uses ``transforms.Resize(224)`` (torchvision's default bilinear
interpolation, antialiased) + ``CenterCrop(224)``; :func:`center_crop_transform` defaults to that.
(Training augmentations and IQA's 15-crop test transform belong to the data pipeline.)
"""
from __future__ import annotations

import os

import torch
from PIL import Image, ImageOps
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from torchvision import transforms as T

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


def center_crop_transform(size: int = 224, interpolation: str = "bilinear", mean=CLIP_MEAN,
                          std=CLIP_STD) -> T.Compose:
    """Resize the shorter side to ``size``, centre crop ``size``×``size``, normalise with ``mean``/``std``
    (default CLIP's; a DINOv2/MAE model needs its backbone's, ``model.normalization``)."""
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    return T.Compose([T.Resize(size, interpolation=mode, antialias=True), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(tuple(mean), tuple(std))])


def images_to_batch(images, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """Paths or PIL images → a (B, 3, size, size) batch normalised with ``mean``/``std`` (default CLIP's)."""
    transform = center_crop_transform(size, mean=mean, std=std)
    return torch.stack([transform(im if isinstance(im, Image.Image) else load_rgb(im)) for im in images])
