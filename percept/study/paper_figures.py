"""The paper's figures drawn from the runs of the plan: the ``figures`` section of ``reproduce.yaml``.

:func:`draw_paper_figures` draws, for each figure of the plan, from the selected run of the experiment and dataset
it names (the learning rate chosen on validation, :func:`percept.study.results.select_by_validation`; split
``split``, default 1), with the analysis functions of the notebooks 06 and 07, into
``FIGURES/<figure>_<what>_<dataset>`` (``.png`` and ``.pdf``, :func:`percept.study.figures.save_figure`;
``figA3_confusion_emoset.png``), the data a figure shows beside it as ``.csv`` (its images, heads, counts), and an
index ``FIGURES/figures.csv``.

Drawings (``draw``):

* ``attention`` (Fig. 4, A.1, A.2; §6): head importance by uniform-CLS ablation
  (:func:`percept.study.interpret.head_importance`) over ``n_images`` test images (``valence: positive`` or
  ``negative``: only images whose ``by`` = ``label`` or ``prediction`` class has that valence, classes taken in
  turn, :func:`attention_selection`), the heatmap (``_heads``) and the CLS attention of the ``top_k`` most important
  heads on the ``per_head`` images their ablation changed most, fine-tuned vs the encoder before fine-tuning
  (``_attention``; its images in ``_attention.csv``). Needs the run's weights.
* ``confusion`` (A.3): the test confusion matrix, rows = ground truth, normalised per row.
* ``cross_valence`` (A.4, A.5): with ``pair: [true, predicted]``, the ``true`` images predicted ``predicted``, most
  confident first; when the test part has none, the ``true`` images with the highest ``predicted`` probability, said
  in the title (and a 'no examples' panel when it has no ``true`` image at all).
* ``histogram`` (A.6), ``extremes`` (A.7: the largest errors at the low and high ends), ``zscore`` (A.8: the
  largest |z(prediction) - z(ground truth)|).

A figure whose runs are not there (experiment not run, run not finished, no predictions or weights) is
``"missing: ..."`` in the result, one that fails while drawing ``"failed: ..."``; the others are drawn. A figure of
a run with random weights, on fixture or demo data, says so in its title: a pipeline check, not a paper result.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..core.files import write_csv
from ..core.metrics import valence_of
from ..core.options import upgrade_model_fields
from ..data.fixtures import MARKER
from ..data.sources import DataConfig, is_synthetic
from ..engine.presets import preset_config
from ..engine.runs import RunDir
from . import analysis, interpret
from .figures import STYLE, figure_name, save_figure
from .paper import PAPER_DATASET_NAMES
from .results import results_tables
from .run_key import RUN_KEY_FIELDS, run_key, same_value

DEFAULTS = {"split": 1, "n_images": 32, "top_k": 3, "per_head": 2, "valence": None, "by": "label",
            "n_examples": 8, "bins": 30, "fraction": 0.5}


class MissingRuns(LookupError):
    """A figure's runs (or their predictions or weights) are not there yet."""


@dataclass
class FigureRun:
    """The selected run a figure is drawn from, its dataset and that dataset's test predictions."""

    run_dir: Path
    dataset: str
    config: dict
    predictions: pd.DataFrame

    @property
    def data_root(self) -> Path:
        return Path(next(d for d in self.config["data"] if d["dataset"] == self.dataset)["root"])

    def marks(self) -> list[str]:
        """What makes a figure of this run no paper result: random weights, fixture or demo data."""
        marks = ["random weights"] if run_key(self.config)["weights"] == "random" else []
        if (self.data_root / MARKER).is_file():
            marks.append("fixture data")
        if is_synthetic(self.dataset):
            marks.append("demo data")
        return marks


def paper_label(name: str) -> str:
    """``figA3`` -> ``Figure A.3``, ``fig4`` -> ``Figure 4``."""
    match = re.fullmatch(r"fig(A?)(\d+)", name)
    return f"Figure {'A.' if match.group(1) else ''}{match.group(2)}" if match else name


