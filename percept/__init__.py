"""percept — the reference, reproducible implementation of PerceptCLIP.

Zalcher, Wasserman et al., "Don't Judge Before You CLIP: A Unified Approach for Perceptual Tasks",
TMLR 2025. CLIP ViT-L/14 vision encoder + LoRA (r=16, alpha=8) on q, k, v + an MLP head.
"""
import importlib

_LAZY = {"ModelConfig": "model", "PerceptCLIP": "model", "build_model": "model", "load_model": "model",
         "load_weights": "model", "save_weights": "model", "OFFICIAL_CHECKPOINTS": "official",
         "load_official": "official", "load_merged": "merged", "RunDir": "runs", "list_models": "catalog",
         "list_backbones": "catalog",
         "list_datasets": "catalog", "predict_images": "predict",
         "create_metric": "metric", "PerceptMetric": "metric"}


def __getattr__(name: str):
    """Import the heavy modules (torch, timm, peft) only when one of their names is used."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'percept' has no attribute {name!r}")


__all__ = ["ModelConfig", "PerceptCLIP", "build_model", "load_model", "load_weights", "save_weights",
           "OFFICIAL_CHECKPOINTS", "load_official", "load_merged", "RunDir", "list_models", "list_backbones",
           "list_datasets",
           "predict_images", "create_metric", "PerceptMetric"]
__version__ = "0.1.0"
