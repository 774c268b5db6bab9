"""How a trained model scores an image, as data: per head, the dataset it was trained on, what its output means
(task, regression or classes, label range) and its test preprocessing (:class:`~percept.data.preprocessing.
TestPreprocessing`), plus whether it was adapted only on generated demo data.

One definition for every way a model is used: a run directory computes it from its ``config.json``
(:meth:`ModelScoring.from_run_config`); ``percept export`` writes it beside the weights — ``preprocessor_config.json``
in a hub folder (its SHA-256 recorded in the folder's ``config.json``, so that an edit is caught) and the
``scoring`` metadata of a merged file — and ``percept predict``, ``create_metric`` and the app read it back, so an
exported model scores an image exactly as its run did.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.files import atomic_write_text, read_json
from ..core.tasks import get_task
from ..data.preprocessing import TestPreprocessing
from ..data.sources import (
    dataset_facts,
    dataset_test_preprocessing,
    is_synthetic,
)
from ..model.backbones import normalization

PREPROCESSOR_FILE = "preprocessor_config.json"       # beside a hub folder's config.json (Hugging Face's name)
FORMAT = "percept-scoring"
VERSION = 1
GENERATED_DATA_NOTICE = ("demo model: adapted only on generated images whose labels come from the generator, not "
                         "human judgements; its scores say little about photographs")


@dataclass(frozen=True)
class HeadScoring:
    """One head: trained on ``dataset`` (``task``: iqa / memorability / emotion), its ``class_names`` (emotion) or
    None (a score), the training labels' ``label_range`` (None where the scale means nothing) and its test
    ``preprocessing``."""
    dataset: str
    task: str
    class_names: tuple[str, ...] | None
    label_range: tuple[float, float] | None
    preprocessing: TestPreprocessing

    @property
    def kind(self) -> str:
        return get_task(self.task).kind

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "task": self.task,
                "class_names": list(self.class_names) if self.class_names is not None else None,
                "label_range": list(self.label_range) if self.label_range is not None else None,
                "preprocessing": self.preprocessing.to_json()}


@dataclass(frozen=True)
class ModelScoring:
    """Every head's :class:`HeadScoring`, the head used when none is named, and whether every dataset the model
    was adapted on is generated (the embedded demo sets)."""
    heads: dict[str, HeadScoring]
    default_head: str
    generated_data: bool

    @classmethod
    def from_run_config(cls, config: dict) -> "ModelScoring":
        """A run's scoring, from its ``config.json``: one head per dataset (named by it), each with that
        dataset's test transform at the run's ``test_crops`` and its backbone's normalisation."""
        norm = normalization(config["model"]["backbone"])
        crops = int(config.get("test_crops", 15))
        heads = {}
        for entry in config["data"]:
            name, task, classes, label_range = dataset_facts(entry)
            heads[name] = HeadScoring(name, task, tuple(classes) if classes else None,
                                      tuple(label_range) if label_range is not None else None,
                                      dataset_test_preprocessing(name, test_crops=crops, normalization=norm))
        return cls(heads, next(iter(heads)), all(is_synthetic(h) for h in heads))

    def head(self, name: str | None = None) -> tuple[str, HeadScoring]:
        name = self.default_head if name is None else name
        if name not in self.heads:
            raise ValueError(f"head {name!r} is not in this model; its heads: {', '.join(self.heads)}")
        return name, self.heads[name]

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "default_head": self.default_head,
                "generated_data": self.generated_data, "heads": {k: v.to_json() for k, v in self.heads.items()}}

    @classmethod
    def from_json(cls, data, source: str) -> "ModelScoring":
        """The scoring ``data`` describes; ``ValueError`` naming ``source`` and the wrong field."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a percept scoring description (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise ValueError(f"{source}: scoring version {data.get('version')!r}; this percept reads version "
                             f"{VERSION}: upgrade percept or export the run again")
        heads_data = data.get("heads")
        if not isinstance(heads_data, dict) or not heads_data:
            raise ValueError(f"{source}: `heads` must map each head's name to its description")
        heads = {}
        for name, head in heads_data.items():
            where = f"{source}, head {name!r}"
            if not isinstance(head, dict) or set(head) != {"dataset", "task", "class_names", "label_range",
                                                          "preprocessing"} or not isinstance(head["dataset"], str):
                raise ValueError(f"{where}: expected the fields dataset (a name), task, class_names, label_range, "
                                 f"preprocessing")
            try:
                task = get_task(head["task"]).name
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            classes, label_range = head["class_names"], head["label_range"]
            if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
                raise ValueError(f"{where}: `class_names` must be a list of names or null")
            if label_range is not None and (not isinstance(label_range, list) or len(label_range) != 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in label_range)):
                raise ValueError(f"{where}: `label_range` must be [low, high] or null")
            preprocessing = TestPreprocessing.from_json(head["preprocessing"], f"{where}, `preprocessing`")
            if preprocessing.task != task:
                raise ValueError(f"{where}: the preprocessing is task {preprocessing.task!r}, the head {task!r}")
            heads[str(name)] = HeadScoring(str(head["dataset"]), task, tuple(classes) if classes is not None else None,
                                           tuple(float(v) for v in label_range) if label_range is not None else None,
                                           preprocessing)
        default = data.get("default_head")
        if not isinstance(default, str) or default not in heads:
            raise ValueError(f"{source}: `default_head` {default!r} is not one of its heads ({', '.join(heads)})")
        if not isinstance(data.get("generated_data"), bool):
            raise ValueError(f"{source}: `generated_data` must be true or false")
        return cls(heads, default, data["generated_data"])


# ----------------------------------------------------------------------------- a hub folder's file
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_hub_scoring(folder: str | Path, scoring: ModelScoring) -> Path:
    """``preprocessor_config.json`` in a hub folder already holding ``config.json``, whose ``preprocessor_sha256``
    then records the file's SHA-256 (both written atomically)."""
    folder = Path(folder)
    text = json.dumps(scoring.to_json(), indent=2, sort_keys=True) + "\n"
    atomic_write_text(folder / PREPROCESSOR_FILE, text)
    config = read_json(folder / "config.json")
    atomic_write_text(folder / "config.json", json.dumps({**config, "preprocessor_sha256": _digest(text)},
                                                         indent=2, sort_keys=True) + "\n")
    return folder / PREPROCESSOR_FILE


def read_hub_scoring(folder: str | Path) -> ModelScoring:
    """A hub folder's :class:`ModelScoring`; a one-line ``ValueError`` when its file is missing, edited since the
    export (SHA-256 differs from ``config.json``'s record) or invalid."""
    folder = Path(folder)
    path = folder / PREPROCESSOR_FILE
    again = "export the run again with `percept export RUN --format hub`"
    if not path.is_file():
        raise ValueError(f"{folder} has no {PREPROCESSOR_FILE} (the run's test preprocessing): without it the model "
                         f"cannot score as its run did; {again}")
    text = path.read_text(encoding="utf-8")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder / 'config.json'} is unreadable ({err}); {again}") from None
    if not isinstance(config, dict) or config.get("preprocessor_sha256") != _digest(text):
        raise ValueError(f"{path} was changed after the export (its SHA-256 is not the one config.json records): "
                         f"scores would no longer be the run's; restore the file or {again}")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {again}") from None
    return ModelScoring.from_json(data, str(path))
