"""The paper's experiments as a plan (``reproduce.yaml``) and their execution: ``percept reproduce``.

``reproduce.yaml`` (repository root; read and checked by :mod:`percept.study.plan`) lists the experiments of
Zalcher, Wasserman et al. (TMLR 2025): per experiment its tables, kind (``single``: one run per dataset; ``multi``:
one run per group, §3.2; ``cross``: finished runs evaluated on another dataset, Tables 2 and A.1; ``unified``, beyond
the paper: one run over the datasets of several tasks, then its ``pairs`` evaluated as Tables 2 and A.1,
:mod:`percept.study.unified`), datasets, splits, model variants and estimated GPU hours; and its ``figures``: per
paper figure (Fig. 4, A.1-A.8) the experiment and dataset whose runs it is drawn from. :func:`reproduce` runs it
with the sweep (:mod:`percept.study.sweep`: finished runs are skipped, interrupted ones resume), selects learning
rates on validation (:mod:`percept.study.results`), writes ``OUT/tables/table_<id>.csv``: the paper beside ours,
each cell filled only by the run configuration its row names (:mod:`percept.study.paper_specs`), then draws the
figures into ``OUT/figures/`` (:mod:`percept.study.paper_figures`: ``fig4_attention_emoset.png``/``.pdf``, ...).

An experiment that fails (a missing dataset, a broken run) is reported by name with its first error and
the others still run; the tables are written for whatever finished, and the command exits non-zero. A figure
whose runs are not there (its experiment not run yet, e.g. with ``--only``, or failed) is logged by name with what
it lacks and is not a failure by itself (the experiment's own failure already is); a figure whose runs are there
but that cannot be drawn is a failure (``figure <name>``).

``--smoke`` (CI; :func:`smoke_config`) executes *every* experiment of the plan - each dataset, split
protocol, cross-dataset pair, multi-dataset group, two-phase and ablation variant - on fixture datasets
generated in each dataset's official layout (:mod:`percept.data.fixtures`), for one epoch, with one
learning rate, at most two splits (one for the ablation variants), and each configured backbone shrunk
to one small random-initialised block of the same timm architecture (so the tables' rows are filled by
the configurations they name, and marked "random weights", never comparable), and draws every figure (each
titled as a pipeline check of random weights on fixture data). It proves that no configured table or figure can
break unseen; it computes nothing about the paper.

Multi-dataset batches: :func:`sampling_report` shows, for each multi-dataset group of the plan, how often
each dataset enters a batch and with how many items (:mod:`percept.engine.sampling`).
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from .plan import (  # noqa: F401 (the plan's API, here since percept reproduce began)
    EXPERIMENT_KEYS,
    HOURS_PER_IMAGE_EPOCHS40,
    KINDS,
    REPRODUCE_YAML,
    experiment_groups,
    experiment_splits,
    figure_plan,
    load_reproduce_config,
    reproduce_plan,
    run_hours,
    sampling_report,
)
from .unified import TABLE_ID

# --smoke: one block of 64 channels instead of the backbone's 12-24 blocks of 768-1024 (same timm
# architecture, patch size, token layout and projection), one epoch, one learning rate, at most two splits.
SMOKE_BACKBONE_KWARGS = {"embed_dim": 64, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}
SMOKE_TRAIN = {"max_epochs": 1, "patience": 1, "batch_size": 8, "test_crops": 2, "eval_batch_size": 32,
               "quiet": True}
SMOKE_MAX_SPLITS = 2


@dataclass
class Reproduction:
    """What :func:`reproduce` did: the paper-vs-ours table per table id, the failed experiments (and tables and
    figures), the figures drawn (paper name -> files) and those whose runs are missing (name -> what is missing)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)   # experiment -> its first error
    figures: dict[str, list[Path]] = field(default_factory=dict)
    missing_figures: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ smoke