# ----------------------------------------------------------------------------- the runs of a figure
def expected_key(config: dict, experiment: str, dataset: str) -> dict:
    """The run identity (:func:`percept.study.run_key.run_key`) of ``experiment``'s run on ``dataset``: the plan's
    preset with its model and train overrides, the experiment's two-phase setting and first model variant."""
    exp, defaults = config["experiments"][experiment], config["defaults"]
    group = [dataset] if exp["kind"] == "single" else list(exp["datasets"])
    variant = upgrade_model_fields(dict((exp.get("variants") or [{}])[0]))
    base = preset_config(defaults.get("preset", "paper"), [DataConfig(d, ".") for d in group],
                         model={**(defaults.get("model") or {}), **variant},
                         head_finetune=bool(exp.get("head_finetune", False)), **(defaults.get("train") or {}))
    return run_key(base)


def find_run(config: dict, selected: pd.DataFrame | None, experiment: str, dataset: str, split: int,
             weights: bool = False) -> FigureRun:
    """The selected run of ``experiment`` on ``dataset``, split ``split``; :class:`MissingRuns` says what is missing."""
    hint = f"no finished run of {experiment} on {dataset}, split {split} (percept reproduce --only {experiment})"
    if selected is None:
        raise MissingRuns(hint)
    key = expected_key(config, experiment, dataset)
    rows = selected[(selected["dataset"] == dataset) & (selected["split"] == split)]
    rows = rows[pd.Series([all(same_value(r[k], key[k]) for k in RUN_KEY_FIELDS) for _, r in rows.iterrows()],
                          index=rows.index, dtype=bool)]
    if rows.empty:
        raise MissingRuns(hint)
    run = RunDir(rows.iloc[0]["run_dir"])
    if weights and not run.best_weights.is_file():
        raise MissingRuns(f"{run.path} has no weights ({run.best_weights.name})")
    run_config = run.read_config()
    multi = len(run_config["data"]) > 1
    try:
        predictions = analysis.load_predictions(run.path, dataset if multi else None)
    except FileNotFoundError as err:
        raise MissingRuns(f"{run.path} has no test predictions ({err})") from None
    return FigureRun(run.path, dataset, run_config, predictions)


# ----------------------------------------------------------------------------- selections
def class_names(pred: pd.DataFrame) -> list[str] | None:
    """The classes of an emotion run's predictions; None for scores."""
    try:
        return analysis.class_names_of(pred)
    except ValueError:
        return None


def attention_selection(pred: pd.DataFrame, valence: str | None = None, by: str = "label",
                        n: int = 32) -> pd.DataFrame:
    """The test images an ``attention`` figure is computed on: ``id, label, prediction`` (+ ``class``,
    ``predicted_class``, ``valence`` for emotion). ``valence``: only images whose ``by`` (``label`` or
    ``prediction``) class is ``positive``/``negative`` (:func:`percept.core.metrics.valence_of`: EmoSet's
    amusement, awe, contentment, excitement vs anger, disgust, fear, sadness), the classes taken in turn
    (one image of each, then a second, ...); at most ``n``, in test order otherwise."""
    rows = pred[["id", "label", "prediction"]].reset_index(drop=True)
    names = class_names(pred)
    if names is None:
        if valence is not None:
            raise ValueError("valence needs emotion classes; these predictions are scores")
        return rows.head(n)
    names = np.asarray(names)
    rows = rows.assign(**{"class": names[rows["label"].astype(int)],
                          "predicted_class": names[rows["prediction"].astype(int)],
                          "valence": np.where(valence_of(list(names))[rows[by].astype(int)] == 1, "positive",
                                              "negative")})
    if valence is not None:
        rows = rows[rows["valence"] == valence]
    turn = rows.groupby(by, sort=False).cumcount()
    return rows.assign(_turn=turn).sort_values(["_turn", by], kind="mergesort").drop(columns="_turn").head(n)


def cross_valence_examples(pred: pd.DataFrame, true: str, predicted: str, n: int = 8) -> tuple[pd.DataFrame, str]:
    """``true`` images predicted ``predicted``, most confident first (A.4, A.5), and what they are; without one,
    the ``true`` images with the highest ``predicted`` probability (the nearest confusions)."""
    names = analysis.class_names_of(pred)
    t, p = names.index(true), names.index(predicted)
    ofclass = pred[pred["label"].astype(int) == t]
    column = f"prob_{predicted}"
    if column in ofclass:
        ofclass = ofclass.sort_values(column, ascending=False, kind="mergesort")
    hit = ofclass[ofclass["prediction"].astype(int) == p]
    if len(hit):
        return hit.head(n), f"{len(hit)} of {len(ofclass)} {true} test images predicted {predicted}"
    if len(ofclass):
        return ofclass.head(n), (f"no {true} test image was predicted {predicted}: the {true} images with the "
                                 f"highest {predicted} probability")
    return ofclass, f"no {true} image in the test part"


