"""What a dataset card holds (:class:`DatasetCard`, with its consistency checks) and how it reads as markdown
(:func:`render_card_markdown`). The study's cards themselves, the facts, are in :mod:`percept.data.cards`."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.tasks import TASK_NAMES


@dataclass(frozen=True)
class DatasetCard:
    """Facts about one dataset. ``score_column`` holds the official number on the dataset's own scale
    (checked against ``label_range``); ``label_column`` is what training uses. For IQA the training
    column is ``quality`` (higher = better) = ``quality_sign`` x score; for the other tasks the two
    columns are the same."""

    name: str
    title: str
    task: str
    label_column: str
    score_column: str
    label_range: tuple[float, float]
    classes: tuple[str, ...] | None
    expected_images: int
    synthetic: bool
    train_replicas: int | None
    official_url: str
    licence: str
    citation: str
    split_protocol: str
    preprocessing: str
    official_layout: str
    quality_sign: float | None = None
    notes: str = ""
    split_label_column: str | None = None   # e.g. "memorability_split{k}": split k's own target column
    paper_splits: int | None = None         # splits the paper's numbers aggregate (Table 1: 10, Table 3: 5, ...)
    paper_name: str = ""                    # the dataset's name in the paper's tables ("KonIQ-10k")
    # IQA: the image size LoDa's loaders read and the interpolation its scripts/process_*.py made it with
    # (an int = shorter side, (h, w) = exact size, None = as distributed; see percept.data.preprocessing):
    # KonIQ-10k 512x384 (process_koniq10k.py: torchvision Resize(384), default = bilinear, from the 1024x768
    # release); SPAQ shorter side 384 (process_spaq.py: Resize(384), bilinear); FLIVE, LIVE, KADID-10k shorter
    # side 384 (process_{flive,live,kadid10k}.py: Resize(384, interpolation=BICUBIC); KADID's 512x384
    # originals keep their size); LIVE Challenge and TID2013 as distributed (no resize).
    pre_resize: int | tuple[int, int] | None = None
    pre_resize_interpolation: str | None = None

    def __post_init__(self):
        if self.task not in TASK_NAMES:
            raise ValueError(f"card {self.name!r}: task must be one of {TASK_NAMES}, got {self.task!r}")
        if (self.task == "iqa") != (self.quality_sign is not None):
            raise ValueError(f"card {self.name!r}: quality_sign is required for IQA cards and only for them")
        if not self.paper_name:
            raise ValueError(f"card {self.name!r}: paper_name (the dataset's name in the paper's tables) is required")
        if (self.pre_resize is None) != (self.pre_resize_interpolation is None):
            raise ValueError(f"card {self.name!r}: pre_resize and pre_resize_interpolation go together")
        if (self.task == "emotion") != (self.classes is not None):
            raise ValueError(f"card {self.name!r}: classes are required for emotion cards and only for them")

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Columns a manifest must hold besides ``image`` (and ``reference`` for synthetic IQA)."""
        cols = [self.score_column]
        if self.label_column != self.score_column:
            cols.append(self.label_column)
        if self.classes is not None:
            cols.append("label_name")
        return tuple(cols)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return ("image",) + self.label_columns + (("reference",) if self.synthetic else ())


def render_card_markdown(card: DatasetCard) -> str:
    """The human-readable card, exactly as committed in ``data_manifests/cards/NAME.md``."""
    lo, hi = card.label_range
    rows = [("Task", card.task), ("Name in the paper", card.paper_name), ("Images (paper §4)", f"{card.expected_images:,}"),
            ("Training label column", f"`{card.split_label_column.format(k='K')}` for split K (`{card.label_column}` "
                                      f"for the whole dataset)" if card.split_label_column else f"`{card.label_column}`"),
            ("Official score column", f"`{card.score_column}`, valid range [{lo:g}, {hi:g}]")]
    if card.quality_sign is not None:
        sign = "" if card.quality_sign > 0 else "-"
        rows.append(("Quality orientation", f"`quality` = {sign}{card.score_column} (higher = better)"))
    if card.classes is not None:
        rows.append(("Classes (label order)", ", ".join(f"{i} {c}" for i, c in enumerate(card.classes))))
    rows.append(("Synthetic (has references)", "yes" if card.synthetic else "no"))
    if card.paper_splits is not None:
        rows.append(("Splits behind a table number", str(card.paper_splits)))
    if card.train_replicas is not None:
        rows.append(("Training replicas per epoch (LoDa)", str(card.train_replicas)))
    if card.task == "iqa":
        size = card.pre_resize
        rows.append(("Pre-resize (LoDa)", "none (as distributed)" if size is None else
                     f"{size[1]}x{size[0]}, {card.pre_resize_interpolation}" if isinstance(size, tuple) else
                     f"shorter side {size}, {card.pre_resize_interpolation}"))
    rows += [("Manifest columns required", ", ".join(f"`{c}`" for c in card.required_columns)),
             ("Official URL", card.official_url)]
    lines = [f"# {card.title} (`{card.name}`)", "",
             "<!-- Generated by percept.data.cards.render_card_markdown; edit cards.py, then run "
             "`python -m percept.data.cards`. -->", "",
             "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    for heading, text in (("Official layout (what `percept prepare` reads)", card.official_layout),
                          ("Splits", card.split_protocol), ("Preprocessing", card.preprocessing),
                          ("Notes", card.notes), ("Licence / terms", card.licence), ("Citation", card.citation)):
        if text:
            lines += ["", f"## {heading}", "", text]
    return "\n".join(lines) + "\n"
