"""The numbered notebooks (``notebooks/NN_name.ipynb``): the helpers they call and the runner that executes them.

Helpers keep the notebooks to calls, displays and plots:

* :func:`resolve_paths` — where a notebook writes (``outputs/notebooks/<name>``), the shared demo data
  and runs (``outputs/notebooks/{data,runs}``: a run trained by one notebook is reused by the next,
  runs being idempotent), and ``figures/``; all resolved from the repository, whatever the cwd.
* :func:`setup` — CPU threads and the figure style. One thread by default: on a small shared CPU,
  torch's default of one thread per core makes the tiny demo model ~10x *slower* when another
  process keeps a core busy (measured on 2 cores: 54 s vs 5 s per epoch).
* :func:`demo_config` / :func:`train_run` — a run of the training engine on the embedded demo data
  (``tiny_clip_prior``: the demo's own shipped prior, CPU, seconds) or on a prepared real dataset, placed at
  ``runs_dir/<budget>/<datasets>/<variant>/split<k>/lr<lr>``.
* :func:`dataset_markdown`, :func:`split_counts`, :func:`read_log`, :func:`metrics_table`,
  :func:`sample_images`, :func:`parameter_table` — what the notebooks display; :func:`headline` — the number
  the runner prints beside the notebook's time.

Runner: :func:`run_notebooks` executes notebooks with papermill (kernel ``python3`` of this
environment), writes the executed copies to ``out_dir/<name>.ipynb``, prints each notebook's time and,
on failure, names the notebook and the failing cell. ``python -m percept.notebooks --out DIR`` (``make
demo``) runs all of them on the embedded defaults.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from .data.sources import is_synthetic
from .tasks import get_task

# percept.train imports tqdm.auto, which warns in a kernel without ipywidgets; progress bars are off anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEMO_DATASETS = {"iqa": "synthetic_iqa", "memorability": "synthetic_strength", "emotion": "synthetic_distortion"}
DEMO_DESCRIPTIONS = {
    "synthetic_iqa": "IQA pipeline (PLCC loss, multi-crop test). Label `synthetic_quality` on 1..5 = "
                     "5 − 0.95·(level − 1) − a small per-type offset: a fixed function of the distortion level.",
    "synthetic_strength": "memorability pipeline (MSE loss, resize + centre crop). Label `distortion_strength` = "
                          "(level − 1) / 4 in [0, 1], in the range of a memorability score.",
    "synthetic_distortion": "emotion pipeline (cross-entropy, RandomResizedCrop). Label = the distortion *type*, "
                            "4 classes: gaussian_blur, gaussian_noise, jpeg, color_quantization.",
}


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


def repo_root() -> Path:
    """The repository holding this package (found from ``percept.__file__``, not the cwd)."""
    return REPO_ROOT


# ------------------------------------------------------------------------------------------ set-up
@dataclass
class NotebookPaths:
    name: str
    repo: Path
    out_dir: Path       # this notebook's outputs (tables, CSVs)
    figures_dir: Path   # figures (PNG + PDF)
    runs_dir: Path      # run directories, shared by the notebooks
    data_root: Path     # the embedded demo data (generated on first use), shared by the notebooks

    def __str__(self) -> str:
        return "\n".join(f"{k:12s} {v}" for k, v in self.__dict__.items())


def resolve_paths(name: str, out_dir=None, figures_dir=None, runs_dir=None, data_root=None) -> NotebookPaths:
    """Paths of notebook ``name``; ``None`` means the default under the repository:
    ``outputs/notebooks/<name>``, ``figures``, ``outputs/notebooks/runs``, ``outputs/notebooks/data``."""
    base = REPO_ROOT / "outputs" / "notebooks"
    paths = NotebookPaths(name=name, repo=REPO_ROOT,
                          out_dir=Path(out_dir) if out_dir else base / name,
                          figures_dir=Path(figures_dir) if figures_dir else REPO_ROOT / "figures",
                          runs_dir=Path(runs_dir) if runs_dir else base / "runs",
                          data_root=Path(data_root) if data_root else base / "data")
    for p in (paths.out_dir, paths.figures_dir, paths.runs_dir, paths.data_root):
        p.mkdir(parents=True, exist_ok=True)
    return paths


HEADLINE_FILE = "headline.txt"


def headline(paths: NotebookPaths, text: str) -> str:
    """Record the notebook's headline number (``paths.out_dir/headline.txt``), which the runner prints beside
    its time (``make demo``: one line per notebook); returns ``text`` for display."""
    from .files import atomic_path
    with atomic_path(paths.out_dir / HEADLINE_FILE) as tmp:
        tmp.write_text(text.strip() + "\n")
    return text


def test_summary(run_dir) -> str:
    """``synthetic_iqa: test SRCC 0.912`` — a run's selection metric on each of its test sets."""
    from .data.sources import dataset_task
    parts = []
    for dataset, values in read_metrics(run_dir)["test"].items():
        metric = get_task(dataset_task(dataset)).select_metric
        parts.append(f"{dataset}: test {'SRCC' if metric == 'srcc' else metric} {values[metric]:.3f}")
    return "; ".join(parts)


