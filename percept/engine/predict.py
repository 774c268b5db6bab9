"""Score your own images with a trained run, an export of one, or an official PerceptCLIP checkpoint
(``percept predict``).

* a run directory (``best.safetensors`` + ``config.json``): exactly the test transform evaluation uses for the
  chosen head's dataset and the run's backbone (:class:`percept.engine.scoring.ModelScoring`): the dataset's LoDa
  pre-resize for IQA (e.g. KonIQ-10k's 512x384), then the mean over the run's test crops, whose positions depend
  only on the image's size (App. A.1; the same crops evaluation takes), or for memorability/emotion resize +
  centre crop; normalised with the backbone's mean/std. The dataset's files are not needed;
* a hub folder (``percept export --format hub``) or a merged file (``--format merged``): the scoring its run
  wrote beside the weights (``preprocessor_config.json``, the merged file's metadata), so the same numbers;
* ``official-iqa`` / ``official-memorability`` / ``official-emotions`` (or a path to an official
  ``.pth``, including ``percept export --format official``): the release's preprocessing (resize 224, centre
  crop, CLIP normalisation).

Output: one row per image: ``image``, ``score`` (regression) or ``prediction`` + ``prob_<class>``, ``error``. A
score that is not finite (NaN, inf: damaged weights) is an error, never a score.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.files import atomic_write_text, exclusive_lock, read_json, write_json
from ..core.images import load_rgb
from ..data.preprocessing import center_crop_transform
from ..data.tensor_preprocessing import TensorTestTransform
from ..model.merged import load_merged, read_merged_metadata
from ..model.official import load_official
from ..model.perceptclip import PerceptCLIP
from .evaluate import reduce_crops
from .runs import RunDir
from .runtime import autocast, resolve_device, resolve_workers
from .scoring import GENERATED_DATA_NOTICE, ModelScoring, read_hub_scoring


@dataclass
class Predictor:
    """A model ready to score: its ``head_name``, what the output is (``kind``, ``class_names``, ``task``,
    ``label_range``) and the ``transform`` that makes its inputs; ``generated_data``: adapted only on the
    generated demo sets (:data:`percept.engine.scoring.GENERATED_DATA_NOTICE`)."""
    model: torch.nn.Module
    head_name: str
    kind: str
    class_names: list[str] | None
    transform: object
    task: str | None
    label_range: tuple[float, float] | None
    generated_data: bool = False
    preprocessing: object = None     # the TestPreprocessing of a percept model's head (None: the release's transform)

    @property
    def notice(self) -> str:
        """What a user must know beside this model's scores ('' when nothing)."""
        return GENERATED_DATA_NOTICE if self.generated_data else ""


def _scored(model, scoring, head_name: str | None) -> Predictor:
    """A percept model with its :class:`percept.engine.scoring.ModelScoring`, for head ``head_name`` (None: the default)."""
    name, head = scoring.head(head_name)
    if name not in model.head_names():
        raise ValueError(f"head {name!r} is described but not in the weights (heads {', '.join(model.head_names())})")
    classes = list(head.class_names) if head.class_names else None
    if head.kind == "classification" and classes is None:
        classes = [str(i) for i in range(model.config.heads[name])]
    return Predictor(model, name, head.kind, classes, head.preprocessing.transform(), head.task, head.label_range,
                     scoring.generated_data, head.preprocessing)


def _official_predictor(source: str, head_name: str | None) -> Predictor:
    model = load_official(source)
    card = model.official
    name = head_name or model.head_names()[0]
    if name not in model.head_names():
        raise ValueError(f"head {name!r} is not in this model; its heads: {', '.join(model.head_names())}")
    kind = "classification" if card is not None and card.labels else "regression"
    mean, std = model.normalization                                  # CLIP ViT-L/14: CLIP's statistics
    return Predictor(model, name, kind, list(card.labels) if card is not None and card.labels else None,
                     center_crop_transform(mean=mean, std=std), card.task if card is not None else None, None)


def load_predictor(model: str | os.PathLike, head_name: str | None = None) -> Predictor:
    """The :class:`Predictor` of a run directory, a hub folder (``percept export --format hub``), a merged file
    (``--format merged``) or an official checkpoint name/file, for head ``head_name`` (default: the run's first
    dataset's)."""
    path = Path(model)
    if path.is_dir() and not (path / "best.safetensors").is_file() and (path / "model.safetensors").is_file():
        scoring = read_hub_scoring(path)                      # first: a bad file is named before weights load
        return _scored(PerceptCLIP.from_pretrained(path), scoring, head_name)
    if path.is_dir():
        run = RunDir(path)
        run.require_weights()
        scoring = ModelScoring.from_run_config(run.read_config())
        return _scored(run.load_model(), scoring, head_name)
    if path.is_file() and path.suffix == ".safetensors":
        meta = read_merged_metadata(path)
        if meta is None:
            raise ValueError(f"{path} is not a model percept scores with: give a run directory, a hub folder, a "
                             f"merged export (`percept export --format merged`) or an official checkpoint")
        if "scoring" not in meta:
            raise ValueError(f"{path} was exported without its run's preprocessing (an older percept); export the "
                             f"run again with `percept export RUN --format merged`")
        scoring = ModelScoring.from_json(json.loads(meta["scoring"]), f"{path} (metadata `scoring`)")
        return _scored(load_merged(path), scoring, head_name)
    return _official_predictor(os.fspath(model), head_name)


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
                x = self.tensor_transform(pixels)[0]
            else:
                x = self.transform(image)
        except (ValueError, OSError) as err:
            return i, None, str(err)
        except MemoryError:
            return i, None, f"{path}: out of memory while decoding it; downscale it first"
        return i, x if x.ndim == 4 else x.unsqueeze(0), ""


