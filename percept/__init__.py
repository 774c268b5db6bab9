"""percept — the reference, reproducible implementation of PerceptCLIP.

Zalcher, Wasserman et al., "Don't Judge Before You CLIP: A Unified Approach for Perceptual Tasks",
TMLR 2025. CLIP ViT-L/14 vision encoder + LoRA (r=16, alpha=8) on q, k, v + an MLP head.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# Its layers are its folders: core, model, data, engine, study, interface (each imports only from itself and the
# folders before it in this order; tests/test_architecture.py enforces it).
LAYERS = ("core", "model", "data", "engine", "study", "interface")

_LAZY = {"ModelConfig": "model.perceptclip", "PerceptCLIP": "model.perceptclip", "build_model": "model.perceptclip",
         "load_model": "model.perceptclip", "load_weights": "model.perceptclip", "save_weights": "model.perceptclip",
         "OFFICIAL_CHECKPOINTS": "model.official", "load_official": "model.official", "load_merged": "model.merged",
         "RunDir": "engine.runs", "list_models": "study.catalog", "list_backbones": "study.catalog",
         "list_datasets": "study.catalog", "predict_images": "engine.predict", "create_metric": "engine.metric",
         "PerceptMetric": "engine.metric"}


def __getattr__(name: str):
    """Import the heavy modules (torch, timm, peft) only when one of their names is used."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'percept' has no attribute {name!r}")


# Module paths from before the layers became folders, which notebooks and scripts may import: they keep working
# for one release, with a DeprecationWarning naming the new path. (``percept.model`` is the model's folder now
# and still gives its public names.)
_MOVED = {old: f"percept.{new}" for old, new in {
    "tasks": "core.tasks", "metrics": "core.metrics", "backbones": "model.backbones", "official": "model.official",
    "merged": "model.merged", "train": "engine.train", "evaluate": "engine.evaluate", "predict": "engine.predict",
    "metric": "engine.metric", "runs": "engine.runs", "results": "study.results", "paper": "study.paper",
    "export": "study.export", "interpret": "study.interpret", "analysis": "study.analysis",
    "figures": "study.figures", "notebooks": "interface.notebooks"}.items()}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import percept.train`` gives ``percept.engine.train`` (the same module object) and warns once."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        return importlib.util.spec_from_loader(fullname, self) if fullname.startswith(__name__ + ".") and old in _MOVED else None

    def create_module(self, spec):
        new = _MOVED[spec.name.removeprefix(__name__ + ".")]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        """Nothing to run: the module is the new path's, already imported."""


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())

__all__ = ["ModelConfig", "PerceptCLIP", "build_model", "load_model", "load_weights", "save_weights",
           "OFFICIAL_CHECKPOINTS", "load_official", "load_merged", "RunDir", "list_models", "list_backbones",
           "list_datasets",
           "predict_images", "create_metric", "PerceptMetric"]
__version__ = "0.1.0"
