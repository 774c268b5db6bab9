"""One task's study, as notebooks 01 (IQA, Table 1), 02 (memorability, Table 3) and 03 (emotion, Table 4)
tell it: the same steps in the same order, each one call that shows its table or figure and saves it.

    study = nb.TaskStudy("01_iqa", dataset, paths, tables=["1"], backbone=backbone, pretrained=pretrained)
    study.data()                      # the dataset card; images per part of each split (split_counts.csv)
    study.examples(split)             # test images across the label range (fig3_<task>_examples)
    study.train(**train_kwargs)       # one run (reused when it exists); its per-epoch log
    study.training_curves()           # loss and validation metric per epoch (table<N>_<task>_training_curves)
    study.test_metrics()              # the kept weights on the test part (test_metrics.csv + the headline)
    study.test_figure()               # predictions vs labels, or the confusion matrix for classification
    study.beside_paper()              # the paper's table(s) beside this run (percept.study.paper.show)

The notebooks keep the narrative (markdown) and the parameters; what differs between them is data: the
dataset, the paper tables, the task (from the dataset).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..data.sources import open_source
from ..study import analysis, paper
from ..study.analysis import plot_gallery
from ..study.figures import (
    figure_name,
    plot_predictions_scatter,
    plot_training_curves,
    save_figure,
)
from ..study.results import results_tables
from .notebook_display import (
    caption,
    dataset_markdown,
    examples,
    metrics_table,
    read_log,
    split_counts,
)
from .notebooks import (
    budget_root,
    data_config,
    demo_config,
    headline,
    test_summary,
    train_run,
)


def _show(*objects) -> None:
    from IPython.display import display  # IPython: the notebooks extra
    display(*objects)


def _markdown(text: str):
    from IPython.display import Markdown  # IPython: the notebooks extra
    return Markdown(text)


@dataclass
class TaskStudy:
    notebook: str                   # "01_iqa": names nothing, kept for messages
    dataset: str
    paths: object                   # percept.interface.notebooks.NotebookPaths
    tables: list[str]               # the paper tables this study fills, e.g. ["3", "A.2"]; the first names figures
    backbone: str                   # the runs' encoder and whether it starts from its weights (captions say so)
    pretrained: bool = True
    dataset_root: str | None = None
    manifest: str | None = None
    source: object = field(default=None, init=False, repr=False)
    config: object = field(default=None, init=False, repr=False)
    run_dir: object = field(default=None, init=False)
    metrics: dict | None = field(default=None, init=False, repr=False)

    # ---------------------------------------------------------------- helpers
    def caption(self, text: str) -> str:
        return caption(text, self.dataset, self.backbone, self.pretrained)

    def _figure_name(self, what: str, prefix: str | None = None) -> str:
        return figure_name(f"{prefix or 'table' + self.tables[0].replace('.', '')}_{self.source.task}_{what}",
                           self.dataset)

    def _save(self, fig, name: str, text: str, *before) -> None:
        save_figure(fig, name, self.paths.figures_dir)
        _show(*before, fig, _markdown(self.caption(text)))

    def _require(self, what: str, step: str):
        if getattr(self, what) is None:
            raise RuntimeError(f"{self.notebook}: call study.{step}() first")
        return getattr(self, what)

    # ---------------------------------------------------------------- 1 · data
    def data(self) -> pd.DataFrame:
        """The dataset card, then the images per part (rows) of each split (columns), saved as CSV."""
        _show(_markdown(dataset_markdown(self.dataset)))
        self.source = open_source(data_config(self.dataset, self.paths.data_root, self.dataset_root, self.manifest))
        counts = split_counts(self.source)
        counts.to_csv(self.paths.out_dir / "split_counts.csv")
        _show(_markdown(self.caption("Images per part (rows) of each split (columns).")))
        return counts

    def examples(self, split: int = 1, n: int = 8) -> None:
        """``n`` test images of split ``split`` spread over the label range, with their labels."""
        source = self._require("source", "data")
        pictures, titles = examples(source, split=split, n=n)
        fig = plot_gallery(pictures, titles, ncols=4, suptitle=f"{self.dataset}: test images of split {split}")
        self._save(fig, self._figure_name("examples", prefix="fig3"),
                   "Figure 3 (examples) — test images spread over the label range, with their labels.")

    # ---------------------------------------------------------------- 2 · training
    def train(self, **train_kwargs) -> pd.DataFrame:
        """One run of the training engine with the notebook's parameters (``percept.interface.notebooks.demo_config``);
        the run is reused when it already exists. Returns its per-epoch log."""
        self._require("source", "data")
        self.config = demo_config(self.dataset, self.paths.data_root, dataset_root=self.dataset_root,
                                  manifest=self.manifest, **train_kwargs)
        self.run_dir, self.metrics = train_run(self.config, self.paths.runs_dir)
        return read_log(self.run_dir)

    def training_curves(self) -> None:
        config = self._require("config", "train")
        fig = plot_training_curves(read_log(self.run_dir),
                                   title=f"{self.dataset}, split {config.split}, lr {config.lr:g}")
        self._save(fig, self._figure_name("training_curves"), "Training curves — training loss and the validation "
                   "selection metric per epoch; the circled epoch's weights are kept.")

    # ---------------------------------------------------------------- 3 · test results
    def test_metrics(self) -> pd.DataFrame:
        """The kept weights' test metrics (saved as CSV); the notebook's headline for ``make demo``."""
        metrics = self._require("metrics", "train")
        table = metrics_table(metrics)
        headline(self.paths, test_summary(self.run_dir))
        table.to_csv(self.paths.out_dir / "test_metrics.csv")
        _show(_markdown(self.caption(f"Test metrics, split {self.config.split}.")))
        return table

    def test_figure(self) -> None:
        """Predictions against labels (regression) or the row-normalised confusion matrix (classification)."""
        self._require("run_dir", "train")
        predictions = analysis.load_predictions(self.run_dir)
        if self.source.kind == "classification":
            confusion = analysis.confusion_matrix_table(predictions)
            self._save(analysis.plot_confusion_matrix(confusion), self._figure_name("confusion"),
                       "Confusion matrix on the test part, rows = ground truth, normalised per row (counts above).",
                       confusion)
        else:
            fig = plot_predictions_scatter(predictions, xlabel=f"label ({self.source.label_column})",
                                           ylabel="prediction",
                                           title=f"{self.dataset}: test part of split {self.config.split}")
            self._save(fig, self._figure_name("scatter"), "Predictions against labels on the test part.")

    # ---------------------------------------------------------------- 4 · beside the paper
    def beside_paper(self) -> dict:
        """The paper's tables as printed, then their PerceptCLIP cells beside this run (``paper.show``)."""
        config = self._require("config", "train")
        aggregated = results_tables(budget_root(config, self.paths.runs_dir))["aggregated"]
        ours = paper.ours_from_results(aggregated[aggregated["dataset"] == self.dataset], tables=self.tables)
        return paper.show(ours, self.tables, self.paths.out_dir,
                          caption=self.caption("Table {table}, PerceptCLIP cells: the paper beside this run."))
