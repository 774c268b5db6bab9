"""What each ``percept`` command does (``cmd_<command>(args)``); the parsers and ``main`` are in :mod:`percept.interface.cli`."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def cmd_demo(args) -> None:
    from ..study.demo import run_demo
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, log=None if args.quiet else print)
    print(json.dumps({"run_dir": str(Path(args.out) / "run"), "test": result["test"]}, indent=2))


TABLE_WIDTH = 100   # terminal columns a listing fits in; --wide shows every column in full


def fit_table(table, keep=None, shrink: dict | None = None, width: int = TABLE_WIDTH) -> str:
    """``table`` as text no wider than ``width`` columns: only the columns ``keep`` (all when None), and the text
    of the columns of ``shrink`` (``{column: narrowest}``, in that order) cut with an ellipsis, one column after
    the other and none below its narrowest, until the lines fit. A column named ``run`` (a path) loses its start,
    where runs share their folders, the others their end."""
    import pandas as pd
    table = table[list(keep)] if keep is not None else table
    shrink = {c: n for c, n in (shrink or {}).items() if c in table.columns}
    table = table.astype({c: str for c in shrink})

    def render(frame) -> str:
        with pd.option_context("display.width", 10_000, "display.max_columns", None, "display.max_colwidth", None):
            return frame.to_string(index=False)

    text = render(table)
    for column, narrowest in shrink.items():
        excess = max(map(len, text.splitlines())) - width
        if excess <= 0:
            break
        room = max(narrowest, int(table[column].str.len().max()) - excess)
        cut = (lambda v: "\u2026" + v[len(v) - room + 1:]) if column == "run" else (lambda v: v[:room - 1] + "\u2026")
        table[column] = [v if len(v) <= room else cut(v) for v in table[column]]
        text = render(table)
    return text


def cmd_params(options) -> None:
    from ..model.perceptclip import ModelConfig, build_model
    from .cli_config import model_values
    from .cli_options import WEIGHT_FIELDS
    config = ModelConfig(**model_values(options, exclude=WEIGHT_FIELDS), pretrained=False,
                         heads={"main": options.outputs})
    print(json.dumps({"backbone": config.backbone, "strategy": config.strategy, "head_type": config.head_type,
                      **build_model(config).parameter_counts()}, indent=2))


def cmd_prepare(args) -> None:
    from ..data.prepare import prepare
    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r} must be KEY=VALUE (e.g. image_dir=512x384)")
        options[key.replace("-", "_")] = {"true": True, "false": False}.get(value.lower(), value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, path = prepare(args.dataset, args.root, out=args.out, allow_partial=args.allow_partial,
                           check_images=not args.labels_only, **options)
    for warning in caught:
        print(f"percept prepare: warning: {warning.message}", file=sys.stderr)
    print(f"{args.dataset}: {len(df)} rows -> {path} (sidecar {path.with_suffix('.json').name})")


RESUME_OPTIONS = ("run_dir", "run_dir_flag", "print_config")   # what `percept train RUN` takes besides execution flags


def cmd_train(options) -> None:
    """``percept train``: the run the options say (flags, a config file), or RUN's own, resumed."""
    from ..engine.runs import RunDir, config_yaml
    from ..engine.train import TrainConfig, train
    from ..engine.train_config import EXECUTION_FIELDS
    from .cli_config import train_config
    run = RunDir(options.run_dir)
    config = train_config(options)
    if config is None:                # resume a run (or one prepared by a sweep): typed execution flags apply
        if not run.config_file.is_file():
            raise ValueError(f"give --dataset and --root (or --config FILE), or the RUN of an existing run to "
                             f"resume ({run.config_file} does not exist)")
        changing = sorted(t for t in options.typed if t not in EXECUTION_FIELDS and t not in RESUME_OPTIONS)
        if changing:                  # never silently ignored: the run would not be what the command says
            flag = "--" + changing[0].rpartition(".")[2].replace("_", "-")
            raise ValueError(f"{run.path} resumes with its own configuration; {flag} would change it: drop it, or "
                             f"train into a new run directory")
        config = TrainConfig.from_dict(run.read_config())
        for name in EXECUTION_FIELDS:
            if name in options.typed:
                setattr(config, name, options.values[name])
        config.quiet = options.quiet
    if options.print_config:
        print(config_yaml(config.to_dict()), end="")
        return
    result = train(config, options.run_dir)
    print(json.dumps({"run_dir": options.run_dir, "val_score": result["val_score"], "test": result["test"]}, indent=2))


def cmd_evaluate(args) -> None:
    from ..data.sources import DataConfig
    from ..engine.evaluate import evaluate_run
    from .cli_config import data_entries
    record = evaluate_run(args.run_dir, DataConfig(**data_entries(vars(args), None, "percept evaluate")[0]),
                          split=None if args.split == 0 else args.split, part=args.part, head_name=args.head_name,
                          out=args.out, device=args.device, num_workers=args.workers)
    print(json.dumps(record, indent=2))