def scorer_identity(predictor: Predictor, precision: str, fast_resize: bool) -> dict:
    """What decides a ``predict --out`` file's numbers: the weights (SHA-256 over the model's tensors), the head,
    the preprocessing, the output columns, the precision and the resize path. A resume must match it."""
    digest = hashlib.sha256()
    for key, tensor in sorted(predictor.model.state_dict().items()):
        digest.update(key.encode())
        digest.update(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
    transform = predictor.preprocessing.to_json() if predictor.preprocessing is not None else repr(predictor.transform)
    return {"weights_sha256": digest.hexdigest(), "head": predictor.head_name, "preprocessing": transform,
            "columns": output_columns(predictor.class_names if predictor.kind == "classification" else None),
            "precision": precision, "fast_resize": bool(fast_resize)}


def sidecar_path(out: Path) -> Path:
    """Where ``predict --out FILE`` records what wrote ``FILE`` (:func:`scorer_identity`)."""
    return out.with_name(out.name + ".percept.json")


def _resumable_rows(out: Path, identity: dict, overwrite: bool, wanted: set[str]) -> pd.DataFrame:
    """The rows of an earlier ``out`` that a resume keeps: written by the same scorer (else a one-line error), a
    score or prediction and no error (the error rows of ``wanted`` images are tried again; others stay), never a
    torn last line."""
    if overwrite or not out.is_file() or out.stat().st_size == 0:
        return pd.DataFrame(columns=identity["columns"])
    how = "pass --overwrite to replace it, or choose another --out"
    side = sidecar_path(out)
    if not side.is_file():
        raise ValueError(f"{out} exists but percept predict has no record of writing it ({side.name} is missing): "
                         f"{how}")
    try:
        recorded = read_json(side).get("scorer")
    except (ValueError, AttributeError):
        recorded = None
    if recorded != identity:
        changed = sorted(k for k in identity if not isinstance(recorded, dict) or recorded.get(k) != identity[k])
        hint = (f" (it was scored in {recorded.get('precision')}: --precision {recorded.get('precision')} resumes it)"
                if changed == ["precision"] else "")
        raise ValueError(f"{out} holds scores of another scorer (different {', '.join(changed) or 'record'}){hint}: "
                         f"resuming would mix the two; {how}")
    text = out.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]                     # a torn last line (killed, disk full): scored again
    table = pd.read_csv(io.StringIO(text), dtype={"image": str, "error": str}, keep_default_na=False,
                        na_values=[""]) if text.strip() else pd.DataFrame(columns=identity["columns"])
    if list(table.columns) != identity["columns"]:
        raise ValueError(f"{out} has the columns {list(table.columns)}, not those of its record; {how}")
    value = "score" if "score" in table.columns else "prediction"
    done = table[value].notna() & table["error"].isna()
    if value == "score":
        done &= pd.to_numeric(table["score"], errors="coerce").map(np.isfinite).fillna(False).astype(bool)
    keep = done | ~table["image"].isin(wanted)          # another call's images stay as they are
    return table[keep].assign(error=table["error"].fillna("")).drop_duplicates("image", keep="last") \
        .reset_index(drop=True)


