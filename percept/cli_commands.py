"""What each ``percept`` command does (``cmd_<command>(args)``); the parsers and ``main`` are in :mod:`percept.cli`."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def cmd_demo(args) -> None:
    from .demo import run_demo
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, log=None if args.quiet else print)
    print(json.dumps({"run_dir": str(Path(args.out) / "run"), "test": result["test"]}, indent=2))


TABLE_WIDTH = 100   # terminal columns a listing fits in; --wide shows every column in full


def fit_table(table, keep=None, shrink: dict | None = None, width: int = TABLE_WIDTH) -> str:
    """``table`` as text no wider than ``width`` columns: only the columns ``keep`` (all when None), and the text
    of the columns of ``shrink`` (``{column: narrowest}``, in that order) cut with an ellipsis, one column after
    the other and none below its narrowest, until the lines fit. A column named ``run`` (a path) loses its start,
    where runs share their folders, the others their end."""
    import pandas as pd
    shrink = {c: n for c, n in (shrink or {}).items() if c in table.columns}
    table = table[list(keep)] if keep is not None else table
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


WEIGHT_FIELDS = ("pretrained", "weights_path")   # ModelConfig fields that choose the encoder's weights


def cmd_params(args) -> None:
    from .model import ModelConfig, build_model
    from .options import values
    config = ModelConfig(**values(ModelConfig, args, exclude=WEIGHT_FIELDS), pretrained=False,
                         heads={"main": args.outputs})
    print(json.dumps({"backbone": config.backbone, "strategy": config.strategy, "head_type": config.head_type,
                      **build_model(config).parameter_counts()}, indent=2))


def cmd_prepare(args) -> None:
    from .data.prepare import prepare
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


def _data_configs(args) -> list:
    from .data.sources import DataConfig
    datasets = args.dataset if isinstance(args.dataset, list) else [args.dataset]
    roots = args.root if isinstance(args.root, list) else [args.root] if args.root else []
    if not roots and all(d.startswith("csv:") for d in datasets):
        roots = [str(Path(d[4:]).parent) for d in datasets]          # a CSV's images default to its own folder
    if len(roots) != len(datasets):
        raise ValueError(f"give one --root per --dataset ({len(datasets)} datasets, {len(roots)} roots)")
    manifests = args.manifest if isinstance(args.manifest, list) else [args.manifest] * len(roots)
    if len(manifests) != len(roots):
        raise ValueError("give one --manifest per --dataset, or none")
    csv = {"task": args.task, "classes": args.classes.split(",") if args.classes else None,
           "label_range": args.label_range}
    absolute = lambda p: None if p is None else str(Path(p).resolve())   # noqa: E731  a run must not depend on the cwd
    return [DataConfig(d, absolute(r), absolute(m), **(csv if d.startswith("csv:") else {}))
            for d, r, m in zip(datasets, roots, manifests)]


def _file_config(args):
    """(TrainConfig, sweep section) of ``--config FILE`` with the typed flags over it (percept.config_files)."""
    from .config_files import train_config_from_file
    return train_config_from_file(args.config, args, args.given,
                                  data_from_flags=_data_configs(args) if "dataset" in args.given else None)


def _train_config(args):
    from .model import ModelConfig
    from .options import values
    from .train_config import TrainConfig
    return TrainConfig(data=_data_configs(args), model=ModelConfig(**values(ModelConfig, args)),
                       **values(TrainConfig, args))


def cmd_train(args) -> None:
    from .runs import RunDir
    from .train import TrainConfig, train
    run = RunDir(args.run_dir)
    if args.config:
        config, _ = _file_config(args)
    elif args.dataset:
        config = _train_config(args)
    elif run.config_file.is_file():   # resume a run (or one prepared by a sweep): typed execution flags apply
        from .options import values
        from .train_config import EXECUTION_FIELDS
        config = TrainConfig.from_dict(run.read_config())
        typed = values(TrainConfig, args)
        for name in EXECUTION_FIELDS:
            if name in args.given:
                setattr(config, name, typed[name])
        config.quiet = args.quiet
    else:
        raise ValueError(f"give --dataset and --root, or the RUN of an existing run to resume "
                         f"({run.config_file} does not exist)")
    result = train(config, args.run_dir)
    print(json.dumps({"run_dir": args.run_dir, "val_score": result["val_score"], "test": result["test"]}, indent=2))


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate_run
    record = evaluate_run(args.run_dir, _data_configs(args)[0],
                          split=None if args.split == 0 else args.split, part=args.part, head_name=args.head_name,
                          out=args.out, device=args.device, num_workers=args.workers)
    print(json.dumps(record, indent=2))


def cmd_sweep(args) -> None:
    from .sweep import LR_GRID, expand_grid, run_sweep
    if not args.config and not args.dataset:
        raise ValueError("percept sweep needs the runs' template: --dataset NAME --root DIR (and the flags of "
                         "percept train), or --config FILE (a run config with a `sweep:` section)")
    base, plan = _file_config(args) if args.config else (_train_config(args), {})
    if args.variant or "variants" not in plan:
        plan["variants"] = [json.loads(v) for v in args.variant] if args.variant else [{}]
    for key in ("lrs", "splits", "out"):
        if getattr(args, key) is not None or key not in plan:
            plan[key] = getattr(args, key)
    if plan["out"] is None:
        raise ValueError("give --out, or `out` in the sweep file's `sweep` section")
    grid = expand_grid(base, lrs=plan["lrs"] or LR_GRID, splits=plan["splits"] or [1], model_variants=plan["variants"])
    from .launch import slurm_options
    status = run_sweep(grid, plan["out"], gpus=args.gpus, launcher=args.launcher, slurm=slurm_options(args))
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    print(json.dumps({"runs": len(status), "failed": failed}, indent=2))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(status)} runs failed (see above)")


def cmd_results(args) -> None:
    import pandas as pd
    from .results import results_tables, wide_table
    tables = results_tables(args.root)
    table = tables[args.level] if args.level != "wide" else wide_table(
        tables["aggregated"], metrics=args.metrics, statistic=args.statistic)
    if args.csv:
        from .files import write_csv
        write_csv(args.csv, table.reset_index() if args.level == "wide" else table)
    with pd.option_context("display.max_columns", 50, "display.width", 200):
        print(table.to_string())


def cmd_status(args) -> int:
    import pandas as pd
    from .run_status import tree_status
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
        print(fit_table(table, shrink={"run": 40, "detail": 24, "state": 5}))
    print(", ".join(f"{counts[s]} {s}" for s in counts.index) or "no runs", f"below {args.root}")
    return 1 if (table["state"] == "failed").any() else 0       # what it shows: `--state done` is 0 beside failures


def cmd_predict(args) -> int:
    import warnings
    from .predict import GeneratedDataWarning, predict_images
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
    from .catalog import LISTS
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
    from .catalog import download
    table = download(args.names, cache_dir=args.cache_dir)
    print(table.to_string(index=False))


def cmd_export(args) -> None:
    from .export import export_run
    path = export_run(args.run_dir, args.format, args.out, head_name=args.head_name,
                      backbone_weights=args.backbone_weights)
    size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    print(f"{args.format}: {path} ({size / 2**20:.1f} MB)")


def cmd_push(args) -> None:
    from .export import push_run
    print(push_run(args.run_dir, args.repo_id, private=args.private, token=args.token))


def cmd_app(args) -> None:
    try:
        from .app import launch
        import gradio  # noqa: F401
    except ImportError as err:
        raise ImportError(f"percept app needs Gradio: pip install 'perceptclip[app]' ({err})") from err
    launch(args.model, server_name=args.host, server_port=args.port, share=args.share, runs_dir=args.runs_dir)
