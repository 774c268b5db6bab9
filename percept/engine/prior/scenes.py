"""Generated images with generated captions: the pre-training data of the demo's tiny image-text prior.

Each scene is drawn from a parameter set (:class:`Scene`): a two-colour background with a fine texture
(a faint grating and pixel noise, so that blur and compression visibly change it), one to three shapes of
one named colour, then degradations drawn on continuous scales (Gaussian blur radius, noise sigma, JPEG
quality, palette size, brightness and saturation factors). The caption is written from the same
parameters, describing the content *and* the appearance, e.g. "a very blurry, dark photo of two red
circles on a teal background" or "a crisp, clean picture of a yellow striped square on a grey background":
the perceptual words that CLIP met in human-written captions, here produced by code. Nothing in it is a
human judgement.

A scene's *content* (shapes, colours, layout, texture: :func:`draw_scene_content`) is fixed by its index; its
*appearance* (the degradations, their noise, the caption's noun) by a variant number (:func:`appearance_rng`), so
the pre-training can draw fresh appearances of the same content at every step: a batch holds several variants of
each of its scenes, and telling their captions apart needs the perceptual words, not only colours and shapes.
A *strength ladder* (:func:`make_ladder_rung`) shows one content with one degradation at each of its strength
words, so that its captions differ only in strength.

Disjoint from the demo: the demo's images (:mod:`percept.data.synthetic`) are random ellipses and
rectangles on gradients, distorted at five fixed levels per type and seeded by ``(seed, index)``; scenes are
named shapes seeded by ``(SCENE_NAMESPACE, seed, index)`` with continuously drawn degradations.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SCENE_NAMESPACE = 7_919_001   # first seed word of every scene RNG: never a demo seed
COLOURS = {"red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40),
           "purple": (130, 50, 160), "orange": (235, 130, 30), "white": (240, 240, 240), "black": (25, 25, 25)}
BACKGROUNDS = {"grey": (128, 128, 128), "beige": (220, 205, 170), "teal": (30, 120, 120), "navy": (30, 40, 90),
               "pink": (230, 160, 180), "brown": (120, 80, 50)}
SHAPES = ("circle", "square", "triangle", "ring", "striped square")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
NOUNS = ("photo", "picture", "image")


@dataclass(frozen=True)
class Scene:
    """The parameters of one generated image (0 / 1.0 = the degradation is absent)."""

    shape: str
    colour: str
    background: str
    count: int
    blur: float          # Gaussian blur radius in pixels
    noise: float         # Gaussian noise sigma, 0..255 units
    jpeg: int            # JPEG quality (0 = none)
    palette: int         # colours after quantisation (0 = none)
    brightness: float    # PIL brightness factor
    saturation: float    # PIL colour factor


def sample_content(rng: np.random.Generator) -> dict:
    """What the scene shows, uniformly: shape, colour, background, count."""
    return dict(shape=str(rng.choice(SHAPES)), colour=str(rng.choice(list(COLOURS))),
                background=str(rng.choice(list(BACKGROUNDS))), count=int(rng.integers(1, 4)))


# The range each degradation is drawn from: (weakest, strongest) value. Blur radius and noise sigma are drawn
# uniformly between them; JPEG quality and palette size are integers from [strongest, weakest).
DEGRADATION_RANGES = {"blur": (0.6, 5.0), "noise": (4.0, 60.0), "jpeg": (50, 4), "palette": (40, 3)}


def _draw_strength(rng: np.random.Generator, name: str) -> float | int:
    weakest, strongest = DEGRADATION_RANGES[name]
    if isinstance(weakest, int):
        return int(rng.integers(strongest, weakest))
    return float(rng.uniform(weakest, strongest))


def sample_appearance(rng: np.random.Generator) -> dict:
    """How it looks: at most two of the four degradations, each on a continuous scale
    (:data:`DEGRADATION_RANGES`), and now and then a photometric change (one image in five: too frequent, these
    easy cues let the towers tell a scene's variants apart without learning the degradations)."""
    degradations = rng.choice(4, size=int(rng.choice([0, 1, 1, 2, 2])), replace=False)
    return dict(blur=_draw_strength(rng, "blur") if 0 in degradations else 0.0,
                noise=_draw_strength(rng, "noise") if 1 in degradations else 0.0,
                jpeg=_draw_strength(rng, "jpeg") if 2 in degradations else 0,
                palette=_draw_strength(rng, "palette") if 3 in degradations else 0,
                brightness=float(rng.choice([1.0, rng.uniform(0.45, 0.75), rng.uniform(1.3, 1.6)], p=[.8, .1, .1])),
                saturation=float(rng.choice([1.0, rng.uniform(0.2, 0.55), rng.uniform(1.4, 1.9)], p=[.8, .1, .1])))


def appearance_words(scene: Scene) -> list[str]:
    """Perceptual adjectives for the scene's degradations, strongest first ('crisp', 'clean' if none)."""
    words = []
    if scene.blur:
        words.append("slightly soft" if scene.blur < 1.0 else "soft" if scene.blur < 1.8 else "blurry"
                     if scene.blur < 3.0 else "very blurry")
    if scene.noise:
        words.append("slightly grainy" if scene.noise < 12 else "grainy" if scene.noise < 30 else "very noisy")
    if scene.jpeg:
        words.append("compressed" if scene.jpeg > 30 else "blocky" if scene.jpeg > 12 else "heavily compressed")
    if scene.palette:
        words.append("slightly banded" if scene.palette > 20 else "posterized" if scene.palette > 8
                     else "heavily posterized")
    if scene.brightness < 1:
        words.append("dark")
    elif scene.brightness > 1:
        words.append("bright")
    if scene.saturation < 1:
        words.append("dull")
    elif scene.saturation > 1:
        words.append("vivid")
    if not (scene.blur or scene.noise or scene.jpeg or scene.palette):
        words.insert(0, "crisp, clean")
    return words


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """'a dark, blurry photo of two red circles on a teal background'."""
    words = appearance_words(scene)
    shape = scene.shape if scene.count == 1 else scene.shape.replace("square", "squares").replace(
        "circle", "circles").replace("triangle", "triangles").replace("ring", "rings")
    adjectives = ", ".join(words)
    article = "an" if adjectives[:1] in "aeiou" else "a"
    return (f"{article} {adjectives} {rng.choice(NOUNS)} of {COUNT_WORDS[scene.count]} {scene.colour} {shape} "
            f"on a {scene.background} background")


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    return yy, xx


def draw_content(content: dict, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """The undegraded ``size`` x ``size`` RGB image of ``content`` (layout and texture from ``rng``): a
    background tone ramp, the shapes, then a faint grating and pixel noise (fine texture that blur,
    noise and compression visibly change)."""
    yy, xx = _grid(size)
    base = np.array(BACKGROUNDS[content["background"]], dtype=np.float32)
    tone = rng.uniform(-40, 40, 3).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * xx + np.sin(direction) * yy)[..., None]
    image = Image.fromarray(np.clip(base + ramp * tone, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    colour = COLOURS[content["colour"]]
    for _ in range(content["count"]):
        r = rng.uniform(0.12, 0.24) * size
        cx, cy = rng.uniform(r, size - r, 2)
        box = [cx - r, cy - r, cx + r, cy + r]
        if content["shape"] == "circle":
            draw.ellipse(box, fill=colour)
        elif content["shape"] == "ring":
            draw.ellipse(box, outline=colour, width=max(3, int(r / 3)))
        elif content["shape"] == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        else:
            draw.rectangle(box, fill=colour)
            if content["shape"] == "striped square":
                step = max(4, int(r / 3))
                for x in range(int(cx - r), int(cx + r), 2 * step):
                    draw.rectangle([x, cy - r, x + step - 1, cy + r], fill=tuple(255 - c for c in colour))
    pixels = np.asarray(image, dtype=np.float32)
    theta, period = rng.uniform(0, np.pi), rng.uniform(3.0, 8.0)
    grating = 10.0 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) * (size - 1) / period)
    pixels = pixels + grating[..., None] + rng.standard_normal(pixels.shape, dtype=np.float32) * 3.0
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def degrade(image: Image.Image, scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Apply the scene's degradations: blur, noise, JPEG, palette, then brightness and saturation."""
    if scene.blur:
        image = image.filter(ImageFilter.GaussianBlur(scene.blur))
    if scene.noise:
        noisy = np.asarray(image, dtype=np.float32) + scene.noise * rng.standard_normal(
            (image.height, image.width, 3), dtype=np.float32)
        image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")
    if scene.jpeg:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=scene.jpeg)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if scene.palette:
        # FASTOCTREE, as the demo's own quantisation: ~100x faster than median cut at the same palette size
        image = image.quantize(colors=scene.palette, method=Image.Quantize.FASTOCTREE).convert("RGB")
    if scene.brightness != 1:
        image = ImageEnhance.Brightness(image).enhance(scene.brightness)
    if scene.saturation != 1:
        image = ImageEnhance.Color(image).enhance(scene.saturation)
    return image


# A strength ladder: one degradation at each of its strength words, weakest first, with the range each word
# covers in :func:`appearance_words` (JPEG quality and palette size: integer ranges, high end excluded). Rung 0
# of a ladder is the clean image, rung k the degradation at word k.
LADDERS = {"blur": ((1.0, 1.8), (1.8, 3.0), (3.0, 5.0)),        # soft, blurry, very blurry
           "noise": ((4.0, 12.0), (12.0, 30.0), (30.0, 60.0)),  # slightly grainy, grainy, very noisy
           "jpeg": ((31, 50), (13, 31), (4, 13)),              # compressed, blocky, heavily compressed
           "palette": ((21, 40), (9, 21), (3, 9))}             # slightly banded, posterized, heavily posterized
LADDER_RUNGS = 1 + len(LADDERS["blur"])                        # clean, then every strength word


def content_rng(seed: int, index: int) -> np.random.Generator:
    """The RNG of scene ``index``'s content and layout: shared by all its variants."""
    return np.random.default_rng([SCENE_NAMESPACE, int(seed), int(index)])


def appearance_rng(seed: int, index: int, variant: int) -> np.random.Generator:
    """The RNG of variant ``variant`` of scene ``index``: its degradations, their noise and its caption's
    noun. The pre-training draws variant ``per_scene * step + v`` (v < per_scene) at ``step``, so that every image it
    sees is a fresh appearance of a cached content image, and any of them can be redrawn from its numbers."""
    return np.random.default_rng([SCENE_NAMESPACE, int(seed), int(index), 1 + int(variant)])


def _variant(seed: int, index: int, variant: int) -> tuple[Scene, str, np.random.Generator]:
    appearance = appearance_rng(seed, index, variant)
    scene = Scene(**sample_content(content_rng(seed, index)), **sample_appearance(appearance))
    return scene, caption(scene, appearance), appearance      # the RNG goes on to draw the noise pixels


def make_ladder_rung(content_image: Image.Image, seed: int, index: int, step: int, rung: int, variant: int
                     ) -> tuple[Image.Image, str, Scene]:
    """Rung ``rung`` (``0 .. LADDER_RUNGS - 1``) of scene ``index``'s strength ladder at pre-training step
    ``step``: the ladder's degradation (drawn per scene and step) at its word ``rung`` (0: clean), no photometric
    change; the value within the word's range, the noise pixels and the noun come from variant ``variant``'s RNG.
    The rungs of a ladder are hard negatives that differ only in the strength of one degradation."""
    ladder_rng = np.random.default_rng([SCENE_NAMESPACE, int(seed), int(index), 0, int(step)])
    kind = list(LADDERS)[int(ladder_rng.integers(len(LADDERS)))]
    appearance = appearance_rng(seed, index, variant)
    values = dict(blur=0.0, noise=0.0, jpeg=0, palette=0)
    if rung:
        low, high = LADDERS[kind][rung - 1]       # integer ranges (JPEG quality, palette size) draw integers
        values[kind] = int(appearance.integers(low, high)) if isinstance(low, int) else float(
            appearance.uniform(low, high))
    scene = Scene(**sample_content(content_rng(seed, index)), **values, brightness=1.0, saturation=1.0)
    return degrade(content_image, scene, appearance), caption(scene, appearance), scene


def scene_caption(seed: int, index: int, variant: int = 0) -> tuple[str, Scene]:
    """Caption and parameters of variant ``variant`` of scene ``index`` of set ``seed``, without drawing it."""
    scene, text, _ = _variant(seed, index, variant)
    return text, scene


def draw_scene_content(seed: int, index: int, size: int = 224) -> Image.Image:
    """Scene ``index``'s undegraded image (the same for all its variants)."""
    rng = content_rng(seed, index)
    return draw_content(sample_content(rng), rng, size)


def make_variant(content_image: Image.Image, seed: int, index: int, variant: int) -> tuple[Image.Image, str, Scene]:
    """Variant ``variant`` of scene ``index`` from its undegraded image (:func:`draw_scene_content`)."""
    scene, text, appearance = _variant(seed, index, variant)
    return degrade(content_image, scene, appearance), text, scene


def make_pair(seed: int, index: int, size: int = 224, variant: int = 0) -> tuple[Image.Image, str, Scene]:
    """Image, caption and parameters of variant ``variant`` of scene ``index`` of set ``seed`` (deterministic)."""
    return make_variant(draw_scene_content(seed, index, size), seed, index, variant)