def setup(cpu_threads: int | None = 1, seed: int = 0) -> dict:
    """Threads (``None``: torch's default), seeds, figure style; returns the environment for display."""
    import torch
    from .figures import set_style
    if cpu_threads:
        torch.set_num_threads(int(cpu_threads))
    try:   # figures display inline in a notebook (they are built without pyplot)
        from IPython import get_ipython
        shell = get_ipython()
        if shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell":
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:
        pass
    torch.manual_seed(seed)
    set_style()
    import percept
    return {"percept": percept.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "repository": str(REPO_ROOT)}


def demo_data(data_root: str | os.PathLike, n_references: int | None = None, size: int = 256) -> pd.DataFrame:
    """Generate the embedded synthetic set in ``data_root`` (once; reused afterwards) and return its
    manifest. ``n_references`` default: the training engine's (12 references x 4 distortions x 5 levels)."""
    from .data.sources import SYNTHETIC_REFERENCES
    from .data.synthetic import generate_synthetic_iqa
    return generate_synthetic_iqa(data_root, n_references=n_references or SYNTHETIC_REFERENCES, size=size, seed=0)


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
    from .data.sources import DataConfig
    if is_synthetic(dataset):
        return DataConfig(dataset, str(data_root))
    if dataset_root is None:
        raise ValueError(f"{dataset} is a real dataset: give its folder (dataset_root=...), prepared with "
                         f"`percept prepare {dataset} --root FOLDER`")
    return DataConfig(dataset, str(dataset_root), manifest=None if manifest is None else str(manifest))


def demo_config(datasets, data_root, *, dataset_root=None, manifest=None, dataset_roots: Mapping | None = None,
                backbone: str = "tiny_clip_prior",
                pretrained: bool = True, epochs: int = 8, patience: int = 4, lr: float = 1e-3,
                batch_size: int = 16, test_crops: int = 3, split: int = 1, head_finetune: bool = False,
                seed: int = 0, device: str = "auto", **model):
    """A :class:`~percept.train.TrainConfig` for the notebooks. ``datasets``: a name or a list (several =
    multi-dataset; real ones need ``dataset_root`` or ``dataset_roots={name: folder}``); ``model``: ModelConfig overrides (``strategy``, ``head``, ``lora_r``, ``lora_alpha``).
    Defaults are the demo's (the shipped tiny image-text prior ``tiny_clip_prior`` + LoRA, 8 epochs, patience 4,
    3 test crops); the paper's are 40 epochs,
    patience 12, batch 32, 15 IQA test crops, ``clip_vit_l14`` pretrained."""
    from .model import ModelConfig
    from .train import TrainConfig
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    roots = dict(dataset_roots or {})
    data = [data_config(n, data_root, roots.get(n, dataset_root), manifest if len(names) == 1 else None)
            for n in names]
    return TrainConfig(data=data, model=ModelConfig(backbone=backbone, pretrained=pretrained, **model), split=split,
                       lr=lr, batch_size=batch_size, max_epochs=epochs, patience=patience, test_crops=test_crops,
                       head_finetune=head_finetune, seed=seed, device=device, quiet=True)


