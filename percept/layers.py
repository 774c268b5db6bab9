"""The package's layers, as data: a module imports only from its own layer or the layers below it.

``tests/test_architecture.py`` parses every import of the package (module-level and inside functions) and
fails on an upward import, on an import cycle, and on a module that is not placed here. Read from the
bottom up:

==============  ===========================================================================================
layer           modules
==============  ===========================================================================================
core            task registry, atomic files, package data, metrics, image loading + CLIP statistics, checkpoints
model           attention (public hook points), heads, backbones, the PerceptCLIP model, the merged and official
                layouts
data            dataset cards, manifests, preparers, splits, datasets, preprocessing, cache, demo sets
engine          device/precision (runtime), losses, sampling, mixed-task losses, training, evaluation, stage 2,
                run directories, how a model scores (its test preprocessing, exported), prediction, the pyiqa-style
                metric, the demo prior's pre-training
experiments     what exists (catalog), sharing (export, model cards), the paper's tables as data, results,
                sweeps, reproduce, benchmarks, the demo runner
analysis        interpretability (head importance, attention maps), error analysis, figures
interface       the command line and the notebooks' helpers
==============  ===========================================================================================
"""
from __future__ import annotations

LAYERS: dict[str, tuple[str, ...]] = {
    "core": ("tasks", "config_names", "options", "files", "resources", "metrics", "images", "checkpoint"),
    "model": ("attention", "heads", "backbones", "model", "merged", "official_layout", "official",
              "official_reference"),
    "data": ("data",),
    "engine": ("runtime", "distributed", "losses", "sampling", "gpu_augment", "runs", "run_status", "evaluate",
               "head_finetune", "tracking", "train_config", "multitask", "train", "scoring", "predict", "metric",
               "prior"),
    "experiments": ("catalog", "model_card", "export", "paper_specs", "results", "paper", "unified", "launch", "sweep",
                    "reproduce", "bench", "demo"),
    "analysis": ("interpret", "analysis", "figures"),
    "interface": ("cli", "cli_commands", "cli_options", "cli_config", "app", "app_models", "notebooks", "notebook_study", "notebook_display", "notebook_runner",
                  "__main__", "layers"),
}
LAYER_ORDER = tuple(LAYERS)


def layer_of(module: str) -> str | None:
    """The layer of ``percept.<module>`` (a subpackage's modules share its layer); None if unplaced."""
    name = module.removeprefix("percept.")
    for layer, members in LAYERS.items():
        if any(name == m or name.startswith(m + ".") for m in members):
            return layer
    return None
