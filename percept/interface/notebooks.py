"""The helpers the numbered notebooks (``notebooks/NN_name.ipynb``) call: ``from percept.interface import notebooks as nb``.

Helpers keep the notebooks to calls, displays and plots:

* :func:`resolve_paths` — where a notebook writes (``notebooks/<name>`` of the workspace: a checkout's ``outputs/``,
  ``$PERCEPT_HOME`` or ``~/percept``, :func:`percept.core.resources.workspace`), the shared demo data and runs
  (``notebooks/{data,runs}``: a run trained by one notebook is reused by the next, runs being idempotent), and
  figures (a checkout's ``figures/``, else the workspace's); never relative to the cwd.
* :func:`setup` — CPU threads and the figure style. One thread by default: on a small shared CPU,
  torch's default of one thread per core makes the tiny demo model ~10x *slower* when another
  process keeps a core busy (measured on 2 cores: 54 s vs 5 s per epoch).
* :func:`demo_config` / :func:`train_run` — a run of the training engine on the embedded demo data
  (``tiny_clip_prior``: the demo's own shipped prior, CPU, seconds) or on a prepared real dataset, placed at
  ``runs_dir/<budget>/<datasets>/<variant>/split<k>/lr<lr>``.
* :func:`headline` — the number the runner prints beside the notebook's time;
* what the notebooks display (:func:`caption`, :func:`dataset_markdown`, :func:`split_counts`, :func:`read_log`,
  :func:`metrics_table`, :func:`sample_images`, :func:`parameter_table`, ...) lives in
  :mod:`percept.interface.notebook_display`, the runner (:func:`run_notebooks`, ``percept notebooks --out DIR``
  = ``make demo``) in :mod:`percept.interface.notebook_runner`; both are importable from here.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

import percept

from ..core.files import atomic_path
from ..core.tasks import get_task
from ..data.sources import SYNTHETIC_REFERENCES, DataConfig, dataset_task, is_synthetic
from ..data.synthetic import generate_synthetic_iqa
from ..engine.presets import get_preset, preset_config, split_overrides
from ..engine.runs import RunDir
from ..engine.train import train
from ..engine.train_config import TrainConfig
from ..model.backbones import get_spec, shipped_weights_sha256
from ..model.config import ModelConfig, key_value
from ..study.figures import set_style
from ..study.run_key import PAPER_MODEL, same_value
from ..study.sweep import run_name, run_sweep
from .notebook_display import (  # noqa: F401
    DEMO_DESCRIPTIONS,
    caption,
    dataset_markdown,
    examples,
    metrics_table,
    parameter_table,
    read_config,
    read_log,
    read_metrics,
    run_caption,
    run_datasets,
    run_task,
    sample_images,
    score_titles,
    split_counts,
)
from .notebook_runner import (  # noqa: F401
    CHECKOUT,
    HEADLINE_FILE,
    NOTEBOOKS_DIR,
    NotebookError,
    copy_notebooks,
    default_out,
    main,
    notebook_paths,
    parameters_cell,
    run_notebooks,
)

# percept.engine.train imports tqdm.auto, which warns in a kernel without ipywidgets; progress bars are off anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

DEMO_DATASETS = {"iqa": "synthetic_iqa", "memorability": "synthetic_strength", "emotion": "synthetic_distortion"}


# ------------------------------------------------------------------------------------------ set-up
@dataclass
class NotebookPaths:
    name: str
    out_dir: Path       # this notebook's outputs (tables, CSVs)
    figures_dir: Path   # figures (PNG + PDF)
    runs_dir: Path      # run directories, shared by the notebooks
    data_root: Path     # the embedded demo data (generated on first use), shared by the notebooks

    def __str__(self) -> str:
        return "\n".join(f"{k:12s} {v}" for k, v in self.__dict__.items())


def resolve_paths(name: str, out_dir=None, figures_dir=None, runs_dir=None, data_root=None) -> NotebookPaths:
    """Paths of notebook ``name``: ``out_dir`` (default: ``notebooks/<name>`` of the workspace, :func:`default_out`)
    and, beside it, the runs and data the notebooks share (``runs/``, ``data/``) and the figures (the checkout's
    ``figures/``; installed: ``figures/`` beside them; ``$PERCEPT_FIGURES_DIR`` if set); each can be given instead."""
    base = Path(out_dir).resolve().parent if out_dir else default_out()
    if CHECKOUT is not None:
        figures = CHECKOUT / "figures"
    else:   # installed: beside the notebooks' folders (percept notebooks --out DIR), else the workspace's figures/
        figures = base / "figures" if out_dir else base.parent / "figures"
    paths = NotebookPaths(name=name,
                          out_dir=Path(out_dir) if out_dir else base / name,
                          figures_dir=Path(figures_dir or os.environ.get("PERCEPT_FIGURES_DIR") or figures),
                          runs_dir=Path(runs_dir) if runs_dir else base / "runs",
                          data_root=Path(data_root) if data_root else base / "data")
    for p in (paths.out_dir, paths.figures_dir, paths.runs_dir, paths.data_root):
        p.mkdir(parents=True, exist_ok=True)
    return paths




def headline(paths: NotebookPaths, text: str) -> str:
    """Record the notebook's headline number (``paths.out_dir/headline.txt``), which the runner prints beside
    its time (``make demo``: one line per notebook); returns ``text`` for display."""
    with atomic_path(paths.out_dir / HEADLINE_FILE) as tmp:
        tmp.write_text(text.strip() + "\n")
    return text


def test_summary(run_dir) -> str:
    """``synthetic_iqa: test SRCC 0.912`` — a run's selection metric on each of its test sets."""
    parts = []
    for dataset, values in read_metrics(run_dir)["test"].items():
        metric = get_task(dataset_task(dataset)).select_metric
        parts.append(f"{dataset}: test {'SRCC' if metric == 'srcc' else metric} {values[metric]:.3f}")
    return "; ".join(parts)