def budget_tag(config) -> str:
    """The settings that change results but are not in the sweep's run name (epochs, patience, batch,
    test crops, seed, and the shipped prior's SHA-256 prefix): runs of different budgets never share a directory."""
    tag = (f"e{config.max_epochs}-p{config.patience}-b{config.batch_size}-c{config.test_crops}"
           f"-s{config.seed}{'' if config.model.pretrained else '-random'}")
    from .backbones import get_spec, shipped_weights_sha256
    spec = get_spec(config.model.backbone)
    if config.model.pretrained and spec.shipped_weights and config.model.weights_path is None:
        # which shipped prior: runs adapted from one prior are never reused for a regenerated one
        tag += "-prior" + shipped_weights_sha256(spec)[:8]
    return tag


def run_dir_for(config, runs_dir) -> Path:
    """``runs_dir/<budget>/<datasets>/<variant>/split<k>/lr<lr>`` (:func:`percept.sweep.run_name`)."""
    from .sweep import run_name
    return Path(runs_dir) / budget_tag(config) / run_name(config)


def train_run(config, runs_dir) -> tuple[Path, dict]:
    """Train ``config`` (or reuse the finished run) under :func:`run_dir_for`; returns (run_dir, metrics)."""
    from .train import train
    run_dir = run_dir_for(config, runs_dir)
    started = time.time()
    metrics = train(config, run_dir, log=lambda *a, **k: None)
    seconds = time.time() - started
    print(f"{run_dir.relative_to(runs_dir)}: {'trained in %.0f s' % seconds if seconds > 1 else 'reused'}")
    return run_dir, metrics


def sweep(configs: Mapping, runs_dir) -> dict[str, str]:
    """:func:`percept.sweep.run_sweep` of a grid (from :func:`percept.sweep.expand_grid`) under
    ``runs_dir/<budget>``, in this process (CPU); returns each run's status."""
    from .sweep import run_sweep
    first = next(iter(configs.values()))
    root = Path(runs_dir) / budget_tag(first)
    return run_sweep(configs, root, gpus=[] if not _cuda() else None, log=lambda *a, **k: None)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def budget_root(config, runs_dir) -> Path:
    """The folder that holds every run of ``config``'s budget (for :func:`percept.results.results_tables`)."""
    return Path(runs_dir) / budget_tag(config)


def run_data_root(run_dir, dataset: str | None = None) -> Path:
    """The data folder of a run's (first, or named) dataset: image ids in predictions are relative to it."""
    data = read_config(run_dir)["data"]
    return Path(next(d for d in data if dataset is None or d["dataset"] == dataset)["root"])


def cross_records(root) -> list[dict]:
    """Every finished cross-dataset evaluation (``RUN/eval/*/metrics.json``) below ``root``."""
    from .runs import RunDir
    records = [run.read_metrics() for run in RunDir.find(root, evaluations=True)]
    return [r for r in records if r.get("status") == "complete"]


def setting_of(row: Mapping) -> str:
    """single / single, 2-phase / multi (stage 1) / multi, 2-phase — the rows of Tables 5, A.4-A.6, A.9."""
    multi = "+" in str(row["datasets"])
    return ("multi" if multi else "single") + (", 2-phase" if row["head_finetune"] else
                                               (" (stage 1)" if multi else ""))


def multi_dataset_view(aggregated: pd.DataFrame, datasets: Sequence[str], metrics: Sequence[str],
                       statistic: str = "median") -> pd.DataFrame:
    """Long table ``setting, dataset, metric, value`` of the paper-default variant (LoRA r16/a8 + MLP) on
    ``datasets``: single- vs multi-dataset, with and without stage 2."""
    rows = aggregated[aggregated["dataset"].isin(list(datasets)) & (aggregated["strategy"] == "lora")
                      & (aggregated["head"] == "mlp") & (aggregated["lora_r"] == 16)
                      & (aggregated["lora_alpha"] == 8)]
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
    return f"{start}{strategy} + {row['head']}"