def smoke_config(config: dict) -> dict:
    """The plan for ``--smoke``: each backbone shrunk (:data:`SMOKE_BACKBONE_KWARGS`), random weights, one
    epoch (:data:`SMOKE_TRAIN`), the first learning rate, at most two splits per dataset (one for
    experiments with model variants), data from :mod:`percept.data.fixtures`; every figure, the attention
    galleries with their most important head only."""
    smoke = copy.deepcopy(config)
    smoke["defaults"]["model"] = {**(smoke["defaults"].get("model") or {}), "pretrained": False,
                                  "backbone_kwargs": dict(SMOKE_BACKBONE_KWARGS)}
    smoke["defaults"]["train"] = {**(smoke["defaults"].get("train") or {}), **SMOKE_TRAIN}
    smoke["defaults"]["lrs"] = smoke["defaults"]["lrs"][:1]
    for exp in smoke["experiments"].values():
        exp.pop("lrs", None)
        if exp["kind"] == "cross":
            continue
        limit = 1 if exp.get("variants") else SMOKE_MAX_SPLITS
        splits = exp.get("splits", 1)
        exp["splits"] = ({d: min(int(n), limit) for d, n in splits.items()} if isinstance(splits, dict)
                         else min(int(splits), limit) if isinstance(splits, int) else list(splits)[:limit])
    for fig in (smoke.get("figures") or {}).values():   # attention galleries of the most important head only:
        if fig["draw"] == "attention":                   # the same code, a third of the drawing time
            fig["top_k"] = 1
    return smoke


def _visible_gpus() -> int:
    import torch
    return torch.cuda.device_count()


def _smoke_data(config: dict, names: list[str], out: Path, log) -> Path:
    from ..data.fixtures import prepare_fixtures
    root = out / "fixture_data"
    experiments = [config["experiments"][n] for n in names]
    datasets = sorted({d for e in experiments for d in e.get("datasets", [])}
                      | {d for e in experiments for pair in e.get("pairs", []) for d in pair})
    prepare_fixtures(root, datasets, folders=config.get("dataset_roots") or {})
    log(f"smoke: fixture datasets in their official layouts under {root}: {', '.join(datasets)}")
    return root


# ------------------------------------------------------------------------------------------ execution
def _data_config(config: dict, dataset: str, data_root: Path):
    from ..data.sources import DataConfig
    roots = config.get("dataset_roots") or {}
    return DataConfig(dataset, str(data_root / roots.get(dataset, dataset)),
                      manifest=(config.get("manifests") or {}).get(dataset))


def _base_config(config: dict, datasets: list[str], data_root: Path, head_finetune: bool, group: str | None = None):
    """The plan's preset with its ``model`` and ``train`` overrides, on ``datasets``."""
    from ..engine.presets import preset_config
    defaults = config["defaults"]
    train = {"log_group": group, **(defaults.get("train") or {})}   # trackers group a reproduction's runs by experiment
    return preset_config(defaults.get("preset", "paper"), [_data_config(config, d, data_root) for d in datasets],
                         model=defaults.get("model") or {}, head_finetune=head_finetune, **train)


def _run_training(config: dict, exp: dict, data_root: Path, out: Path, gpus, log, launch=None,
                  name: str | None = None) -> str | None:
    """Sweep every group of a single/multi experiment; the first failed run's message, or None."""
    from .sweep import expand_grid, run_sweep
    first_error = None
    for group in experiment_groups(exp):
        base = _base_config(config, group, data_root, bool(exp.get("head_finetune", False)), name)
        grid = expand_grid(base, lrs=exp.get("lrs", config["defaults"]["lrs"]),
                           splits=experiment_splits(exp, group[0]), model_variants=exp.get("variants") or [{}])
        status = run_sweep(grid, out / "runs", gpus=gpus, log=log, **(launch or {}))
        for run, outcome in status.items():
            if outcome.startswith("failed"):
                log(f"  {run}: {outcome}")
                first_error = first_error or f"{run}: {outcome}"
    return first_error


