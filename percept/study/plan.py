"""The plan file ``reproduce.yaml``: reading and checking it, its cost, its figures and its multi-dataset batches.

* :func:`load_reproduce_config` reads the plan and checks its ``experiments`` and ``figures`` sections (an unknown
  key, kind, draw or experiment is a one-line ``ValueError`` naming the experiment or figure and the field);
* :func:`reproduce_plan` is one row per experiment with its runs and estimated L40S hours (``--dry-run``), and
  :func:`figure_plan` one row per paper figure with the runs it is drawn from (:mod:`percept.study.paper_figures`);
* :func:`sampling_report`: how often each dataset of a multi-dataset group enters a batch.

Torch-free: ``percept reproduce --dry-run`` reads the plan without loading the model code. Executing the plan is
:mod:`percept.study.reproduce`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import yaml

from ..core.resources import resource_path

# The plan ships with the package (the checkout's top-level reproduce.yaml is a link to it): an installed percept
# has it too; --config FILE takes another.
REPRODUCE_YAML = resource_path("reproduce.yaml")
EXPERIMENT_KEYS = {"tables", "kind", "datasets", "pairs", "splits", "variants", "head_finetune", "lrs", "uses",
                   "gpu_hours", "note"}
KINDS = ("single", "multi", "cross", "unified")   # unified: a multi run across tasks + its cross pairs (ours)

# figures: what each paper figure draws (percept.study.paper_figures) and the parameters each drawing takes
FIGURE_KEYS = {"draw", "runs", "split", "note"}
FIGURE_DRAWS = {
    "attention": {"n_images", "top_k", "per_head", "valence", "by"},   # Fig. 4, A.1, A.2 (§6)
    "confusion": set(),                                                # Fig. A.3
    "cross_valence": {"pair", "n_examples"},                           # Fig. A.4, A.5: [ground truth, predicted]
    "histogram": {"bins"},                                             # Fig. A.6
    "extremes": {"n_examples", "fraction"},                            # Fig. A.7
    "zscore": {"n_examples"},                                          # Fig. A.8
}
EMOTION_DRAWS = ("confusion", "cross_valence")           # class predictions; the others but attention: scores

# GPU-hour estimates (App. A.1: "Training on an NVIDIA L40S GPU takes up to a day for the largest dataset
# (e.g. EmoSet with approximately 100,000 images) and only a few hours for smaller datasets when run for
# 40 epochs"): one run costs up to 24 h x (images x IQA replicas per epoch) / 100,000 on an L40S.
HOURS_PER_IMAGE_EPOCHS40 = 24.0 / 100_000


def run_hours(dataset: str) -> float:
    """Upper estimate of one 40-epoch run on ``dataset`` on an L40S, in hours (see above)."""
    from ..data.cards import get_card
    card = get_card(dataset)
    return HOURS_PER_IMAGE_EPOCHS40 * card.expected_images * (card.train_replicas or 1)


def load_reproduce_config(path: str | os.PathLike | None = None) -> dict:
    """Read ``reproduce.yaml`` (or the plan file ``path``) and check its experiments and figures."""
    path = Path(path) if path else REPRODUCE_YAML
    if not path.is_file():
        raise FileNotFoundError(f"plan file {path} does not exist (without --config: the plan shipped with percept)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(config, dict) or "experiments" not in config:
        raise ValueError(f"{path}: expected a mapping with 'experiments'")
    for name, exp in config["experiments"].items():
        unknown = set(exp) - EXPERIMENT_KEYS
        if unknown:
            raise ValueError(f"{path}: experiment {name!r} has unknown keys {sorted(unknown)}")
        if exp.get("kind") not in KINDS:
            raise ValueError(f"{path}: experiment {name!r}: kind must be one of {', '.join(KINDS)}")
        splits = exp.get("splits")
        if isinstance(splits, dict) and set(splits) != set(exp.get("datasets", [])):
            raise ValueError(f"{path}: experiment {name!r}: `splits` names {sorted(splits)} but the experiment's "
                             f"datasets are {sorted(exp.get('datasets', []))}; give every dataset its number of splits")
    check_figures(config, path)
    return config


def check_figures(config: dict, path: str | os.PathLike = "plan") -> None:
    """Check the plan's optional ``figures`` section: per figure a known ``draw``, only that drawing's parameters,
    and ``runs`` naming experiments of the plan that train (not ``cross``) on the named dataset of a fitting task.
    An error is one line naming the figure and the field."""
    from ..data.cards import get_card
    figures = config.get("figures") or {}
    if not isinstance(figures, dict):
        raise ValueError(f"{path}: figures must be a mapping of figure name -> its entry")
    for name, fig in figures.items():
        where = f"{path}: figure {name!r}"
        if not isinstance(fig, dict):
            raise ValueError(f"{where}: expected a mapping (draw, runs, ...)")
        draw = fig.get("draw")
        if draw not in FIGURE_DRAWS:
            raise ValueError(f"{where}: draw: {draw!r} is not one of {', '.join(FIGURE_DRAWS)}")
        unknown = set(fig) - FIGURE_KEYS - FIGURE_DRAWS[draw]
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (draw {draw!r} takes "
                             f"{sorted(FIGURE_KEYS | FIGURE_DRAWS[draw])})")
        runs = fig.get("runs")
        if not isinstance(runs, list) or not runs:
            raise ValueError(f"{where}: runs: expected a list of {{experiment: NAME, dataset: NAME}}")
        for entry in runs:
            if not isinstance(entry, dict) or set(entry) != {"experiment", "dataset"}:
                raise ValueError(f"{where}: runs: {entry!r} must have exactly the keys experiment and dataset")
            exp = config["experiments"].get(entry["experiment"])
            if exp is None:
                raise ValueError(f"{where}: experiment: {entry['experiment']!r} is not an experiment of the plan")
            if exp["kind"] == "cross" or entry["dataset"] not in exp.get("datasets", []):
                raise ValueError(f"{where}: dataset: {entry['experiment']!r} trains no run on {entry['dataset']!r}")
            task = get_card(entry["dataset"]).task
            if (draw in EMOTION_DRAWS) != (task == "emotion") and draw != "attention":
                raise ValueError(f"{where}: dataset: draw {draw!r} does not fit {entry['dataset']!r} ({task})")
            if fig.get("valence") is not None and task != "emotion":
                raise ValueError(f"{where}: valence: {entry['dataset']!r} has no emotion classes")
            classes = get_card(entry["dataset"]).classes or ()
            pair = fig.get("pair")
            if draw == "cross_valence" and (not isinstance(pair, list) or len(pair) != 2 or set(pair) - set(classes)):
                raise ValueError(f"{where}: pair: {pair!r} must be [ground truth, predicted], classes of "
                                 f"{entry['dataset']}")
        if fig.get("valence") not in (None, "positive", "negative"):
            raise ValueError(f"{where}: valence: {fig['valence']!r} must be positive or negative")
        if fig.get("by", "label") not in ("label", "prediction"):
            raise ValueError(f"{where}: by: {fig['by']!r} must be label or prediction")
        if not isinstance(fig.get("split", 1), int) or fig.get("split", 1) < 1:
            raise ValueError(f"{where}: split: {fig['split']!r} must be a split number (1, 2, ...)")


def experiment_splits(exp: dict, dataset: str) -> list[int]:
    """The splits an experiment runs for ``dataset`` (a group's first dataset for multi): ``splits`` is a
    count, a list, or a mapping per dataset."""
    splits = exp.get("splits", 1)
    if isinstance(splits, dict):
        splits = splits.get(dataset, 1)
    return list(range(1, int(splits) + 1)) if isinstance(splits, int) else [int(s) for s in splits]


def experiment_groups(exp: dict) -> list[list[str]]:
    """The dataset groups an experiment trains: one per dataset (single), else all of them together."""
    return [[d] for d in exp["datasets"]] if exp["kind"] == "single" else [list(exp["datasets"])]   # multi, unified


def reproduce_plan(config: dict | None = None) -> pd.DataFrame:
    """One row per experiment of ``reproduce.yaml``: tables, kind, datasets, variants, splits, runs
    (splits x learning rates x variants) and estimated L40S hours (upper bound: 40 epochs, no early stop)."""
    config = config or load_reproduce_config()
    lrs = config["defaults"]["lrs"]
    rows = []
    for name, exp in config["experiments"].items():
        variants = exp.get("variants") or [{}]
        exp_lrs = exp.get("lrs", lrs)
        if exp["kind"] == "cross":
            rows.append({"experiment": name, "tables": ", ".join(map(str, exp["tables"])), "kind": "cross",
                         "datasets": "; ".join(f"{a} → {b}" for a, b in exp["pairs"]), "variants": 1,
                         "runs": 0, "gpu_hours": 0.0, "stated_gpu_hours": exp.get("gpu_hours")})
            continue
        runs, hours = 0, 0.0
        for group in experiment_groups(exp):
            n = len(experiment_splits(exp, group[0])) * len(exp_lrs) * len(variants)
            runs += n
            hours += n * sum(run_hours(d) for d in group)
        rows.append({"experiment": name, "tables": ", ".join(map(str, exp["tables"])), "kind": exp["kind"],
                     "datasets": ", ".join(exp["datasets"]), "variants": len(variants), "runs": runs,
                     "gpu_hours": round(hours), "stated_gpu_hours": exp.get("gpu_hours")})
    return pd.DataFrame(rows)


def figure_plan(config: dict | None = None) -> pd.DataFrame:
    """One row per figure of the plan's ``figures`` section: what it draws, from which runs (experiment: dataset,
    the learning rate selected on validation) of which split."""
    config = config or load_reproduce_config()
    rows = [{"figure": name, "draw": fig["draw"], "split": fig.get("split", 1),
             "runs": "; ".join(f"{r['experiment']}: {r['dataset']}" for r in fig["runs"])}
            for name, fig in (config.get("figures") or {}).items()]
    return pd.DataFrame(rows, columns=["figure", "draw", "split", "runs"])


# Share of a dataset's images in the train part of a split (for the batch-composition estimate only).
_TRAIN_FRACTION = {"iqa_authentic": 0.72, "iqa_synthetic": 0.72, "lamem": 45_000 / 58_741, "things": 0.75,
                   "emoset": 0.80, "emotionroi": 0.75, "sun_memorability": 0.45}


def sampling_report(config: dict | None = None, threshold: int = 3) -> pd.DataFrame:
    """For every multi-dataset group of the plan, per dataset: its share of the group's training images,
    the share of batches it enters, and the share in which it brings at least ``threshold`` items - without
    and with the per-dataset minimum of ``min_batch_items`` items for PLCC datasets (ours; see
    :mod:`percept.engine.sampling`). Image counts: the cards' (paper §4) times the train fraction of the split."""
    from ..core.tasks import get_task
    from ..data.cards import get_card
    from ..data.splits import DATASET_PROTOCOLS
    from ..engine.presets import get_preset
    from ..engine.sampling import batch_composition
    from ..engine.train_config import TrainConfig
    config = config or load_reproduce_config()
    defaults = config["defaults"]
    train = {**get_preset(defaults.get("preset", "paper")).train, **(defaults.get("train") or {})}   # the plan's
    fields = TrainConfig.__dataclass_fields__
    batch = int(train.get("batch_size", fields["batch_size"].default))
    minimum = int(train.get("min_batch_items", fields["min_batch_items"].default))
    frames = []
    for name, exp in config["experiments"].items():
        if exp["kind"] not in ("multi", "unified"):
            continue
        cards = [get_card(d) for d in exp["datasets"]]
        images = [round(c.expected_images * _TRAIN_FRACTION[DATASET_PROTOCOLS[c.name]]) for c in cards]
        sizes = [n * (c.train_replicas or 1) for n, c in zip(images, cards)]
        plcc = [minimum if get_task(c.task).loss == "plcc" else 1 for c in cards]
        plain = batch_composition(sizes, batch, images=images, names=exp["datasets"], threshold=threshold)
        fixed = batch_composition(sizes, batch, images=images, min_items=plcc, names=exp["datasets"],
                                  threshold=threshold)
        frames.append(pd.DataFrame({
            "experiment": name, "dataset": plain["dataset"], "train_images": plain["images"],
            "image_share": plain["image_share"], f"batches_ge{threshold}_plain": plain[f"share_ge{threshold}"],
            "batches_present": fixed["present"], f"batches_ge{threshold}": fixed[f"share_ge{threshold}"],
            "fewest_items_when_present": fixed["min_when_present"], "loss": ["plcc" if m > 1 else "mse/ce"
                                                                              for m in plcc]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