# ------------------------------------------------------------------------------------------ displays
def caption(text: str, datasets, backbone: str = "tiny_clip_prior", pretrained: bool = True) -> str:
    """A figure/table caption (markdown) that says what the data and the model are."""
    from .paper import PAPER_DATASET_NAMES
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    synthetic = [n for n in names if is_synthetic(n)]
    real = [PAPER_DATASET_NAMES.get(n, n) for n in names if not is_synthetic(n)]
    parts = []
    if synthetic:
        parts.append(f"embedded demo data ({', '.join(f'`{n}`' for n in synthetic)}): synthetic labels computed "
                     f"from the distortion parameters, **not human judgements**")
    if real:
        parts.append(f"real dataset{'s' if len(real) > 1 else ''} {', '.join(real)} (human judgements)")
    model = f"`{backbone}` encoder, {'pretrained' if pretrained else 'random-initialised'}"
    if pretrained and backbone == "tiny_clip_prior":
        model = (f"`{backbone}` encoder, the demo's own prior: image-text pre-trained by percept on generated images "
                 f"and generated captions (no human judgement anywhere)")
    verdict = "" if pretrained and not synthetic else " A pipeline check, not a paper result."
    return f"**{text}** Data: {'; '.join(parts)}. Model: {model}.{verdict}"


def dataset_markdown(dataset: str) -> str:
    """The dataset card (real dataset) or what the embedded demo set is (synthetic), as markdown."""
    if not is_synthetic(dataset):
        from .data.cards import get_card, render_card_markdown
        return render_card_markdown(get_card(dataset))
    from .data.sources import SYNTHETIC_REFERENCES, SYNTHETIC_SPLITS
    return (f"### Embedded demo data: `{dataset}`\n\n"
            f"Procedural reference images (KADID-style) × 4 distortions (blur, noise, JPEG, colour "
            f"quantisation) × 5 levels; by default {SYNTHETIC_REFERENCES} references = "
            f"{SYNTHETIC_REFERENCES * 20} images, generated offline and deterministically on first use "
            f"(`percept.data.synthetic`). {DEMO_DESCRIPTIONS[dataset]}\n\n"
            f"**These labels are computed from the distortion parameters; they are not human judgements.** "
            f"Numbers on this set check the pipeline; they say nothing about the paper's results. "
            f"{SYNTHETIC_SPLITS} splits, by reference image (no reference in two parts).")


def split_counts(source) -> pd.DataFrame:
    """Images per part (rows) and split (columns) of a :class:`~percept.data.sources.DatasetSource`."""
    from .data.splits import split_columns
    columns = split_columns(source.frame)
    table = pd.DataFrame({c: source.frame[c].value_counts() for c in columns}).fillna(0).astype(int)
    order = [p for p in ("train", "val", "test") if p in table.index] + \
        [p for p in table.index if p not in ("train", "val", "test")]
    return table.loc[order].rename_axis("part")


def read_log(run_dir) -> pd.DataFrame:
    """A run's per-epoch ``log.csv``."""
    from .runs import RunDir
    return RunDir(run_dir).read_log()


def read_config(run_dir) -> dict:
    """A run's ``config.json``."""
    from .runs import RunDir
    return RunDir(run_dir).read_config()


def read_metrics(run_dir) -> dict:
    """A run's ``metrics.json``."""
    from .runs import RunDir
    return RunDir(run_dir).read_metrics()


def run_datasets(run_dir) -> list[str]:
    """The datasets a run was trained on."""
    return [d["dataset"] for d in read_config(run_dir)["data"]]


def run_task(run_dir) -> str:
    """The task (``iqa``, ``memorability``, ``emotion``) of a run's (first) dataset."""
    from .data.sources import dataset_task
    return dataset_task(run_datasets(run_dir)[0])


def run_caption(text: str, run_dir) -> str:
    """:func:`caption` for the data and model of a run directory."""
    config = read_config(run_dir)
    return caption(text, run_datasets(run_dir), config["model"]["backbone"], config["model"]["pretrained"])


def score_titles(scores: pd.DataFrame) -> list[str]:
    """Gallery captions for :func:`percept.predict.predict_images` output (score or predicted class)."""
    value = scores["score"].map("score {:.3f}".format) if "score" in scores else "class " + scores["prediction"]
    return [f"{Path(p).stem}\n{v}" for p, v in zip(scores["image"], value)]


def examples(source, split: int = 1, n: int = 8, part: str = "test"):
    """(PIL images, captions) of ``n`` images of a source's split part, spread evenly over the label range."""
    from .analysis import gallery_images
    rows = source.frame[source.frame[f"split{split}"] == part].sort_values([source.label_column, "image"],
                                                                           kind="mergesort")
    if len(rows) > n:
        rows = rows.iloc[[round(i * (len(rows) - 1) / (n - 1)) for i in range(n)]] if n > 1 else rows.head(1)
    labels = rows[source.label_column]
    captions = [f"{source.class_names[int(v)]}" if source.class_names else f"label {v:.2f}" for v in labels]
    return gallery_images(rows["image"].tolist(), source.root), captions