def _run_cross(config: dict, exp: dict, data_root: Path, out: Path, log) -> tuple[list[dict], str | None]:
    """Evaluate the selected runs of the table's PerceptCLIP configuration on each pair's test dataset."""
    from ..engine.evaluate import evaluate_run
    from .paper_specs import get_table_spec, run_configuration
    from .results import results_tables
    spec = get_table_spec(exp["tables"][0])
    selected = results_tables(out / "runs")["selected"]
    fills = pd.Series([spec.row_for(run_configuration(r)[0]) is not None for _, r in selected.iterrows()],
                      index=selected.index, dtype=bool)   # the table's PerceptCLIP configuration only
    records, first_error = [], None
    for train_name, test_name in exp["pairs"]:
        runs = selected[(selected["datasets"] == train_name) & fills]
        if runs.empty:
            message = f"no finished run of table {spec.table}'s configuration on {train_name}: run {exp.get('uses')}"
            log(f"  {message}")
            first_error = first_error or message
            continue
        target = _data_config(config, test_name, data_root)
        for run_dir in runs["run_dir"]:
            try:   # one broken evaluation loses neither the others nor the records gathered so far
                records.append(evaluate_run(run_dir, target, split=None, part="test"))
            except Exception as err:   # noqa: BLE001
                message = f"{run_dir} on {test_name}: {type(err).__name__}: {err}"
                log(f"  {message}")
                first_error = first_error or message
    return records, first_error


def _run_unified(config: dict, exp: dict, data_root: Path, out: Path, log) -> tuple[list[dict] | None, str | None]:
    """The unified experiment's cross-dataset pairs (:func:`percept.study.unified.cross_evaluations`)."""
    from .results import results_tables
    from .unified import cross_evaluations
    selected = results_tables(out / "runs")["selected"]
    return cross_evaluations(selected, exp["datasets"], exp.get("pairs", []),
                             lambda name: _data_config(config, name, data_root), log=log)


def _write_unified(exp: dict, found: list[dict] | None, out: Path, result: Reproduction, log) -> None:
    from ..core.files import write_csv
    from .results import results_tables
    from .unified import unified_table
    try:
        table = unified_table(results_tables(out / "runs")["selected"], exp["datasets"], found or [])
    except (ValueError, FileNotFoundError) as err:
        result.failures[f"table {TABLE_ID}"] = str(err)
        log(f"table {TABLE_ID} FAILED: {err}")
        return
    result.tables[TABLE_ID] = table
    (out / "tables").mkdir(parents=True, exist_ok=True)
    write_csv(out / "tables" / f"table_{TABLE_ID}.csv", table)
    log(f"table {TABLE_ID}: {table['unified'].notna().sum()} unified cells, {table['single'].notna().sum()} "
        f"single-task beside them -> {out / 'tables' / f'table_{TABLE_ID}.csv'}")


def reproduce(out: str | os.PathLike, config_path: str | os.PathLike | None = None,
              data_root: str | os.PathLike | None = None, only: Iterable[str] | None = None,
              gpus: list[int] | None = None, log=print, smoke: bool = False, launcher: str = "local",
              slurm=None) -> Reproduction:
    """Run the experiments of ``reproduce.yaml`` (``only``: some of them) into ``out/runs``, evaluate the
    cross-dataset pairs, and write ``out/tables/table_<id>.csv`` (paper vs ours) for every table the
    experiments name. Finished runs are skipped, interrupted ones resume. ``smoke``: the plan of
    :func:`smoke_config` on generated fixture datasets (``data_root`` is not used). ``launcher="slurm"``
    (:mod:`percept.study.launch`): the runs are submitted as SLURM jobs and this returns at once; run it again when they
    have finished (finished runs are skipped) for the cross-dataset evaluations and the tables."""
    config = load_reproduce_config(config_path)
    out = Path(out)
    names = list(config["experiments"]) if only is None else list(only)
    unknown = set(names) - set(config["experiments"])
    if unknown:
        raise ValueError(f"unknown experiments {sorted(unknown)}; known: {', '.join(config['experiments'])}")
    if smoke:
        config = smoke_config(config)
        root = _smoke_data(config, names, out, log)
        # the fixtures' images are small and LoDa's pre-resize enlarges them at every load; the uint8 cache of
        # pre-resized images (an execution setting: the same results, tested) does that once per image. Only
        # when the runs go one at a time (no GPU or one): concurrent runs would build the same cache together
        if (len(gpus) if gpus is not None else _visible_gpus()) <= 1:
            config["defaults"]["train"]["cache_dir"] = str(out / "image_cache")
    else:
        root = Path(data_root or config.get("data_root") or os.environ.get("PERCEPT_DATA_ROOT") or "")
        if not str(root) or not root.is_dir():
            raise FileNotFoundError(f"data root {str(root)!r} is not a folder: pass --data-root or set "
                                    f"PERCEPT_DATA_ROOT (each dataset prepared in DATA_ROOT/<name>, see "
                                    f"reproduce.yaml), or run the plan on fixtures with --smoke")
    with warnings.catch_warnings():
        if smoke:   # fixture test parts of 2-10 images: logistic fits and per-class metrics warn; expected there
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
        return _execute(config, names, root, out, gpus, log, {"launcher": launcher, "slurm": slurm})