def setup(cpu_threads: int | None = None, seed: int = 0) -> dict:
    """Threads (default ``$PERCEPT_CPU_THREADS``, else 1; 0: torch's default), seeds, figure style; returns the
    environment for display."""
    cpu_threads = int(os.environ.get("PERCEPT_CPU_THREADS", 1)) if cpu_threads is None else cpu_threads
    if cpu_threads:
        torch.set_num_threads(int(cpu_threads))
    try:   # figures display inline in a notebook (they are built without pyplot)
        from IPython import get_ipython  # IPython: the notebooks extra
        shell = get_ipython()
        if shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell":
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:
        pass
    torch.manual_seed(seed)
    set_style()
    return {"percept": percept.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "percept_from": str(Path(percept.__file__).parent)}


def demo_data(data_root: str | os.PathLike, n_references: int | None = None, size: int = 256) -> pd.DataFrame:
    """Generate the embedded synthetic set in ``data_root`` (once; reused afterwards) and return its
    manifest. ``n_references`` default: ``$PERCEPT_DEMO_REFERENCES``, else the training engine's (12 references x 4
    distortions x 5 levels)."""
    return generate_synthetic_iqa(data_root, n_references=n_references or int(os.environ.get("PERCEPT_DEMO_REFERENCES", SYNTHETIC_REFERENCES)), size=size, seed=0)


def ensure_demo_data(datasets, data_root, n_references: int | None = None) -> str:
    """Generate the embedded set when any of ``datasets`` is synthetic; returns a one-line description."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    if not any(is_synthetic(n) for n in names):
        return f"real data: {', '.join(names)}"
    manifest = demo_data(data_root, n_references)
    return (f"embedded demo data in {data_root}: {manifest['reference'].nunique()} references x "
            f"{manifest['distortion'].nunique()} distortions x {manifest['level'].nunique()} levels = "
            f"{len(manifest)} images")


def demo_image_files(data_root, n: int = 8, levels: Sequence[int] = (1, 5)) -> list[Path]:
    """``n`` image files of the embedded set: one reference, every distortion, at ``levels``."""
    path = Path(data_root) / "manifest.csv"
    manifest = pd.read_csv(path) if path.is_file() else demo_data(data_root)
    reference = manifest["reference"].iloc[-1]
    rows = manifest[(manifest["reference"] == reference) & manifest["level"].isin(list(levels))]
    rows = rows.sort_values(["level", "distortion_id"]).head(n)
    return [Path(data_root) / p for p in rows["image"]]


# ------------------------------------------------------------------------------------------ runs
def data_config(dataset: str, data_root, dataset_root=None, manifest=None):
    """A :class:`~percept.data.sources.DataConfig`: the embedded sets live in ``data_root``; a real
    dataset in ``dataset_root`` (prepared with ``percept prepare``), manifest optional."""
    if is_synthetic(dataset):
        return DataConfig(dataset, str(data_root))
    if dataset_root is None:
        raise ValueError(f"{dataset} is a real dataset: give its folder (dataset_root=...), prepared with "
                         f"`percept prepare {dataset} --root FOLDER`")
    return DataConfig(dataset, str(dataset_root), manifest=None if manifest is None else str(manifest))


def demo_config(datasets, data_root, *, preset: str = "demo", dataset_root=None, manifest=None,
                dataset_roots: Mapping | None = None, **overrides):
    """A :class:`~percept.engine.train_config.TrainConfig` for the notebooks: the ``preset``
    (:mod:`percept.engine.presets`; ``demo``: the shipped tiny image-text prior + LoRA on the CPU budget) with
    ``overrides`` (TrainConfig fields; ModelConfig fields flat, e.g. ``lora_r=8``, or under ``model``), quiet.
    ``datasets``: a name or a list (several = multi-dataset); real ones need ``dataset_root`` or
    ``dataset_roots={name: folder}``."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    roots = dict(dataset_roots or {})
    data = [data_config(n, data_root, roots.get(n, dataset_root), manifest if len(names) == 1 else None)
            for n in names]
    return preset_config(preset, data, **{"quiet": True, **overrides})