def cmd_sweep(options) -> None:
    from ..engine.runs import config_yaml
    from ..study.launch import slurm_options
    from ..study.sweep import LR_GRID, expand_grid, run_sweep
    from .cli_config import sweep_plan, train_config
    base = train_config(options)
    if base is None:
        raise ValueError("percept sweep needs the runs' template: --dataset NAME --root DIR (and the flags of "
                         "percept train), or --config FILE (a run config with a `sweep:` section)")
    plan = sweep_plan(options)
    if options.print_config:
        import yaml
        print(config_yaml(base.to_dict()) + yaml.safe_dump({"sweep": plan}, sort_keys=False), end="")
        return
    if plan.get("out") is None:
        raise ValueError("give --out, or `out` in the sweep file's `sweep` section")
    grid = expand_grid(base, lrs=plan.get("lrs") or LR_GRID, splits=plan.get("splits") or [1],
                       model_variants=plan.get("variants") or [{}])
    status = run_sweep(grid, plan["out"], gpus=options.gpus, launcher=options.launcher, slurm=slurm_options(options))
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    print(json.dumps({"runs": len(status), "failed": failed}, indent=2))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(status)} runs failed (see above)")


def cmd_results(args) -> None:
    import pandas as pd

    from ..study.results import results_tables, wide_table
    tables = results_tables(args.root)
    table = tables[args.level] if args.level != "wide" else wide_table(
        tables["aggregated"], metrics=args.metrics, statistic=args.statistic)
    if args.csv:
        from ..core.files import write_csv
        write_csv(args.csv, table.reset_index() if args.level == "wide" else table)
    with pd.option_context("display.max_columns", 50, "display.width", 200):
        print(table.to_string())


def cmd_status(args) -> int:
    import pandas as pd

    from ..engine.runs import tree_status
    table = tree_status(args.root)
    counts = table["state"].value_counts()
    if args.state:
        table = table[table["state"].isin(args.state)]
    if not len(table):
        print("(no runs)")
    elif args.wide:
        with pd.option_context("display.max_colwidth", None, "display.width", 10_000):
            print(table.to_string(index=False))
    else:
        print(fit_table(table, shrink={"run": 40, "detail": 24}))
    print(", ".join(f"{counts[s]} {s}" for s in counts.index) or "no runs", f"below {args.root}")
    return 1 if (table["state"] == "failed").any() else 0       # what it shows: `--state done` is 0 beside failures


def cmd_predict(args) -> int:

    from ..engine.predict import GeneratedDataWarning, predict_images
    if args.model is None:
        args.model = "official-iqa"
        print("percept predict: no --model given: scoring with official-iqa (the released PerceptCLIP IQA "
              "checkpoint); --model chooses a run, an export or another checkpoint", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GeneratedDataWarning)
        table = predict_images(args.images, args.model, device=args.device, batch_size=args.batch_size, out=args.out,
                               workers=args.workers, head_name=args.head_name, progress=not args.quiet,
                               precision=args.precision, fast_resize=args.fast_resize, overwrite=args.overwrite)
    for note in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, GeneratedDataWarning)):
        print(f"percept predict: note: {note}", file=sys.stderr)
    for w in caught:                                     # any other warning, as Python would have shown it
        if not issubclass(w.category, GeneratedDataWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    failed = table[table["error"].fillna("") != ""]
    if args.out is None:
        print(table.to_csv(index=False).rstrip("\n") if args.csv else table.to_string(index=False))
    else:
        print(f"{len(table) - len(failed)} of {len(table)} images scored -> {args.out}")
    for _, row in failed.iterrows():
        print(f"percept predict: cannot score {row['image']}: {row['error']}", file=sys.stderr)
    return 1 if len(failed) else 0


# what a listing shows within TABLE_WIDTH columns (the rest with --wide): (columns kept, columns cut to fit)
NARROW = {"models": (("model", "task", "cached", "trained_on", "score"), {"score": 30, "trained_on": 16}),
          "backbones": (("backbone", "family", "available", "weights", "used_for"), {"used_for": 24, "weights": 20}),
          "datasets": (None, {})}


def cmd_list(args) -> None:
    import pandas as pd

    from ..study.catalog import LISTS
    table = LISTS[args.what](**({"data_root": args.data_root} if args.what == "datasets" else {}))
    if args.csv:
        print(table.to_csv(index=False).rstrip("\n"))
    elif args.wide:
        with pd.option_context("display.max_columns", None, "display.width", 10_000, "display.max_colwidth", None):
            print(table.to_string(index=False))
    else:
        keep, shrink = NARROW[args.what]
        print(fit_table(table, keep, shrink))
        if keep is not None and len(keep) < table.shape[1]:
            print(f"(--wide: every column in full, {', '.join(c for c in table.columns if c not in keep)} too)")


def cmd_download(args) -> None:
    from ..study.catalog import download
    table = download(args.names, cache_dir=args.cache_dir)
    print(table.to_string(index=False))


def cmd_export(args) -> None:
    from ..study.export import export_run
    path = export_run(args.run_dir, args.format, args.out, head_name=args.head_name,
                      backbone_weights=args.backbone_weights)
    size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    print(f"{args.format}: {path} ({size / 2**20:.1f} MB)")


def cmd_push(args) -> None:
    from ..study.export import push_run
    print(push_run(args.run_dir, args.repo_id, private=args.private, token=args.token))


def cmd_app(args) -> None:
    try:
        import gradio  # noqa: F401

        from .app import launch
    except ImportError as err:
        raise ImportError(f"percept app needs Gradio: pip install 'perceptclip[app]' ({err})") from err
    launch(args.model, server_name=args.host, server_port=args.port, share=args.share, runs_dir=args.runs_dir)
