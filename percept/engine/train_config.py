"""What defines a training run: :class:`TrainConfig` (saved as the run's ``config.json``) and the fields that
only change how fast it runs (:data:`EXECUTION_FIELDS`). Used by :mod:`percept.engine.train`, sweeps and the CLI."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.options import option
from ..data.sources import DataConfig
from ..model.config import ModelConfig
from .runs import PROTOCOL
from .tracking import LOGGERS

# Settings that change speed, not results: they may differ when a run resumes.
EXECUTION_FIELDS = ("device", "num_workers", "eval_batch_size", "quiet", "cache_dir", "device_augment", "compile",
                    "stage1_from", "loggers", "log_group")


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``config.json``). Defaults = the paper's protocol."""

    data: list[DataConfig]                         # one dataset, or several (multi-dataset, §3.2)
    model: ModelConfig = field(default_factory=ModelConfig)
    split: int = option(1, "which of the dataset's splits (1-based)")
    lr: float = option(1e-4, "learning rate; the paper's grid is 5e-5 1e-4 5e-4 1e-3 (§3.1, `percept sweep`)")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    batch_size: int = option(32, "images per training batch (the official IQA checkpoint's)")
    max_epochs: int = option(40, "epoch limit")
    patience: int = option(12, "early stopping: epochs without a better validation score")
    select_metric: str | None = option(None, "validation metric for early stopping and model selection "
                                       "(default: srcc for regression, accuracy for classification)")
    test_crops: int = option(15, "IQA test-time crops (App. A.1)")
    head_finetune: bool = option(False, "stage 2: fine-tune each head on the frozen encoder (§3.2, Table A.9)",
                                 aliases=("--two-phase",))
    seed: int = option(0, "seed of initialisation, data order and augmentation")
    precision: str = option("auto", "auto = bf16 autocast on GPU, fp32 on CPU", choices=("auto", "fp32", "bf16"))
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    num_workers: int | None = option(None, "DataLoader worker processes (default: 0 on CPU, the CPU cores up "
                                     "to 16 on GPU)", aliases=("--workers",))
    eval_batch_size: int = option(120, "forward passes per evaluation batch (= 8 images x 15 crops)")
    quiet: bool = option(False, "no progress bars or per-epoch log (papermill, CI)")
    cache_dir: str | None = option(None, "pre-resized uint8 image cache folder (same pixels, faster epochs)")
    device_augment: str = option("auto", "flips + normalisation on the device (auto: on for GPU); the same "
                                 "pixels as the CPU path", choices=("auto", "on", "off"))
    compile: bool = option(False, "torch.compile the encoder (falls back to eager)")
    min_batch_items: int = option(3, "multi-dataset: fewest items a PLCC dataset brings to a batch (ours)")
    stage1_from: str | None = option(None, "with --head-finetune: a finished one-stage run of this configuration "
                                     "whose stage 1 (= this run's, same seed) is taken instead of retrained")
    loggers: list[str] = option(help="experiment trackers besides the run directory's own log.csv / metrics.json "
                                "(csv): tensorboard, wandb, mlflow, several allowed (percept.engine.tracking)",
                                default_factory=lambda: ["csv"], choices=LOGGERS, aliases=("--logger",))
    log_group: str | None = option(None, "the trackers' group / experiment (default: a sweep's folder name, else "
                                   "the run's datasets)")
    protocol: int = PROTOCOL                       # what this version of percept computes (see PROTOCOL)
    # absent from config.json when None, so runs written before it compare equal on resume
    task_weights: dict[str, float] | None = option(None, "mixed-task runs (percept.engine.multitask): each task's weight "
                                                   "in the batch loss, e.g. iqa=1 emotion=0.5 (default: equal)")

    def __post_init__(self):
        self.data = [d if isinstance(d, DataConfig) else DataConfig(**d) for d in self.data]
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        if not self.data:
            raise ValueError("a run needs at least one dataset")
        names = [d.dataset for d in self.data]
        if len(set(names)) != len(names):
            raise ValueError(f"a dataset appears twice in {names}")
        for name, low, value in (("lr", 0, self.lr), ("batch_size", 1, self.batch_size),
                                 ("max_epochs", 1, self.max_epochs), ("patience", 1, self.patience),
                                 ("test_crops", 1, self.test_crops), ("split", 1, self.split),
                                 ("min_batch_items", 1, self.min_batch_items)):
            if value < low or (name == "lr" and value <= 0):
                raise ValueError(f"{name} must be {'> 0' if name == 'lr' else f'>= {low}'}, got {value!r}")
        if self.device_augment not in ("auto", "on", "off"):
            raise ValueError(f"device_augment must be auto, on or off, got {self.device_augment!r}")
        if self.protocol != PROTOCOL:
            raise ValueError(f"this run was configured under percept protocol {self.protocol}; this version "
                             f"trains with protocol {PROTOCOL} (percept.engine.runs.PROTOCOL): start a new run directory")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")

    def to_dict(self) -> dict:
        data = {**asdict(self), "data": [d.to_dict() for d in self.data]}   # a CSV dataset's fields only for it
        if data["task_weights"] is None:
            del data["task_weights"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        try:
            return cls(**data)
        except (TypeError, AttributeError, KeyError, IndexError) as err:   # a hand-edited value of the wrong kind
            raise ValueError(f"a run configuration field has a value of the wrong kind ({type(err).__name__}: "
                             f"{err}); restore the file or start a new run") from None