@dataclass(frozen=True)
class RunSettings:
    """A notebook's ``preset`` and ``overrides`` parameters, checked: ``kwargs`` for :func:`demo_config`, and the
    values its captions name (``backbone``, ``pretrained``, ``split``)."""

    preset: str = "demo"
    overrides: Mapping = field(default_factory=dict)

    def __post_init__(self):
        get_preset(self.preset)
        split_overrides(self.overrides)          # an unknown field: one line naming it

    @property
    def kwargs(self) -> dict:
        return {"preset": self.preset, **self.overrides}

    def value(self, name: str):
        """A TrainConfig or ModelConfig field's value: the override, else the preset's, else the default."""
        train, model = split_overrides(self.overrides)
        preset = get_preset(self.preset)
        for values in (model, train, preset.model, preset.train):
            if name in values:
                return values[name]
        for cls in (ModelConfig, TrainConfig):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if name in fields:
                return fields[name].default
        raise KeyError(name)

    @property
    def model_overrides(self) -> dict:
        """The ModelConfig fields among the overrides (for ``percept.build_model(preset=..., **model_overrides)``)."""
        return split_overrides(self.overrides)[1]

    backbone = property(lambda self: self.value("backbone"))
    pretrained = property(lambda self: self.value("pretrained"))
    split = property(lambda self: self.value("split"))


def budget_tag(config) -> str:
    """The settings that change results but are not in the sweep's run name (epochs, patience, batch,
    test crops, seed, percept's protocol, and the shipped prior's SHA-256 prefix): runs of different budgets never
    share a directory, and runs of an older percept protocol are trained anew beside, never resumed."""
    tag = (f"e{config.max_epochs}-p{config.patience}-b{config.batch_size}-c{config.test_crops}"
           f"-s{config.seed}{'' if config.model.pretrained else '-random'}-v{config.protocol}")
    spec = get_spec(config.model.backbone)
    if config.model.pretrained and spec.shipped_weights and config.model.weights_path is None:
        # which shipped prior: runs adapted from one prior are never reused for a regenerated one
        tag += "-prior" + shipped_weights_sha256(spec)[:8]
    return tag


def run_dir_for(config, runs_dir) -> Path:
    """``runs_dir/<budget>/<datasets>/<variant>/split<k>/lr<lr>`` (:func:`percept.study.sweep.run_name`)."""
    return Path(runs_dir) / budget_tag(config) / run_name(config)


def train_run(config, runs_dir) -> tuple[Path, dict]:
    """Train ``config`` (or reuse the finished run) under :func:`run_dir_for`; returns (run_dir, metrics). A
    two-phase run takes its stage 1 from the finished one-stage run of the same configuration when there is one
    (``TrainConfig.stage1_from``: the same weights as retraining it, in the time of stage 2)."""
    run_dir = run_dir_for(config, runs_dir)
    config = _reusing_stage1(config, runs_dir)
    started = time.time()
    metrics = train(config, run_dir, log=lambda *a, **k: None)
    seconds = time.time() - started
    print(f"{run_dir.relative_to(runs_dir)}: {'trained in %.0f s' % seconds if seconds > 1 else 'reused'}")
    return run_dir, metrics


def _reusing_stage1(config, runs_dir):
    """``config``, with ``stage1_from`` set when it is a two-phase run whose one-stage run is finished."""
    if config.head_finetune and not config.stage1_from:
        one_stage = RunDir(run_dir_for(replace(config, head_finetune=False), runs_dir))
        if one_stage.is_complete():
            return replace(config, stage1_from=str(one_stage.path))
    return config


