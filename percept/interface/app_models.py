"""What the demo app (:mod:`percept.interface.app`) computes, without Gradio: the models it serves, the scores of uploaded
files, and the attention maps of the most important heads. The Gradio callbacks only wrap these functions, so
the tests call them directly.

* Models: run directories, hub folders (``percept export --format hub``), ``official-*`` checkpoints (or
  ``.pth`` files) — loaded by :func:`percept.engine.predict.load_predictor`, the loader of ``percept predict``. With none given, the embedded demo runs that ``percept notebooks`` (``make demo``) trains
  (:func:`demo_runs`): the app then starts offline.
* Scores: the same transform and reduction over test crops as ``percept predict``
  (:class:`percept.engine.predict.ImageFiles`, :func:`percept.engine.evaluate.reduce_crops`, LoRA merged), so the app's
  numbers equal ``percept predict``'s. A file that cannot be scored (not an image, over :data:`MAX_PIXELS`)
  becomes a message; CMYK, alpha and 16-bit images are converted by :func:`percept.core.images.load_rgb` and scored.
* Attention: head importance (:func:`percept.study.interpret.head_importance`) once per model, on a few of the run's
  test images (as notebook 06) or, where those are not on this machine, on the app's example images; then the
  CLS attention maps of the top heads on the selected image (:func:`percept.study.interpret.cls_attention_maps`).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from ..data.sources import is_synthetic
from ..data.synthetic import generate_synthetic_iqa
from ..engine.predict import (
    NON_FINITE,
    ImageFiles,
    load_predictor,
    output_columns,
    score_batch,
)
from ..engine.runs import PROTOCOL, RunDir
from ..engine.runtime import resolve_device
from ..engine.train_config import TrainConfig
from ..study.interpret import cls_attention_maps, head_importance, top_heads
from ..study.sweep import run_name
from .notebooks import DEMO_DATASETS, default_out, demo_config, sample_images

MAX_PIXELS = 50_000_000      # larger uploads are refused with a message (a 50 MP photo decodes to 150 MB of RGB)


@dataclass
class AppModel:
    """One model the app serves. ``model``: as loaded (LoRA unmerged: attention maps disable it to show the
    original encoder); ``scorer``: a copy with LoRA merged, as ``percept predict`` scores."""
    label: str
    source: str
    task: str
    kind: str                               # "regression" or "classification"
    class_names: list[str] | None
    head_name: str
    model: torch.nn.Module
    scorer: torch.nn.Module
    transform: object                       # percept predict's transform (test crops)
    single_transform: object                # one crop, for head importance and attention maps
    run_dir: Path | None = None
    notice: str = ""                        # what to know beside its scores ('' or the demo-model notice)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _importance: tuple | None = field(default=None, repr=False)

    def importance(self, examples: list[Path], n_images: int = 8) -> tuple[pd.DataFrame, str]:
        """(head importance table, which images it was measured on), computed once (under the model's lock)."""
        with self.lock:
            if self._importance is None:
                images, where = _importance_images(self, examples, n_images)
                table = head_importance(self.model, images, head_name=self.head_name, kind=self.kind)
                self._importance = (table, where)
            return self._importance


def demo_runs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """The demo runs the notebooks train (``percept notebooks`` = ``make demo``; notebooks 01-03/06:
    ``<workspace>/notebooks/runs/<budget>/<dataset>/...``, :func:`percept.interface.notebooks.default_out`),
    one per task (IQA, memorability, emotion; the newest finished one-dataset ``tiny_clip_prior`` run of each
    demo set). ``FileNotFoundError`` telling what to do when there is none."""
    root = Path(runs_dir) if runs_dir is not None else default_out() / "runs"
    found = []
    candidates = [r for r in RunDir.find(root) if r.is_complete() and r.best_weights.is_file()
                  and r.read_config().get("protocol") == PROTOCOL] if root.is_dir() else []   # never an older percept's
    for dataset in DEMO_DATASETS.values():
        runs = [r for r in candidates if _is_demo_run(r.read_config(), dataset)]
        if runs:
            found.append(max(runs, key=lambda r: r.metrics_file.stat().st_mtime).path)
    if not found:
        raise FileNotFoundError(f"no finished demo runs under {root}: `percept notebooks 01 02 03` trains them "
                                f"(offline, minutes; with --out DIR into DIR/runs); or pass models: --model "
                                f"official-iqa, a run directory, ...")
    return found


def _is_demo_run(config: dict, dataset: str) -> bool:
    """The run the notebooks train with their defaults (:func:`percept.interface.notebooks.demo_config`: the pretrained
    prior + LoRA), not one of notebook 08's ablations (random init, frozen, full, 2-phase, ...): same run name."""
    if [d["dataset"] for d in config["data"]] != [dataset]:
        return False
    return run_name(TrainConfig.from_dict(config)) == run_name(demo_config(dataset, "."))


_PRIVATE: list[Path] = []


def _private_folder() -> Path:
    """A temporary folder only this user can read (``mkdtemp``: mode 0700), made once per process."""
    if not _PRIVATE:
        _PRIVATE.append(Path(tempfile.mkdtemp(prefix="percept-app-examples-")))
    return _PRIVATE[0]


def example_images(folder: str | os.PathLike | None = None) -> list[Path]:
    """Four small PNGs of the embedded synthetic set (one reference: clean, blurred, noisy, JPEG-compressed),
    generated once into ``folder`` (default ``$PERCEPT_APP_EXAMPLES`` or this process's own private temporary
    folder — never a shared, predictable path another user could have filled first), which Gradio serves."""
    folder = Path(folder or os.environ.get("PERCEPT_APP_EXAMPLES") or _private_folder())
    names = ["ref00_gaussian_blur_1.png", "ref00_gaussian_blur_5.png", "ref00_gaussian_noise_5.png",
             "ref00_jpeg_5.png"]
    paths = [folder / "images" / n for n in names]
    if not all(p.is_file() for p in paths):
        generate_synthetic_iqa(folder, n_references=1, size=256, seed=0)
    return paths


# ----------------------------------------------------------------------------- loading
def load_models(models=None, runs_dir=None) -> list[AppModel]:
    """An :class:`AppModel` per entry of ``models`` (run directories, hub folders, ``official-*`` names or
    ``.pth`` files; None or empty: :func:`demo_runs`)."""
    sources = [os.fspath(m) for m in (models or demo_runs(runs_dir))]
    loaded = [_load_one(s) for s in sources]
    labels = [m.label for m in loaded]
    for i, m in enumerate(loaded):                      # two models of one dataset: tell them apart
        if labels.count(m.label) > 1:
            m.label = f"{m.label} [{i + 1}]"
    return loaded


def _load_one(source: str) -> AppModel:
    """One model by :func:`percept.engine.predict.load_predictor` (run directory, hub folder, merged file, official name or
    file)."""
    path = Path(source)
    predictor = load_predictor(source)
    model = predictor.model.to(_device()).eval()
    run_dir = path if (path / "best.safetensors").is_file() else None
    if predictor.preprocessing is not None:             # a run or an export of one: its own test transform
        single = dataclasses.replace(predictor.preprocessing, n_crops=1).transform()
        label = f"{predictor.task}: {predictor.head_name}"
        task = predictor.task
    else:                                               # an official checkpoint
        task = predictor.task or ("emotion" if predictor.kind == "classification" else "iqa")
        single, label = predictor.transform, (path.name if path.suffix or path.is_dir() else source)
    return AppModel(label, source, task, predictor.kind, predictor.class_names, predictor.head_name, model,
                    _merged(model), predictor.transform, single, run_dir, notice=predictor.notice)


def _device() -> torch.device:
    """The GPU when there is one (as ``percept predict --device auto``)."""
    return resolve_device("auto")[0]


def _merged(model):
    """A copy with LoRA folded into the encoder: what ``percept predict`` scores with."""
    return copy.deepcopy(model).merge_lora().eval()


# ----------------------------------------------------------------------------- scoring
def check_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> str:
    """Why ``path`` cannot be scored by the app ('' when it can): over ``max_pixels``. Reads only the header."""
    name = Path(path).name
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        return f"{name}: too large to decode safely (over {max_pixels / 1e6:.0f} MP); downscale it first"
    except (OSError, SyntaxError, ValueError):
        return ""                                        # load_rgb says what is wrong with it
    if width * height > max_pixels:
        return (f"{name}: {width} x {height} = {width * height / 1e6:.0f} MP is over the app's "
                f"{max_pixels / 1e6:.0f} MP limit; downscale it first (or score it with `percept predict`)")
    return ""


@torch.no_grad()
def predict_with(app_model: AppModel, paths: list[Path], batch_size: int = 8) -> pd.DataFrame:
    """``percept predict``'s rows (``image``, ``score``/``crop_std`` or ``prediction``/``prob_<class>``,
    ``error``) for ``paths``, with the loaded model: the same transform, crops and reduction
    (:class:`percept.engine.predict.ImageFiles`, :func:`percept.engine.predict.score_batch`)."""
    files = ImageFiles(paths, app_model.transform)
    net = app_model.scorer
    device, precision = resolve_device(str(next(net.parameters()).device))   # bf16 on a GPU, as percept predict
    rows = []
    for start in range(0, len(paths), batch_size):
        batch = [files[i] for i in range(start, min(start + batch_size, len(paths)))]
        with app_model.lock:
            rows += score_batch(net, batch, paths, app_model.head_name, app_model.kind, app_model.class_names,
                                device, precision)
    order = {str(p): k for k, p in enumerate(paths)}
    table = pd.DataFrame(rows, columns=output_columns(app_model.class_names))
    return table.sort_values("image", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def score_images(app_models: list[AppModel], files, max_pixels: int = MAX_PIXELS):
    """Score uploaded ``files`` with every model. Returns ``(table, details, messages)``: ``table`` one row per
    scored image (``image`` = file name, then per model its score, or its class and that class's probability);
    ``details`` each model's :func:`predict_with` rows (``percept predict``'s columns); ``messages`` one line per
    file that could not be scored, naming it and what to do. Never raises for a bad file."""
    paths = list(dict.fromkeys(Path(f) for f in (files or [])))
    messages, usable = [], []
    for path in paths:
        reason = check_image(path, max_pixels)
        (messages.append(reason) if reason else usable.append(path))
    details = {m.label: predict_with(m, usable) for m in app_models}
    failed = {}
    for label, table in details.items():
        for _, row in table[table["error"] != ""].iterrows():
            name = Path(row["image"]).name
            if row["error"] == NON_FINITE:          # the model's fault, not the file's
                failed.setdefault(row["image"], f"{name}: {label}: {NON_FINITE}")
            else:                                   # never the server's paths: the file's name only
                why = row["error"].split(": ", 1)[-1].replace(repr(row["image"]), repr(name)).replace(row["image"], name)
                failed.setdefault(row["image"], f"{name}: {why} — upload a JPEG, PNG, WebP, TIFF or BMP image")
    messages += list(failed.values())
    scored = [p for p in usable if str(p) not in failed]
    table = pd.DataFrame({"image": [p.name for p in scored]})
    for label, rows in details.items():
        rows = rows.set_index("image").loc[[str(p) for p in scored]]
        if "score" in rows:
            table[label] = rows["score"].to_numpy()
        else:
            table[label] = rows["prediction"].to_numpy()
            table[f"{label} p"] = [float(r[f"prob_{r['prediction']}"]) for _, r in rows.iterrows()]
    demo = [m for m in app_models if m.notice]
    if demo:                                          # beside every score: what a demo model's number is
        table["note"] = "; ".join(f"{m.label}: {m.notice}" for m in demo)
    return table, details, messages


# ----------------------------------------------------------------------------- attention
def _importance_images(app_model: AppModel, examples: list[Path], n: int) -> tuple[torch.Tensor, str]:
    """A few of the run's test images (one crop each, as notebook 06), or the app's examples where the run's
    data is not on this machine (or for an official checkpoint)."""
    if app_model.run_dir is not None and _run_data_here(app_model.run_dir):
        images, _, _ = sample_images(app_model.run_dir, n=n)
        return images, f"{len(images)} test images of {app_model.head_name}"
    images = torch.stack([_single(app_model, p) for p in examples[:n]])
    return images, f"the app's {len(images)} example images (the model's test images are not on this machine)"


def _run_data_here(run_dir: Path) -> bool:
    entry = RunDir(run_dir).read_config()["data"][0]
    root = Path(entry["root"])
    manifest = root / "manifest.csv" if is_synthetic(entry["dataset"]) else \
        Path(entry.get("manifest") or root / "percept_manifest.csv")
    return manifest.is_file()                         # never generate or prepare a dataset from the app


def _single(app_model: AppModel, path: Path) -> torch.Tensor:
    """One normalised crop (3, H, W) of ``path`` (the run's single-crop test transform, applied as
    ``percept predict`` applies it); ``ValueError`` naming the file when it cannot be read."""
    _, views, error = ImageFiles([path], app_model.single_transform)[0]
    if views is None:
        raise ValueError(error)
    return views[0]


def attention_rows(app_model: AppModel, path: str | os.PathLike, examples: list[Path], k: int = 3):
    """(the image crop, one row per top-``k`` head: ``layer, head, importance, finetuned, original,
    difference``, which images the importance was measured on). ``ValueError`` for a model without LoRA."""
    if not app_model.model.has_lora:
        raise ValueError(f"{app_model.label} has no LoRA adapter (strategy {app_model.model.config.strategy!r}): "
                         f"there is no original encoder to compare its attention with")
    table, where = app_model.importance(examples)
    image = _single(app_model, Path(path))
    rows = []
    for _, top in top_heads(table, k=k).iterrows():
        layer, head = int(top["layer"]), int(top["head"])
        with app_model.lock:
            maps = cls_attention_maps(app_model.model, image, layer=layer, head=head)
        rows.append({"layer": layer, "head": head, "importance": float(top["importance"]), "image_index": 0,
                     **{name: maps[name][0] for name in ("finetuned", "original", "difference")}})
    return image, rows, where