# ----------------------------------------------------------------------------- drawings
def _gallery(ids, root, titles, suptitle: str) -> Figure:
    return analysis.plot_gallery(analysis.gallery_images(list(ids), root), list(titles), ncols=4, suptitle=suptitle)


def _empty(title: str, text: str) -> Figure:
    fig = Figure(figsize=(6, 2.5), layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def _attention(name: str, spec: dict, run: FigureRun, title: str, models: dict) -> list[tuple]:
    picked = attention_selection(run.predictions, spec["valence"], spec["by"], spec["n_images"])
    if picked.empty:
        return [("attention", _empty(title, f"no {spec['valence']} test images"), None)]
    if run.run_dir not in models:
        models.clear()   # one model at a time (ViT-L/14 on the GPU)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        models[run.run_dir] = RunDir(run.run_dir).load_model().to(device)
    model = models[run.run_dir]
    images = interpret.run_images(run.config, dataset=run.dataset, ids=list(picked["id"]))[0]
    head = run.dataset if len(model.heads) > 1 else None
    table = interpret.head_importance(model, images, head_name=head)
    rows = interpret.top_head_attention(model, images, table, k=spec["top_k"], n_images=spec["per_head"])
    emotion = "class" in picked
    captions = [f"{Path(i).name}: T {c} / P {p}" if emotion else f"{Path(i).name}: T {c:.3g} / P {p:.3g}"
                for i, c, p in zip(picked["id"], picked["class" if emotion else "label"],
                                   picked["predicted_class" if emotion else "prediction"])]
    heads = analysis.plot_head_importance(table, title=f"{title}\nhead importance over {len(picked)} test images")
    gallery = analysis.plot_attention_gallery(images, rows, labels=captions,
                                              denormalize=run.config["model"]["backbone"], original_label=(
                                                  "original CLIP" if run_key(run.config)["weights"] == "pretrained"
                                                  and "clip" in run.config["model"]["backbone"]
                                                  else "before fine-tuning"),
                                              title=f"{title}\nCLS attention of the most important heads")
    shown = pd.DataFrame([{"layer": r["layer"], "head": r["head"], "importance": r["importance"],
                           "effect": r["effect"], **picked.iloc[r["image_index"]].to_dict()} for r in rows])
    return [("heads", heads, table), ("attention", gallery, shown)]


def _confusion(name, spec, run, title, models) -> list[tuple]:
    table = analysis.confusion_matrix_table(run.predictions)
    fig = analysis.plot_confusion_matrix(table)
    fig.suptitle(f"{title}\nrows: ground truth, normalised per row")
    return [("confusion", fig, table.reset_index())]


def _cross_valence(name, spec, run, title, models) -> list[tuple]:
    true, predicted = spec["pair"]
    rows, note = cross_valence_examples(run.predictions, true, predicted, spec["n_examples"])
    stem = f"{true}_as_{predicted}"
    if rows.empty:
        return [(stem, _empty(title, note), None)]
    titles = analysis.score_titles(rows, class_names=analysis.class_names_of(run.predictions))
    return [(stem, _gallery(rows["id"], run.data_root, titles, f"{title}\n{note}"), rows)]


def _histogram(name, spec, run, title, models) -> list[tuple]:
    fig = analysis.plot_score_histograms(run.predictions, bins=spec["bins"], label=f"{run.dataset} score")
    fig.suptitle(f"{title}\nground truth vs predicted on the test part")
    return [("histogram", fig, None)]


def _extremes(name, spec, run, title, models) -> list[tuple]:
    half = max(1, spec["n_examples"] // 2)
    rows = pd.concat([analysis.largest_errors(run.predictions, n=half, end=end, fraction=spec["fraction"])
                      for end in ("low", "high")], ignore_index=True)
    suptitle = f"{title}\nlargest errors at the low end (first {half}), then the high end"
    return [("extreme_errors", _gallery(rows["id"], run.data_root, analysis.score_titles(rows), suptitle), rows)]


def _zscore(name, spec, run, title, models) -> list[tuple]:
    rows = analysis.zscore_differences(run.predictions).head(spec["n_examples"])
    titles = [f"T: {t:.2f} / P: {p:.2f}\nz T: {zt:+.2f} / z P: {zp:+.2f}" for t, p, zt, zp
              in zip(rows["label"], rows["prediction"], rows["label_z"], rows["prediction_z"])]
    suptitle = f"{title}\nlargest |z(prediction) - z(ground truth)|"
    return [("zscore_errors", _gallery(rows["id"], run.data_root, titles, suptitle), rows)]


DRAWERS = {"attention": _attention, "confusion": _confusion, "cross_valence": _cross_valence,
           "histogram": _histogram, "extremes": _extremes, "zscore": _zscore}


def _title(name: str, run: FigureRun, split: int) -> str:
    title = f"{paper_label(name)}: {PAPER_DATASET_NAMES.get(run.dataset, run.dataset)}, test part of split {split}"
    marks = run.marks()
    return title + (f" ({', '.join(marks)}: a pipeline check, not a paper result)" if marks else "")


def draw_figure(name: str, spec: dict, runs: list[FigureRun], figures_dir: Path,
                models: dict | None = None) -> list[Path]:
    """Draw figure ``name`` of the plan from its ``runs``; the files written (``.png``, ``.pdf``, ``.csv``)."""
    spec = {**DEFAULTS, **spec}
    paths = []
    models = {} if models is None else models
    with mpl.rc_context(STYLE):
        for run in runs:
            for what, fig, data in DRAWERS[spec["draw"]](name, spec, run, _title(name, run, spec["split"]), models):
                stem = figure_name(f"{name}_{what}", [run.dataset])
                paths += save_figure(fig, stem, figures_dir)
                if data is not None:
                    write_csv(figures_dir / f"{stem}.csv", data)
                    paths.append(figures_dir / f"{stem}.csv")
    return paths


def draw_paper_figures(config: dict, runs_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                       log=print) -> dict[str, list[Path] | str]:
    """Every figure of the plan's ``figures`` section from the runs below ``runs_dir``, into ``figures_dir``:
    ``{figure: [files]}`` for a drawn figure, ``{figure: "missing: ..."}`` when its runs are not there (the others
    are still drawn) and ``{figure: "failed: ..."}`` when it could not be drawn. Logs each; writes
    ``figures_dir/figures.csv`` (figure, status, files, runs)."""
    figures_dir = Path(figures_dir)
    try:
        selected = results_tables(runs_dir)["selected"]
    except FileNotFoundError:
        selected = None
    done, index, models = {}, [], {}
    for name, spec in (config.get("figures") or {}).items():
        split, runs = spec.get("split", DEFAULTS["split"]), []
        try:
            runs = [find_run(config, selected, r["experiment"], r["dataset"], split, spec["draw"] == "attention")
                    for r in spec["runs"]]
            files = draw_figure(name, spec, runs, figures_dir, models)
            done[name] = files
            log(f"figure {name} ({paper_label(name)}): "
                + ", ".join(str(p) for p in files if p.suffix == ".png") + " (+ .pdf)")
        except MissingRuns as err:
            done[name] = f"missing: {err}"
            log(f"figure {name} ({paper_label(name)}) missing: {err}")
        except Exception as err:   # noqa: BLE001 - one figure's failure must not stop the others
            done[name] = f"failed: {type(err).__name__}: {err}"
            log(f"figure {name} ({paper_label(name)}) FAILED: {type(err).__name__}: {err}")
        drawn = isinstance(done[name], list)
        index.append({"figure": name, "paper": paper_label(name),
                      "status": "drawn" if drawn else done[name].split(":", 1)[0],
                      "files": "; ".join(p.name for p in done[name] if p.suffix != ".pdf") if drawn else "",
                      "runs": "; ".join(str(r.run_dir) for r in runs),
                      "note": "; ".join(sorted({m for r in runs for m in r.marks()})) if drawn else done[name]})
    if index:
        figures_dir.mkdir(parents=True, exist_ok=True)
        write_csv(figures_dir / "figures.csv", pd.DataFrame(index))
    return done
