"""Which of our runs fills which cell of the paper's tables: the tables' specifications, as data.

Each table of the paper (Zalcher, Wasserman et al., TMLR 2025) that holds PerceptCLIP numbers is a
:class:`TableSpec`: its title, whether it is a cross-dataset table (trained on one dataset, tested on
another), the statistic over splits, and its method rows that percept can train, each a
:class:`MethodRow` = the paper's row name + the run configuration that fills it. A run fills a row only
when *every* field of the row's configuration matches the run exactly, so an ablation run (a ViT-B/16
backbone, a linear head, LoRA r=8, two-phase training, a multi-dataset model) can never fill the
"PerceptCLIP (3M)" row of Table 1, and each ablation row is filled by its own variant alone.

Configuration fields (:data:`CONFIG_FIELDS`, columns of :mod:`percept.study.results`): the model's identity
fields (:mod:`percept.study.run_key`: ``backbone``, ``strategy``, ``head_type``, ``lora_r``, ``lora_alpha``, LoRA and
head dropout, head widths), ``head_finetune`` (stage 2, heads alone), ``multi`` (several datasets
in one run) and ``mixed_tasks`` (datasets of several tasks in one run: percept's unified adapter,
which fills no cell of the paper: the paper's multi-dataset models are within one task, §3.2). The paper's model (§3.1) is :data:`PAPER_MODEL`; rows of full fine-tuning and frozen CLIP
(Table 6) do not constrain the LoRA fields, which they do not use.

Statistic over splits (:data:`TASK_STATISTIC`): the median for IQA (Table 1: "median SRCC and PLCC across
10 splits", as LoDa), the mean for memorability (Table 3: "mean SRCC ... across 5 folds"; Table A.2: "average
... across 25 splits") and emotion (Table 4: EmotionROI "mean over five splits"). The other tables do not
say; their single-dataset rows repeat Tables 1, 3 and 4 (e.g. Table A.4's KonIQ-10k SRCC 0.945 is Table
1's median), so each uses its dataset's task statistic.

Metric names: our metric keys → the paper's (:data:`PLAIN_METRICS`; classification metrics carry the
number of classes of the dataset, ``accuracy`` on EmoSet → ``ACC-8``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..core.tasks import TASKS
from .run_key import MODEL_KEY_FIELDS, PAPER_MODEL, same_value

# a row's configuration: the model's identity fields but its weights (a demo's random or stand-in encoder is told
# apart by the tables' comparability rule instead), then how the run trained
CONFIG_FIELDS = (*(f for f in MODEL_KEY_FIELDS if f != "weights"), "head_finetune", "multi", "mixed_tasks")
PAPER_MODEL = {k: v for k, v in PAPER_MODEL.items() if k != "weights"}   # ModelConfig's defaults (percept.model.config)
ONE_STAGE_SINGLE = {"head_finetune": False, "multi": False, "mixed_tasks": False}
PAPER_CONFIG = {**PAPER_MODEL, **ONE_STAGE_SINGLE}            # PerceptCLIP as in §3.1, one dataset, one stage
TASK_STATISTIC = {name: task.statistic for name, task in TASKS.items()}   # the registry's, per task

PLAIN_METRICS = {"srcc": "SRCC", "plcc_logistic": "PLCC", "mse": "MSE", "acc_2": "ACC-2"}
CLASS_METRICS = {"accuracy": "ACC", "mAP": "mAP", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}
EMOTION_CLASS_COUNTS = {"EmoSet": 8, "EmotionROI": 6}

# Tiny encoders (random, or the demo's own prior) that stand in for the paper's CLIP ViT-L/14 in the embedded demo: rows they fill
# are marked stand-ins and never comparable with the paper.
BACKBONE_STAND_INS = {"tiny_clip": "clip_vit_l14", "tiny_clip_p16": "clip_vit_l14", "tiny_clip_prior": "clip_vit_l14"}


@dataclass(frozen=True)
class MethodRow:
    """A method row of a paper table and the run configuration (exact values) that fills it."""

    method: str
    config: Mapping[str, object]
    note: str = ""          # shown beside our number (e.g. how our variant differs from the paper's)

    def matches(self, run: Mapping[str, object]) -> bool:
        return all(same_value(run.get(key), value) for key, value in self.config.items())


@dataclass(frozen=True)
class TableSpec:
    table: str
    title: str
    rows: tuple[MethodRow, ...] = ()
    cross: bool = False
    statistic: Mapping[str, str] = field(default_factory=lambda: dict(TASK_STATISTIC))

    def row_for(self, run: Mapping[str, object]) -> MethodRow | None:
        """The method row ``run`` (a configuration) fills in this table, or None."""
        found = [r for r in self.rows if r.matches(run)]
        if len(found) > 1:   # the specs are disjoint (tested); this guards edits of this file
            raise ValueError(f"table {self.table}: run configuration {dict(run)} matches rows "
                             f"{[r.method for r in found]}; a run must fill one row")
        return found[0] if found else None

    @property
    def methods(self) -> list[str]:
        return [r.method for r in self.rows]


def _row(method: str, note: str = "", **changes) -> MethodRow:
    return MethodRow(method, {**PAPER_CONFIG, **changes}, note)


def _no_lora(method: str, strategy: str) -> MethodRow:
    config = {k: v for k, v in PAPER_CONFIG.items() if not k.startswith("lora_")}   # no LoRA: any rank
    return MethodRow(method, {**config, "strategy": strategy})


_PERCEPTCLIP = (_row("PerceptCLIP"),)
_MULTI = (_row("PerceptCLIP"), _row("PerceptCLIP Multi-Dataset", multi=True, head_finetune=True))
_BACKBONE_ROWS = {
    "A.7": (_row("ViT-B/32", backbone="clip_vit_b32"), _row("ViT-B/16", backbone="clip_vit_b16"),
            _row("ViT-L/14")),
    "A.8": (_row("MAE", note="ours: MAE ViT-L/16 (timm vit_large_patch16_224.mae); no ViT-L/14 MAE exists",
                 backbone="mae_vit_l16"),
            _row("DinoV2", backbone="dinov2_vit_l14"), _row("CLIP")),   # TULIP: not available in percept
}
_LORA_GRID = tuple(_row(f"PerceptCLIP r={r} alpha={a}", lora_r=r, lora_alpha=float(a))
                   for r in (8, 16, 32) for a in (4, 8, 16))

TABLE_SPECS: dict[str, TableSpec] = {s.table: s for s in [
    TableSpec("1", "IQA on seven benchmarks: median SRCC and PLCC over 10 splits", (_row("PerceptCLIP (3M)"),)),
    TableSpec("2", "Cross-dataset generalisation in IQA: SRCC, trained on one dataset, tested on another",
              _PERCEPTCLIP, cross=True),
    TableSpec("3", "Image memorability on LaMem: mean SRCC and MSE over 5 splits", _PERCEPTCLIP),
    TableSpec("4", "Emotion classification on EmoSet and EmotionROI: accuracy", _PERCEPTCLIP),
    TableSpec("5", "Multi-dataset training on smaller datasets", _MULTI),
    TableSpec("6", "Training strategy: full fine-tuning vs frozen CLIP vs LoRA",
              (_no_lora("Full Fine-tuning CLIP", "full"), _no_lora("Frozen CLIP", "frozen"),
               _row("LoRA for CLIP"))),
    TableSpec("7", "Prediction head: linear layer vs MLP", (_row("Linear Layer", head_type="linear"), _row("MLP"))),
    TableSpec("A.1", "Memorability generalisation: trained on LaMem, tested on THINGS", _PERCEPTCLIP, cross=True),
    TableSpec("A.2", "Image memorability on SUN: mean over 25 splits", _PERCEPTCLIP),
    TableSpec("A.3", "Emotion classification: accuracy, mAP, macro-F1, weighted-F1", _PERCEPTCLIP),
    TableSpec("A.4", "Multi- vs single-dataset training, IQA", _MULTI),
    TableSpec("A.5", "Multi- vs single-dataset training, memorability", _MULTI),
    TableSpec("A.6", "Multi- vs single-dataset training, emotion", _MULTI),
    TableSpec("A.7", "CLIP backbone size: ViT-B/32, ViT-B/16, ViT-L/14", _BACKBONE_ROWS["A.7"]),
    TableSpec("A.8", "Pretrained encoder: MAE, DINOv2, TULIP, CLIP (percept's MAE is ViT-L/16: no ViT-L/14 MAE "
                     "exists)", _BACKBONE_ROWS["A.8"]),
    TableSpec("A.9", "Ablation of the two-phase multi-dataset training",
              (_row("PerceptCLIP Single-Dataset"),
               _row("PerceptCLIP 2-Phase Training Single-Dataset", head_finetune=True),
               _row("PerceptCLIP 2-Phase Training Multi-Dataset", head_finetune=True, multi=True))),
    TableSpec("A.10", "LoRA rank r and alpha on KonIQ-10k: SRCC", _LORA_GRID),
    TableSpec("A.11", "LoRA rank r and alpha on KonIQ-10k: PLCC", _LORA_GRID),
]}
CROSS_TABLES = tuple(t for t, s in TABLE_SPECS.items() if s.cross)


def get_table_spec(table_id) -> TableSpec:
    key = str(table_id)
    if key not in TABLE_SPECS:
        raise ValueError(f"no table {key!r} in the paper; tables: {', '.join(TABLE_SPECS)}")
    return TABLE_SPECS[key]


def run_configuration(run: Mapping[str, object]) -> tuple[dict, bool]:
    """(the configuration fields of ``run`` — a row of :mod:`percept.study.results` or a config.json's values —
    with a demo backbone replaced by the one it stands in for, whether it was replaced)."""
    config = {k: run.get(k) for k in CONFIG_FIELDS}
    for k, default in PAPER_MODEL.items():    # a model field the run does not record: made before it existed
        if config[k] is None or (isinstance(config[k], float) and np.isnan(config[k])):
            config[k] = default
    if config["multi"] is None:
        config["multi"] = "+" in str(run.get("datasets", ""))
    if not isinstance(config["mixed_tasks"], (bool, np.bool_)):   # absent (or NaN in a table): from the names
        config["mixed_tasks"] = len(_tasks_of(str(run.get("datasets", "")))) > 1
    stand_in = config["backbone"] in BACKBONE_STAND_INS
    if stand_in:
        config["backbone"] = BACKBONE_STAND_INS[config["backbone"]]
    return config, stand_in


def _tasks_of(datasets: str) -> set[str]:
    """The tasks of the known datasets among ``'a+b'`` (a name without a card fills no paper cell anyway)."""
    from ..data.cards import task_of
    return {task_of(name) for name in filter(None, datasets.split("+"))} - {None}


def paper_metric(metric: str, paper_dataset_name: str) -> str | None:
    """Our metric key -> the paper's metric name on that dataset (``accuracy`` on EmoSet -> ``ACC-8``),
    or None when the paper reports no such metric."""
    if metric in PLAIN_METRICS:
        return PLAIN_METRICS[metric]
    if metric in CLASS_METRICS and paper_dataset_name in EMOTION_CLASS_COUNTS:
        return f"{CLASS_METRICS[metric]}-{EMOTION_CLASS_COUNTS[paper_dataset_name]}"
    return None