def metrics_table(metrics: Mapping, part: str = "test", digits: int = 4) -> pd.DataFrame:
    """``metrics.json`` of a run (or a dict with it) as a table: rows = datasets, columns = metrics."""
    table = pd.DataFrame(metrics[part]).T.rename_axis("dataset")
    if "n_images" in table.columns:
        table["n_images"] = table["n_images"].astype(int)
    return table.round(digits)


def sample_images(run_dir, n: int = 8, part: str = "test", dataset: str | None = None):
    """(images (n, 3, H, W) normalised, ids, labels) from a run's dataset with its test transform — single
    crops (an IQA item's first crop) as :mod:`percept.interpret` expects — normalised with the run's backbone
    statistics (plot them with ``denormalize=config["model"]["backbone"]``)."""
    import torch
    from .backbones import normalization
    from .data.sources import DataConfig, open_source
    config = read_config(run_dir)
    data = config["data"][0] if dataset is None else next(d for d in config["data"] if d["dataset"] == dataset)
    source = open_source(DataConfig(**data))
    split = source.group_split(config["split"]) if len(config["data"]) > 1 else config["split"]
    items = source.dataset(split, part, train_transform=False, test_crops=1,
                           normalization=normalization(config["model"]["backbone"]))
    picked = [items[i] for i in range(min(n, len(items)))]
    images = torch.stack([it["image"][0] if it["image"].ndim == 4 else it["image"] for it in picked])
    return images, [it["id"] for it in picked], [it["label"] for it in picked]


def parameter_table(backbone: str = "tiny_clip", strategies: Sequence[str] = ("lora", "frozen", "full"),
                    heads: Sequence[str] = ("mlp",), outputs: int = 1, meta: bool = True) -> pd.DataFrame:
    """Parameter counts per (strategy, head) of ``backbone`` (random weights). ``meta=True`` builds on
    PyTorch's meta device: exact counts, no memory, about a second even for ViT-L/14."""
    import torch
    from .model import build_model
    rows = []
    for strategy in strategies:
        for head in heads:
            with torch.device("meta") if meta else contextlib.nullcontext():
                model = build_model(backbone=backbone, pretrained=False, strategy=strategy, head=head,
                                    heads={"main": outputs})
            counts = model.parameter_counts()
            rows.append({"backbone": backbone, "strategy": strategy, "head": head, "lora": counts["lora"],
                         "head_params": counts["head"], "trainable": counts["trainable"], "total": counts["total"]})
            del model
    table = pd.DataFrame(rows)
    table["trainable %"] = (100 * table["trainable"] / table["total"]).round(3)
    return table


