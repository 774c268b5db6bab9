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

_LAZY = {"ModelConfig": "model.perceptclip", "PerceptCLIP": "model.perceptclip", "build_model": "engine.presets",
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
    "analysis": "study.analysis", "app": "interface.app", "app_models": "interface.app_models",
    "attention": "model.attention", "backbones": "model.backbones", "bench": "study.bench",
    "catalog": "study.catalog", "checkpoint": "core.checkpoint", "cli": "interface.cli",
    "cli_commands": "interface.cli_commands", "cli_config": "interface.cli_config",
    "cli_options": "interface.cli_options", "config_names": "core.options", "data.split_files": "data.pinned",
    "demo": "study.demo", "distributed": "engine.distributed", "evaluate": "engine.evaluate",
    "export": "study.export", "figures": "study.figures", "files": "core.files",
    "gpu_augment": "engine.gpu_augment", "head_finetune": "engine.head_finetune", "heads": "model.perceptclip",
    "images": "core.images", "interpret": "study.interpret", "launch": "study.launch", "losses": "engine.losses",
    "merged": "model.merged", "metric": "engine.metric", "metrics": "core.metrics", "model_card": "study.export",
    "multitask": "engine.multitask", "notebook_display": "interface.notebook_display",
    "notebook_runner": "interface.notebook_runner", "notebook_study": "interface.notebook_study",
    "notebooks": "interface.notebooks", "official": "model.official", "official_layout": "model.official_layout",
    "official_reference": "model.official_reference", "options": "core.options", "paper": "study.paper",
    "paper_specs": "study.paper_specs", "predict": "engine.predict", "prior": "engine.prior",
    "reproduce": "study.reproduce", "resources": "core.resources", "results": "study.results",
    "run_status": "engine.runs", "runs": "engine.runs", "runtime": "engine.runtime", "sampling": "engine.sampling",
    "scoring": "engine.scoring", "sweep": "study.sweep", "tasks": "core.tasks", "tracking": "engine.tracking",
    "train": "engine.train", "train_config": "engine.train_config", "unified": "study.unified"}.items()}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import percept.train`` gives ``percept.engine.train`` (the same module object) and warns once."""

    @staticmethod
    def new_name(fullname: str) -> str | None:
        """The new path of an old one (``percept.prior.pretrain`` -> ``percept.engine.prior.pretrain``), else None."""
        if not fullname.startswith(__name__ + "."):
            return None
        parts = fullname.split(".")[1:]
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in _MOVED:
                return ".".join([_MOVED[".".join(parts[:i])], *parts[i:]])
        return None

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if self.new_name(fullname) else None

    def create_module(self, spec):
        new = self.new_name(spec.name)
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        """Nothing to run: the module is the new path's, already imported."""

    def get_code(self, fullname):
        """``python -m percept.<old>`` runs the new module's code (runpy asks the loader for it)."""
        new = self.new_name(fullname)
        warnings.warn(f"{fullname} moved to {new}; run python -m {new}", DeprecationWarning, stacklevel=2)
        return compile(f"import runpy\nrunpy.run_module({new!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{fullname}, moved to {new}>", "exec")


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())   # before the path finder: an old package's submodules too

__all__ = ["ModelConfig", "PerceptCLIP", "build_model", "load_model", "load_weights", "save_weights",
           "OFFICIAL_CHECKPOINTS", "load_official", "load_merged", "RunDir", "list_models", "list_backbones",
           "list_datasets",
           "predict_images", "create_metric", "PerceptMetric"]
__version__ = "0.1.0"
