"""Score your own images with a trained run or an official PerceptCLIP checkpoint (``percept predict``).

* a run directory (``best.safetensors`` + ``config.json``): exactly the test transform evaluation uses for
  the run's (first) dataset and backbone (:func:`percept.data.sources.dataset_transform`): the dataset's
  LoDa pre-resize for IQA (e.g. KonIQ-10k's 512x384), then the mean over 15 deterministic random crops
  keyed by the file's base name (App. A.1; the same crops evaluation takes of that file), or for
  memorability/emotion resize + centre crop; normalised with the backbone's mean/std. The dataset's
  files are not needed;
* a hub folder (``percept export --format hub``: ``config.json`` + ``model.safetensors``): its first head's
  dataset's test transform, as for a run (the release's resize + centre crop for a dataset percept does not know);
* ``official-iqa`` / ``official-memorability`` / ``official-emotions`` (or a path to an official
  ``.pth``): the release's preprocessing (resize 224, centre crop, CLIP normalisation).

Output: one row per image: ``image``, ``score`` (regression) or ``prediction`` + ``prob_<class>``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .runs import RunDir
from .tasks import get_task
from .data.preprocessing import TensorTestTransform, center_crop_transform, crop_key
from .images import load_rgb


def _run_predictor(run: RunDir):
    from .data.sources import dataset_facts, dataset_transform

    config = run.read_config()
    first, task, classes, _ = dataset_facts(config["data"][0])     # a card's, a CSV dataset's or a demo set's
    model = run.load_model()
    transform = dataset_transform(first, train=False, test_crops=int(config.get("test_crops", 15)),
                                  normalization=model.normalization)   # what evaluation of the run uses
    return model, first, get_task(task).kind, classes, transform


def _official_predictor(source: str):
    from .official import load_official
    model = load_official(source)
    card = model.official
    kind = "classification" if card is not None and card.labels else "regression"
    mean, std = model.normalization                                  # CLIP ViT-L/14: CLIP's statistics
    return model, "main", kind, (card.labels if card is not None else None), center_crop_transform(mean=mean, std=std)


def _hub_predictor(folder: Path):
    """A ``percept export --format hub`` folder (``config.json`` + ``model.safetensors``): its first head, named by
    its dataset, takes that dataset's test transform, as a run would; a head of a dataset percept does not know
    (a CSV dataset's) the release's resize + centre crop, with class indices for names."""
    from .data.sources import SYNTHETIC, dataset_facts, dataset_transform
    from .data.cards import CARDS
    from .model import PerceptCLIP
    model = PerceptCLIP.from_pretrained(folder)
    head = model.head_names()[0]
    if head in CARDS or head in SYNTHETIC:
        _, task, classes, _ = dataset_facts({"dataset": head, "root": "."})
        transform = dataset_transform(head, train=False, normalization=model.normalization)
        return model, head, get_task(task).kind, classes, transform
    mean, std = model.normalization
    kind = "regression" if model.config.heads[head] == 1 else "classification"
    return model, head, kind, None, center_crop_transform(mean=mean, std=std)


def load_predictor(model: str | os.PathLike):
    """(model, head_name, kind, class names, transform) for a run directory, a hub folder (``percept export
    --format hub``) or an official checkpoint name/file."""
    path = Path(model)
    if path.is_dir() and not (path / "best.safetensors").is_file() and (path / "model.safetensors").is_file():
        return _hub_predictor(path)
    if path.is_dir():
        run = RunDir(path)
        run.require_weights()
        return _run_predictor(run)
    return _official_predictor(os.fspath(model))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
GLOB_CHARACTERS = set("*?[")


def collect_images(inputs) -> list[Path]:
    """The image files named by ``inputs``, in order, each once: files; folders (recursively, the files with an
    image suffix, sorted); glob patterns (``photos/**/*.jpg``); and lists (``.txt``: one path per line,
    ``.csv``: its ``image`` column, else its first; relative paths are relative to the list's folder). An input
    that names nothing raises ``FileNotFoundError`` naming it."""
    found: list[Path] = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix.lower() in (".txt", ".csv"):
            found += [p if p.is_absolute() else path.parent / p for p in map(Path, _list_file(path))]
        elif path.is_file():
            found.append(path)
        elif GLOB_CHARACTERS & set(str(item)):
            anchor = Path(path.anchor) if path.is_absolute() else Path(".")
            matches = sorted(p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file())
            if not matches:
                raise FileNotFoundError(f"no file matches {str(item)!r}")
            found += matches
        else:
            raise FileNotFoundError(f"image file(s) not found: {item}")
    return list(dict.fromkeys(found))


def _list_file(path: Path) -> list[str]:
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if table.empty:
        raise ValueError(f"{path} lists no images")
    return [v for v in table["image" if "image" in table.columns else table.columns[0]] if v]


class ImageFiles(torch.utils.data.Dataset):
    """Item ``i``: ``(i, views, "")`` with the predictor's transform applied (``views``: (V, 3, H, W)), or
    ``(i, None, reason)`` when the file cannot be read (corrupt, truncated, empty, not an image) — one bad file
    never stops a collection.

    ``fast_resize``: the same steps on the decoded 8-bit pixels in torch (:class:`TensorTestTransform` on
    ``uint8``: torch's antialiased 8-bit resize, within one grey level of PIL's, ~5x faster) instead of PIL's."""

    def __init__(self, paths: list[Path], transform, fast_resize: bool = False):
        self.paths, self.transform = paths, transform
        self.tensor_transform = TensorTestTransform(transform) if fast_resize else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            image = load_rgb(path)
            if self.tensor_transform is not None:
                pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)    # (1, 3, H, W) uint8
                x = self.tensor_transform(pixels, key=crop_key(path))[0]
            elif getattr(self.transform, "needs_key", False):
                x = self.transform(image, key=path)            # IQA test crops are keyed by the base name
            else:
                x = self.transform(image)
        except (ValueError, OSError) as err:
            return i, None, str(err)
        return i, x if x.ndim == 4 else x.unsqueeze(0), ""


def _done_rows(out: Path) -> pd.DataFrame:
    """The finished rows of an earlier, possibly interrupted, ``out`` (a torn last line is dropped)."""
    if not out.is_file() or out.stat().st_size == 0:
        return pd.DataFrame()
    table = pd.read_csv(out, dtype={"image": str, "error": str}, keep_default_na=False, na_values=[""],
                        on_bad_lines="skip")
    value = "score" if "score" in table.columns else "prediction"
    if "image" not in table.columns or value not in table.columns or "error" not in table.columns:
        raise ValueError(f"{out} is not a percept predict output (columns image, {value}, error); "
                         f"choose another --out")
    complete = table[value].notna() | table["error"].notna()
    return table[complete].assign(error=table["error"].fillna("")).reset_index(drop=True)


@torch.no_grad()
def predict_images(images, model: str | os.PathLike = "official-iqa", device: str = "auto", batch_size: int = 8,
                   *, out: str | os.PathLike | None = None, workers: int | None = None, head_name: str | None = None,
                   progress: bool = False, precision: str = "auto", fast_resize: bool = False) -> pd.DataFrame:
    """Scores for ``images`` (files, folders, globs or list files: :func:`collect_images`) with ``model`` (a run
    directory or an official checkpoint). One row per image: ``score`` and ``crop_std`` (regression; the standard
    deviation over the IQA test crops, as evaluation's predictions.csv) or ``prediction`` + ``prob_<class>``, and
    ``error`` (why a file could not be scored; empty otherwise).

    ``out``: a CSV written as it goes (one batch at a time, flushed); a re-run with the same ``out`` scores only
    the images it does not hold yet (resume). ``workers``: DataLoader processes decoding the images (None: 0 on
    the CPU, where a worker would take a core from the model, and the CPU cores up to 16 with a GPU).
    ``head_name``: which head of a multi-dataset run (default: the run's first dataset's). ``precision``: ``auto``
    (bf16 autocast on a GPU, fp32 on the CPU), ``bf16`` or ``fp32`` (:func:`percept.runtime.resolve_device`). LoRA is merged into
    the encoder's weights first (outputs equal to the unmerged model's to float rounding; tested against
    evaluation, which does not merge). ``fast_resize``: resize in torch's 8-bit kernels instead of PIL's (within
    one grey level of PIL's pixels; scores no longer bit-equal to evaluation's, see :class:`ImageFiles`): for
    small models on few CPU cores, where PIL's resize costs more than the model."""
    from tqdm.auto import tqdm
    from .runtime import resolve_device, resolve_workers
    paths = collect_images(images)
    net, default_head, kind, classes, transform = load_predictor(model)
    head_name = head_name or default_head
    if head_name not in net.head_names():
        raise ValueError(f"head {head_name!r} is not in this model; its heads: {', '.join(net.head_names())}")
    out = Path(out) if out is not None else None
    done = _done_rows(out) if out is not None else pd.DataFrame()
    names = list(classes or map(str, range(net.config.heads[head_name]))) if kind == "classification" else None
    columns = output_columns(names)
    done = done.reindex(columns=columns) if len(done) else done      # an older file's columns: this version's
    if out is not None:
        from .files import atomic_write_text
        atomic_write_text(out, done.to_csv(index=False) if len(done) else "")   # drop a torn line before appending
    finished = set(done["image"]) if len(done) else set()
    todo = [p for p in paths if str(p) not in finished]
    device, precision = resolve_device(device, precision)
    net = net.merge_lora().to(device).eval()       # LoRA folded into q, k, v: the same outputs, plain matmuls
    workers = resolve_workers(workers, device)
    loader = torch.utils.data.DataLoader(ImageFiles(todo, transform, fast_resize), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list)
    threads = torch.get_num_threads()
    if workers and device.type == "cpu":    # decoding workers and the model share the CPU cores: no oversubscription
        threads = max(1, min(threads, (os.cpu_count() or 1) - workers))
    rows: list[dict] = []
    with _torch_threads(threads):
        for batch in tqdm(loader, desc="percept predict", unit="batch", disable=not progress):
            new = score_batch(net, batch, todo, head_name, kind, names, device, precision)
            rows += new
            if out is not None:
                _append(out, pd.DataFrame(new, columns=columns))
    table = pd.concat([done, pd.DataFrame(rows, columns=columns)], ignore_index=True) if len(done) else \
        pd.DataFrame(rows, columns=columns)
    order = {str(p): k for k, p in enumerate(paths)}
    return table.sort_values("image", key=lambda c: c.map(order), kind="stable").reset_index(drop=True) \
        if len(table) else table


@torch.no_grad()
def score_batch(net, batch: list, paths: list, head_name: str, kind: str, names: list[str] | None, device,
                precision: str) -> list[dict]:
    """The output rows of one batch of :class:`ImageFiles` items ``(i, views | None, reason)`` of ``paths``: the
    model on every view, reduced over an image's views (:func:`percept.evaluate.reduce_crops`); a row with the
    reason for each unreadable file. ``net``: in eval mode on ``device`` (LoRA merged or not)."""
    from .evaluate import reduce_crops
    from .runtime import autocast
    rows = [{"image": str(paths[i]), "error": reason} for i, x, reason in batch if x is None]
    good = [(i, x) for i, x, _ in batch if x is not None]
    if good:
        x = torch.cat([v for _, v in good]).to(device)
        with autocast(device, precision):
            output = net(x, head_name).float().reshape(len(good), -1, net.config.heads[head_name])
        reduced = reduce_crops(output, kind)
        rows += [{"image": str(paths[i]), **_row(reduced, row, names), "error": ""} for row, (i, _) in enumerate(good)]
    return rows


@contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _row(reduced: dict, i: int, names: list[str] | None) -> dict:
    """One image's output columns; ``names``: the class names (classification) or None (regression)."""
    if names is not None:
        return {"prediction": names[int(reduced["prediction"][i])],
                **{f"prob_{c}": float(v) for c, v in zip(names, reduced["probs"][i])}}
    return {"score": float(reduced["prediction"][i]), "crop_std": float(reduced["crop_std"][i])}


def output_columns(names: list[str] | None) -> list[str]:
    """The columns of ``percept predict``'s table (``names``: the class names, or None for regression)."""
    if names is not None:
        return ["image", "prediction", *(f"prob_{c}" for c in names), "error"]
    return ["image", "score", "crop_std", "error"]   # crop_std: over the IQA test crops (0 for one view)


def _append(out: Path, rows: pd.DataFrame) -> None:
    """Append one batch's rows to ``out`` (the header first if the file is empty), flushed to disk."""
    fresh = not out.is_file() or out.stat().st_size == 0
    with open(out, "a", encoding="utf-8", newline="") as f:
        rows.to_csv(f, header=fresh, index=False)
        f.flush()
        os.fsync(f.fileno())