# ------------------------------------------------------------------------------------------ runner
def notebook_paths(names: Iterable[str] | None = None, directory: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order; ``names``: some of them, by ``NN``,
    ``NN_name`` or ``name``."""
    directory = Path(directory) if directory else NOTEBOOKS_DIR
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if names is None:
        return found
    picked = []
    for name in names:
        stem = Path(str(name)).stem
        matches = [p for p in found if stem in (p.stem, p.stem[:2], p.stem[3:])]
        if not matches:
            raise ValueError(f"no notebook {name!r} in {directory}; notebooks: {', '.join(p.stem for p in found)}")
        picked += [m for m in matches if m not in picked]
    return picked


def parameters_cell(notebook) -> int | None:
    """Index of the cell tagged ``parameters`` (None if absent)."""
    for i, cell in enumerate(notebook.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    return None


@contextlib.contextmanager
def _importable_percept():
    """Make ``import percept`` work in the kernel (a subprocess) even where the package is not installed:
    the repository goes first on PYTHONPATH for the duration."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _failure(path: Path, err: Exception) -> NotebookError:
    cell = getattr(err, "cell_index", None)
    source = (getattr(err, "source", "") or "").strip().splitlines()
    where = f"cell {cell}" if cell is not None else "a cell"
    if getattr(err, "exec_count", None) is not None:
        where += f" (execution count {err.exec_count})"
    first = f" starting `{source[0][:100]}`" if source else ""
    what = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    return NotebookError(f"notebook {path.name} failed in {where}{first}: {what}")


def run_notebooks(names: Iterable[str] | None = None, out_dir: str | os.PathLike = REPO_ROOT / "outputs" / "notebooks",
                  parameters: Mapping | None = None, kernel: str | None = "python3",
                  notebooks_dir: str | os.PathLike | None = None, per_notebook: Mapping[str, Mapping] | None = None,
                  timeout: int | None = 1200, stop_on_error: bool = True, log=print) -> list[dict]:
    """Execute notebooks with papermill; executed copies go to ``out_dir/<name>.ipynb``.

    One line per notebook: its time and its headline (what it wrote with :func:`headline`). Every notebook
    gets ``parameters`` plus ``out_dir=out_dir/<name>``, ``runs_dir=out_dir/runs`` and
    ``data_root=out_dir/data`` unless given (so that one call shares its runs and data between notebooks);
    ``per_notebook[name]`` adds parameters for one notebook. The kernel runs with the notebook's folder as
    its working directory. Returns ``[{"notebook", "seconds", "status", "output", "error"}]``; raises
    :class:`NotebookError` naming the notebook and the failing cell (``stop_on_error``)."""
    import papermill as pm

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = notebook_paths(names, notebooks_dir)
    if not paths:
        raise ValueError(f"no notebooks in {notebooks_dir or NOTEBOOKS_DIR}")
    shared = {"runs_dir": str(out_dir / "runs"), "data_root": str(out_dir / "data"), **(parameters or {})}
    results = []
    with _importable_percept():
        for path in paths:
            params = {"out_dir": str(out_dir / path.stem), **shared, **((per_notebook or {}).get(path.stem, {}))}
            output = out_dir / path.name
            headline_file = Path(params["out_dir"]) / HEADLINE_FILE
            headline_file.unlink(missing_ok=True)   # a stale headline never speaks for this execution
            started = time.time()
            record = {"notebook": path.stem, "output": str(output), "error": None, "headline": ""}
            try:
                # the kernel's own log at ERROR: ipykernel warns about unencrypted TCP on every start (a local
                # kernel on the loopback interface, as JupyterLab's), which buried the runner's lines
                pm.execute_notebook(str(path), str(output), parameters=params, kernel_name=kernel,
                                    cwd=str(path.parent), progress_bar=False, log_output=False,
                                    execution_timeout=timeout, extra_arguments=["--IPKernelApp.log_level=ERROR"])
                record["status"] = "ok"
                if headline_file.is_file():
                    record["headline"] = headline_file.read_text().strip()
            except Exception as err:   # papermill wraps kernel errors; report the notebook and cell
                failure = _failure(path, err)
                record.update(status="failed", error=str(failure))
                record["seconds"] = round(time.time() - started, 1)
                results.append(record)
                log(f"{path.stem:24s} FAILED after {record['seconds']:6.1f} s  -> {output}")
                log(f"  {failure}")
                if stop_on_error:
                    raise failure from err
                continue
            record["seconds"] = round(time.time() - started, 1)
            results.append(record)
            log(f"{path.stem:24s} {record['seconds']:6.1f} s  {record['headline'] or '-> ' + str(output)}")
    total = sum(r["seconds"] for r in results)
    log(f"{len(results)} notebooks, {sum(r['status'] == 'ok' for r in results)} ok, {total:.0f} s in all")
    return results


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="percept notebooks",
                                     description="Execute the numbered notebooks with papermill on their embedded "
                                                 "defaults (offline, CPU); executed copies go to --out.")
    parser.add_argument("names", nargs="*", help="notebooks to run (NN, NN_name or name; default: all)")
    parser.add_argument("--out", default=str(REPO_ROOT / "outputs" / "notebooks"), help="output folder")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="parameter for every notebook (VALUE parsed as JSON when it can be; repeatable)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: %(default)s)")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    args = parser.parse_args(argv)
    parameters = {}
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter {item!r}: expected KEY=VALUE")
        parameters[key] = _value(value)
    try:
        results = run_notebooks(args.names or None, args.out, parameters, args.kernel,
                                stop_on_error=not args.keep_going)
    except (NotebookError, ValueError) as err:
        print(f"percept notebooks: error: {err}", file=sys.stderr)
        return 1
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
