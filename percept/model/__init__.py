"""Layer 2, model: the PerceptCLIP network and the weight layouts it reads and writes.

Attention hook points (``attention``), the backbone registry (``backbones``), the model and its heads
(``perceptclip``), the merged-LoRA export (``merged``), the official checkpoints' catalogue (``official``,
torch-free) and weight layout (``official_layout``), and the official-style reference network
(``official_reference``: transformers + peft, what ``percept bench`` compares the fast path with and what a
model card's loading snippet builds).

``from percept.model import build_model`` (the home of these names before the layers became folders) keeps
working: the model's public names are read from ``perceptclip`` on first use.
"""
import importlib

_PUBLIC = ("ModelConfig", "PerceptCLIP", "build_model", "load_model", "load_weights", "save_weights",
           "MLPHead", "LinearHead", "create_head", "HEAD_TYPES")


def __getattr__(name: str):
    """The model's public names, imported (with torch, timm, peft) only when one is used."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(".perceptclip", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