def sweep(configs: Mapping, runs_dir) -> dict[str, str]:
    """:func:`percept.study.sweep.run_sweep` of a grid (from :func:`percept.study.sweep.expand_grid`) under
    ``runs_dir/<budget>``, in this process (CPU); returns each run's status. Two-phase runs take stage 1 from
    their finished one-stage runs (:func:`train_run`)."""
    first = next(iter(configs.values()))
    root = Path(runs_dir) / budget_tag(first)
    configs = {name: _reusing_stage1(config, runs_dir) for name, config in configs.items()}
    return run_sweep(configs, root, gpus=[] if not _cuda() else None, log=lambda *a, **k: None)


def _cuda() -> bool:
    return torch.cuda.is_available()


def budget_root(config, runs_dir) -> Path:
    """The folder that holds every run of ``config``'s budget (for :func:`percept.study.results.results_tables`)."""
    return Path(runs_dir) / budget_tag(config)


def run_data_root(run_dir, dataset: str | None = None) -> Path:
    """The data folder of a run's (first, or named) dataset: image ids in predictions are relative to it."""
    data = read_config(run_dir)["data"]
    return Path(next(d for d in data if dataset is None or d["dataset"] == dataset)["root"])


def cross_records(root) -> list[dict]:
    """Every finished cross-dataset evaluation (``RUN/eval/*/metrics.json``) below ``root``."""
    records = [run.read_metrics() for run in RunDir.find(root, evaluations=True)]
    return [r for r in records if r.get("status") == "complete"]


def setting_of(row: Mapping) -> str:
    """single / single, 2-phase / multi (stage 1) / multi, 2-phase — the rows of Tables 5, A.4-A.6, A.9."""
    multi = "+" in str(row["datasets"])
    return ("multi" if multi else "single") + (", 2-phase" if row["head_finetune"] else
                                               (" (stage 1)" if multi else ""))


def multi_dataset_view(aggregated: pd.DataFrame, datasets: Sequence[str], metrics: Sequence[str],
                       statistic: str = "median", settings: RunSettings | None = None) -> pd.DataFrame:
    """Long table ``setting, dataset, metric, value`` of one model variant on ``datasets``: single- vs
    multi-dataset, with and without stage 2. The variant: the ``settings``' model (a notebook's preset and
    overrides), else the paper's (LoRA r16/a8 + MLP); any encoder (a demo's too)."""
    model = {k: (key_value(settings.value(k)) if settings is not None else v) for k, v in PAPER_MODEL.items()
             if k not in ("backbone", "weights")}
    paper_variant = pd.Series([all(same_value(r.get(k), v) for k, v in model.items()) for _, r in aggregated.iterrows()],
                              index=aggregated.index, dtype=bool)
    rows = aggregated[aggregated["dataset"].isin(list(datasets)) & paper_variant]
    rows = rows[rows["datasets"].isin(list(datasets) + ["+".join(datasets)])]
    if "weights" in rows and rows["weights"].ne("random").any():   # notebook 08's random-init runs share the folder
        rows = rows[rows["weights"].ne("random")]
    out = []
    for _, row in rows.iterrows():
        for metric in metrics:
            column = f"{statistic}_{metric}"
            if column in row and pd.notna(row[column]):
                out.append({"setting": setting_of(row), "dataset": row["dataset"], "metric": metric,
                            "value": float(row[column])})
    order = ["single", "single, 2-phase", "multi (stage 1)", "multi, 2-phase"]
    frame = pd.DataFrame(out, columns=["setting", "dataset", "metric", "value"])
    frame["setting"] = pd.Categorical(frame["setting"], categories=order, ordered=True)
    return frame.sort_values(["metric", "dataset", "setting"]).reset_index(drop=True)


def variant_of(row: Mapping) -> str:
    """A short label of a model variant: ``lora r16/a8 + mlp``, ``frozen + linear``, ``random init, full + mlp``."""
    strategy = f"lora r{int(row['lora_r'])}/a{float(row['lora_alpha']):g}" if row["strategy"] == "lora" \
        else str(row["strategy"])
    start = "random init, " if row.get("weights") == "random" else ""
    return f"{start}{strategy} + {row['head_type']}"


if __name__ == "__main__":   # python -m percept.interface.notebooks --out DIR = percept notebooks --out DIR
    sys.exit(main())
