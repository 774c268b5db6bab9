"""Image loading (modes, EXIF) and the centre-crop CLIP preprocessing."""
import numpy as np
import pytest
import torch
from PIL import Image

from percept.core.images import CLIP_MEAN, CLIP_STD, load_rgb
from percept.data.preprocessing import center_crop_transform, images_to_batch


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_load_rgb_converts_every_mode(tmp_path, mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    path = tmp_path / f"img.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_load_rgb_composites_alpha_on_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert np.asarray(load_rgb(tmp_path / "clear.png")).min() == 255


def test_load_rgb_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))            # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6                                       # "rotate 90° CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = np.asarray(load_rgb(tmp_path / "rot.jpg"))
    assert out.shape[:2] == (60, 20)                       # displayed portrait
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the stripe is now on top


def test_corrupt_image_error_names_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="broken.jpg"):
        load_rgb(path)


def test_center_crop_transform_normalises_with_clip_statistics():
    colour = (200, 100, 50)
    out = center_crop_transform()(Image.new("RGB", (500, 300), colour))
    assert out.shape == (3, 224, 224)
    expected = (torch.tensor(colour) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out.mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)


def test_center_crop_keeps_orientation_and_crops_the_centre():
    img = np.zeros((300, 600, 3), np.uint8)                # landscape, left half black, right white
    img[:, 300:] = 255
    out = center_crop_transform()(Image.fromarray(img))    # resize to 224x448, centre crop 224
    left, right = out[0, :, :100].mean(), out[0, :, -100:].mean()
    assert left < 0 < right                                # no height/width swap, centre of the image


def test_images_to_batch_accepts_paths_and_pil(tmp_path):
    Image.new("RGB", (230, 240)).save(tmp_path / "a.png")
    batch = images_to_batch([tmp_path / "a.png", Image.new("RGB", (300, 224))])
    assert batch.shape == (2, 3, 224, 224)


@pytest.mark.parametrize("mode, scale", [("I;16", 65535), ("F", 1.0)])
def test_load_rgb_scales_high_bit_depth_by_its_depth(tmp_path, mode, scale):
    """16-bit and float grayscale are scaled to 8 bits (PIL's own convert("RGB") clips them at 255: white)."""
    levels = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    values = (levels * scale).astype(np.uint16 if mode == "I;16" else np.float32)
    Image.fromarray(values).save(tmp_path / "deep.tiff")
    assert Image.open(tmp_path / "deep.tiff").mode.startswith(mode[0])
    out = np.asarray(load_rgb(tmp_path / "deep.tiff")).astype(float)
    assert np.abs(out[..., 0] - levels * 255).max() <= 1.0 and (out[..., 0] == out[..., 2]).all()