@torch.no_grad()
def predict_images(images, model: str | os.PathLike = "official-iqa", device: str = "auto", batch_size: int = 8,
                   *, out: str | os.PathLike | None = None, workers: int | None = None, head_name: str | None = None,
                   progress: bool = False, precision: str = "auto", fast_resize: bool = False,
                   overwrite: bool = False) -> pd.DataFrame:
    """Scores for ``images`` (files, folders, globs or list files: :func:`collect_images`) with ``model`` (a run
    directory, its hub folder or merged file, or an official checkpoint). One row per image: ``score`` and
    ``crop_std`` (regression; the standard deviation over the IQA test crops, as evaluation's predictions.csv) or
    ``prediction`` + ``prob_<class>``, and ``error`` (why a file could not be scored, or that the model's output
    was not finite; empty otherwise). A model adapted only on generated demo data warns once
    (:class:`GeneratedDataWarning`).

    ``out``: a CSV written as it goes (one batch at a time, flushed), locked against a second writer, with a
    record of its scorer beside it (``FILE.percept.json``: :func:`scorer_identity`). A re-run with the same
    ``out`` resumes: it keeps the rows scored by the same scorer and scores the images it does not hold yet, the
    error rows and a torn last line again; a file of another scorer is refused (``overwrite=True`` starts it
    anew). ``workers``: DataLoader processes decoding the images (None: 0 on
    the CPU, where a worker would take a core from the model, and the CPU cores up to 16 with a GPU).
    ``head_name``: which head of a multi-dataset run (default: the run's first dataset's). ``precision``: ``auto``
    (bf16 autocast on a GPU, fp32 on the CPU), ``bf16`` or ``fp32`` (:func:`percept.engine.runtime.resolve_device`). LoRA is merged into
    the encoder's weights first (outputs equal to the unmerged model's to float rounding; tested against
    evaluation, which does not merge). ``fast_resize``: resize in torch's 8-bit kernels instead of PIL's (within
    one grey level of PIL's pixels; scores no longer bit-equal to evaluation's, see :class:`ImageFiles`): for
    small models on few CPU cores, where PIL's resize costs more than the model."""
    paths = collect_images(images)
    out = Path(out) if out is not None else None
    with exclusive_lock(out.with_name(out.name + ".lock"), str(out)) if out is not None else nullcontext():
        return _predict(paths, model, device, batch_size, out, workers, head_name, progress, precision, fast_resize,
                        overwrite)


def _predict(paths, model, device, batch_size, out, workers, head_name, progress, precision, fast_resize,
             overwrite) -> pd.DataFrame:

    predictor = load_predictor(model, head_name)
    net, head_name, kind, classes, transform = (predictor.model, predictor.head_name, predictor.kind,
                                                predictor.class_names, predictor.transform)
    if predictor.notice:
        warnings.warn(f"{model}: {predictor.notice}", GeneratedDataWarning, stacklevel=4)
    device, precision = resolve_device(device, precision)
    names = classes if kind == "classification" else None
    columns = output_columns(names)
    done = pd.DataFrame(columns=columns)
    if out is not None:
        identity = scorer_identity(predictor, precision, fast_resize)
        done = _resumable_rows(out, identity, overwrite, {str(p) for p in paths})
        atomic_write_text(out, done.to_csv(index=False) if len(done) else "")   # kept rows only, before appending
        write_json(sidecar_path(out), {"format": "percept-predict", "scorer": identity})   # then its record
    finished = set(done["image"])
    todo = [p for p in paths if str(p) not in finished]
    net = net.merge_lora().to(device).eval()       # LoRA folded into q, k, v: the same outputs, plain matmuls
    workers = resolve_workers(workers, device)
    loader = torch.utils.data.DataLoader(ImageFiles(todo, transform, fast_resize), batch_size=batch_size,
                                         num_workers=workers, collate_fn=list)
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
    wanted = {str(p) for p in paths}
    table = table[table["image"].isin(wanted)]          # an earlier run's other images stay in the file only
    order = {str(p): k for k, p in enumerate(paths)}
    return table.sort_values("image", key=lambda c: c.map(order), kind="stable").reset_index(drop=True) \
        if len(table) else table.reset_index(drop=True)


@torch.no_grad()
def score_batch(net, batch: list, paths: list, head_name: str, kind: str, names: list[str] | None, device,
                precision: str) -> list[dict]:
    """The output rows of one batch of :class:`ImageFiles` items ``(i, views | None, reason)`` of ``paths``: the
    model on every view, reduced over an image's views (:func:`percept.engine.evaluate.reduce_crops`); a row with the
    reason for each unreadable file. ``net``: in eval mode on ``device`` (LoRA merged or not)."""
    rows = [{"image": str(paths[i]), "error": reason} for i, x, reason in batch if x is None]
    good = [(i, x) for i, x, _ in batch if x is not None]
    if good:
        x = torch.cat([v for _, v in good]).to(device)
        with autocast(device, precision):
            output = net(x, head_name).float().reshape(len(good), -1, net.config.heads[head_name])
        finite = torch.isfinite(output).flatten(1).all(1).tolist()       # per image, over its views and outputs
        reduced = reduce_crops(output, kind)
        rows += [{"image": str(paths[i]), **_row(reduced, row, names), "error": ""} if finite[row] else
                 {"image": str(paths[i]), "error": NON_FINITE} for row, (i, _) in enumerate(good)]
    return rows


NON_FINITE = ("the model's output is not finite (NaN or inf): its weights are damaged, or it overflowed in reduced "
              "precision; check the model file (re-export or re-download it), or score in fp32")


class GeneratedDataWarning(UserWarning):
    """The model was adapted only on generated demo data (:data:`percept.engine.scoring.GENERATED_DATA_NOTICE`)."""


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
