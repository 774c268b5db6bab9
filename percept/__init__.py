"""percept — the reference, reproducible implementation of PerceptCLIP.

Zalcher, Wasserman et al., "Don't Judge Before You CLIP: A Unified Approach for Perceptual Tasks",
TMLR 2025. CLIP ViT-L/14 vision encoder + LoRA (r=16, alpha=8) on q, k, v + an MLP head.
"""
from .model import ModelConfig, PerceptCLIP, build_model, load_model, load_weights, save_weights
from .official import OFFICIAL_CHECKPOINTS, load_official

__all__ = ["ModelConfig", "PerceptCLIP", "build_model", "load_model", "load_weights", "save_weights",
           "OFFICIAL_CHECKPOINTS", "load_official"]
__version__ = "0.1.0"