def _execute(config: dict, names: list[str], root: Path, out: Path, gpus, log, launch=None) -> Reproduction:
    from ..core.files import write_csv
    from .paper import compare, ours_from_cross, ours_from_results, table_sort_key
    from .results import results_tables
    result, records, unified = Reproduction(), [], {}
    # cross-dataset evaluations use the runs of the training experiments (the unified one's, the single-task runs
    # beside it): those go first, whatever the file's order
    order = {"unified": 1, "cross": 2}
    submitted = (launch or {}).get("launcher", "local") != "local"   # jobs run elsewhere: nothing to table yet
    for name in sorted(names, key=lambda n: order.get(config["experiments"][n]["kind"], 0)):
        exp = config["experiments"][name]
        if submitted and exp["kind"] == "cross":
            continue
        log(f"== {name} (tables {', '.join(map(str, exp['tables']))})")
        try:
            if exp["kind"] == "cross":
                found, error = _run_cross(config, exp, root, out, log)
                records += found
            else:
                error = _run_training(config, exp, root, out, gpus, log, launch, name)
                if exp["kind"] == "unified" and not submitted:
                    found, cross_error = _run_unified(config, exp, root, out, log)
                    unified[name] = found
                    error = error or cross_error
        except Exception as err:   # noqa: BLE001 - one experiment's failure must not stop the others
            error = f"{type(err).__name__}: {err}"
        if error:
            result.failures[name] = error
            log(f"== {name} FAILED: {error}")
    if submitted:
        log(f"runs submitted ({launch['launcher']}); when `percept status {out / 'runs'}` shows them done, run this "
            f"command again (finished runs are skipped) for the cross-dataset evaluations and the tables")
        return result
    try:
        aggregated = results_tables(out / "runs")["aggregated"]
    except FileNotFoundError:
        aggregated = None
    ours = pd.concat([ours_from_results(aggregated) if aggregated is not None else None, ours_from_cross(records)],
                     ignore_index=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    wanted = sorted({str(t) for n in names for t in config["experiments"][n]["tables"]} - {TABLE_ID},
                    key=table_sort_key)
    for name, found in unified.items():
        _write_unified(config["experiments"][name], found, out, result, log)
    for t in wanted:
        try:
            table = compare(ours, t)
        except ValueError as err:   # e.g. two comparable results for one cell: that table is not written
            result.failures[f"table {t}"] = str(err)
            log(f"table {t} FAILED: {err}")
            continue
        result.tables[t] = table
        write_csv(out / "tables" / f"table_{t}.csv", table)
        log(f"table {t}: {(table['status'] == 'both').sum()} of {(table['status'] != 'ours only').sum()} "
            f"paper cells filled -> {out / 'tables' / f'table_{t}.csv'}")
    _draw_figures(config, out, result, log)
    for name, error in result.failures.items():
        log(f"failed: {name}: {error}")
    return result


def _draw_figures(config: dict, out: Path, result: Reproduction, log) -> None:
    """The plan's figures from whatever finished runs ``out/runs`` holds (these experiments' and earlier ones'),
    into ``out/figures``: one whose runs are missing is named, not failed; one that cannot be drawn fails."""
    if not config.get("figures"):
        return
    from .paper_figures import draw_paper_figures   # torch and matplotlib: only when there are figures to draw
    for name, drawn in draw_paper_figures(config, out / "runs", out / "figures", log).items():
        if isinstance(drawn, list):
            result.figures[name] = drawn
        elif drawn.startswith("missing"):
            result.missing_figures[name] = drawn
        else:
            result.failures[f"figure {name}"] = drawn
