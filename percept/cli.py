"""The ``percept`` command line. ``percept COMMAND --help`` explains each command."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path


def _demo(args) -> None:
    from .demo import run_demo
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, log=None if args.quiet else print)
    print(json.dumps({"run_dir": str(Path(args.out) / "run"), "test": result["test"]}, indent=2))


WEIGHT_FIELDS = ("pretrained", "weights_path")   # ModelConfig fields that choose the encoder's weights


def _params(args) -> None:
    from .model import ModelConfig, build_model
    from .options import values
    config = ModelConfig(**values(ModelConfig, args, exclude=WEIGHT_FIELDS), pretrained=False,
                         heads={"main": args.outputs})
    print(json.dumps({"backbone": config.backbone, "strategy": config.strategy, "head_type": config.head_type,
                      **build_model(config).parameter_counts()}, indent=2))


def _prepare(args) -> None:
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
    return [DataConfig(d, r, m, **(csv if d.startswith("csv:") else {})) for d, r, m in zip(datasets, roots, manifests)]


def _train_config(args):
    from .model import ModelConfig
    from .options import values
    from .train_config import TrainConfig
    return TrainConfig(data=_data_configs(args), model=ModelConfig(**values(ModelConfig, args)),
                       **values(TrainConfig, args))


def _train(args) -> None:
    from .runs import RunDir
    from .train import TrainConfig, train
    run = RunDir(args.run_dir)
    if args.dataset:
        config = _train_config(args)
    elif run.config_file.is_file():   # resume a run (or one prepared by a sweep)
        config = TrainConfig.from_dict(run.read_config())
        config.quiet = args.quiet
    else:
        raise ValueError(f"give --dataset and --root, or --run-dir of an existing run to resume "
                         f"({run.config_file} does not exist)")
    result = train(config, args.run_dir)
    print(json.dumps({"run_dir": args.run_dir, "val_score": result["val_score"], "test": result["test"]}, indent=2))


def _evaluate(args) -> None:
    from .evaluate import evaluate_run
    record = evaluate_run(args.run_dir, _data_configs(args)[0],
                          split=None if args.split == 0 else args.split, part=args.part, head_name=args.head_name,
                          out=args.out, device=args.device, num_workers=args.workers)
    print(json.dumps(record, indent=2))


def _sweep(args) -> None:
    from .sweep import expand_grid, run_sweep
    base = _train_config(args)
    variants = [json.loads(v) for v in args.variant] if args.variant else [{}]
    grid = expand_grid(base, lrs=args.lrs, splits=args.splits, model_variants=variants)
    status = run_sweep(grid, args.out, gpus=args.gpus)
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    print(json.dumps({"runs": len(status), "failed": failed}, indent=2))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(status)} runs failed (see above)")


def _results(args) -> None:
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


def _predict(args) -> int:
    from .predict import predict_images
    table = predict_images(args.images, args.model, device=args.device, batch_size=args.batch_size, out=args.out,
                           workers=args.workers, head_name=args.head_name, progress=not args.quiet,
                           precision=args.precision)
    failed = table[table["error"].fillna("") != ""]
    if args.out is None:
        print(table.to_csv(index=False) if args.csv else table.to_string(index=False))
    else:
        print(f"{len(table) - len(failed)} of {len(table)} images scored -> {args.out}")
    for _, row in failed.iterrows():
        print(f"percept predict: cannot score {row['image']}: {row['error']}", file=sys.stderr)
    return 1 if len(failed) else 0


def _list(args) -> None:
    import pandas as pd
    from .catalog import LISTS
    table = LISTS[args.what](**({"data_root": args.data_root} if args.what == "datasets" else {}))
    with pd.option_context("display.max_columns", 20, "display.width", 200, "display.max_colwidth", 60):
        print(table.to_csv(index=False) if args.csv else table.to_string(index=False))


def _add_data_args(p, many: bool = True) -> None:
    action = "append" if many else "store"
    p.add_argument("--dataset", action=action, required=not many, help="dataset name (a card in data_manifests/"
                   "cards, or synthetic_iqa / synthetic_strength / synthetic_distortion), or csv:PATH, a CSV of "
                   "your own (columns image,label[,split1..]) with --task" +
                   ("; repeat for multi-dataset training" if many else ""))
    p.add_argument("--root", action=action, help="dataset folder (the official download, where `percept prepare` "
                   "wrote percept_manifest.csv; synthetic sets are generated there; a CSV's image paths are under "
                   "it, default: the CSV's folder)")
    p.add_argument("--manifest", action=action, default=None, help="manifest CSV (default ROOT/percept_manifest.csv)")
    p.add_argument("--task", choices=["iqa", "memorability", "emotion"], default=None,
                   help="what a csv:PATH dataset's labels are (its protocol, loss and transforms follow)")
    p.add_argument("--classes", default=None, help="a csv:PATH emotion dataset's class names in order, comma-"
                   "separated (default: the sorted names in its label column)")
    p.add_argument("--label-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="a csv:PATH regression dataset's valid label range (default: any number for iqa, "
                   "[-1, 1] for memorability)")


def _add_model_args(p, weights: bool = True) -> None:
    """The model's flags, one per :class:`~percept.model.ModelConfig` field (:mod:`percept.options`);
    ``weights=False``: without the flags that choose the encoder's weights (``percept params``)."""
    from .model import ModelConfig
    from .options import add_flags
    add_flags(p, ModelConfig, exclude=() if weights else WEIGHT_FIELDS)
    if weights:
        p.add_argument("--random-init", dest="pretrained", action="store_false", help="= --no-pretrained")


def _add_train_args(p) -> None:
    """Data flags, then one flag per field of :class:`~percept.model.ModelConfig` and
    :class:`~percept.train_config.TrainConfig` (help, defaults and choices come from the fields)."""
    from .options import add_flags
    from .train_config import EXECUTION_FIELDS, TrainConfig
    _add_data_args(p)
    _add_model_args(p.add_argument_group("model (ablations: Tables 6, 7, A.7, A.8, A.10, A.11)"))
    add_flags(p.add_argument_group("protocol (paper §3.1)"), TrainConfig, exclude=EXECUTION_FIELDS)
    add_flags(p.add_argument_group("execution (does not change results)"), TrainConfig,
              exclude=[f for f in TrainConfig.__dataclass_fields__ if f not in EXECUTION_FIELDS])


def _demo_command(commands, full: bool) -> None:
    demo = commands.add_parser("demo", help="offline end-to-end run on embedded synthetic data (CPU, minutes)",
                               description="Generate the synthetic KADID-style IQA set, adapt the demo's "
                                           "own tiny image-text prior (tiny_clip_prior) with LoRA + MLP head (PLCC "
                                           "loss) and report test SRCC/PLCC. The recipe in miniature, not a paper "
                                           "result.")
    demo.add_argument("--out", required=True, help="output directory (synthetic/ data and run/ directory)")
    demo.add_argument("--epochs", type=int, default=8, help="maximum epochs (early stopping patience 4)")
    demo.add_argument("--seed", type=int, default=0, help="seed for data, split and training")
    demo.add_argument("--quiet", action="store_true", help="no per-epoch log")
    demo.set_defaults(run=_demo)


def _params_command(commands, full: bool) -> None:
    params = commands.add_parser("params", help="parameter counts of a model configuration",
                                 description="Build a model with random weights and count LoRA, heads, "
                                             "trainable and total parameters.")
    if full:
        _add_model_args(params, weights=False)
    params.add_argument("--outputs", type=int, default=1, help="head outputs (1 for regression, 8 for EmoSet)")
    params.set_defaults(run=_params)


def _prepare_command(commands, full: bool) -> None:
    from .data.cards import CARDS
    prepare = commands.add_parser(
        "prepare", help="build a verified manifest from an official dataset download",
        description="Read a dataset's official download at --root (layout: see data_manifests/cards/NAME.md), "
                    "check every listed image exists, and write a manifest CSV (one row per image, labels, "
                    "official split columns) plus a JSON sidecar with its checksum.")
    prepare.add_argument("dataset", choices=sorted(CARDS), help="dataset name")
    prepare.add_argument("--root", required=True, help="folder of the official download")
    prepare.add_argument("--out", default=None, help="manifest path (default ROOT/percept_manifest.csv)")
    prepare.add_argument("--allow-partial", action="store_true",
                         help="keep the present images when some are missing (recorded as partial in the sidecar)")
    prepare.add_argument("--labels-only", action="store_true",
                         help="do not check that images exist (label files only; the sidecar records it)")
    prepare.add_argument("--option", action="append", metavar="KEY=VALUE",
                         help="preparer option, e.g. image_dir=512x384 for KonIQ-10k (repeatable)")
    prepare.set_defaults(run=_prepare)


def _train_command(commands, full: bool) -> None:
    train = commands.add_parser("train", help="train one run (one dataset, or several: multi-dataset)",
                                description="Train PerceptCLIP with the paper's protocol (AdamW, early stopping "
                                "on validation, best epoch kept, test with the task's test transform) into "
                                "--run-dir. Re-running the same command resumes an interrupted run; "
                                "`percept train --run-dir RUN` alone resumes RUN from its config.json.")
    train.add_argument("--run-dir", required=True, help="output folder of the run")
    if full:
        _add_train_args(train)
    train.set_defaults(run=_train)


def _evaluate_command(commands, full: bool) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate a finished run on another dataset (no retraining)",
                                   description="Cross-dataset generalisation (Table 2, Table A.1): the run's best "
                                   "weights on a dataset's test part (or the whole dataset with --split 0).")
    evaluate.add_argument("--run-dir", required=True)
    _add_data_args(evaluate, many=False)
    evaluate.add_argument("--split", type=int, default=0, help="split to use; 0 = every image (default)")
    evaluate.add_argument("--part", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--head-name", default=None, help="which head of a multi-dataset run (default: the "
                          "dataset's own head, else the first)")
    evaluate.add_argument("--out", default=None, help="output folder (default RUN/eval/...)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--workers", type=int, default=None,
                          help="DataLoader worker processes (default: 0 on CPU, the CPU cores up to 16 on GPU)")
    evaluate.set_defaults(run=_evaluate)


def _sweep_command(commands, full: bool) -> None:
    sweep = commands.add_parser("sweep", help="many runs: splits x learning rates x model variants",
                                description="Run the grid under --out/<datasets>/<variant>/split<k>/lr<lr>, on "
                                "every local GPU (one run per GPU at a time) or in-process on CPU; finished runs "
                                "are skipped. Then `percept results --root OUT` selects the LR by validation.")
    sweep.add_argument("--out", required=True, help="root folder of the sweep")
    sweep.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 5e-4, 1e-3])
    sweep.add_argument("--splits", type=int, nargs="+", default=[1])
    sweep.add_argument("--variant", action="append", help='model overrides as JSON, e.g. \'{"strategy": "frozen"}\' '
                       "(repeatable)")
    sweep.add_argument("--gpus", type=int, nargs="*", default=None, help="GPU indices (default: all visible)")
    if full:
        _add_train_args(sweep)
    sweep.set_defaults(run=_sweep)


def _results_command(commands, full: bool) -> None:
    results = commands.add_parser("results", help="tables from a tree of runs",
                                  description="Collect finished runs below --root; select the learning rate by "
                                  "validation score; aggregate over splits (median and mean).")
    results.add_argument("--root", required=True)
    results.add_argument("--level", default="aggregated", choices=["runs", "selected", "aggregated", "wide"])
    results.add_argument("--metrics", nargs="+", default=["srcc", "plcc_logistic"], help="for --level wide")
    results.add_argument("--statistic", default="median", choices=["median", "mean"], help="for --level wide")
    results.add_argument("--csv", default=None, help="also write the table to this CSV file")
    results.set_defaults(run=_results)


def _predict_command(commands, full: bool) -> None:
    predict = commands.add_parser("predict", help="score image files with a run or an official checkpoint",
                                  description="One row per image: a score (IQA, memorability) or a class with "
                                  "probabilities (emotion), and an error column: an unreadable file is reported "
                                  "and the rest are scored (exit status 1 when any failed).")
    predict.add_argument("images", nargs="+", help="image files, folders (recursive), glob patterns, or .txt/.csv "
                         "lists of files")
    predict.add_argument("--model", default="official-iqa", help="a run directory, official-iqa, "
                         "official-memorability, official-emotions, or a path to an official .pth")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                         help="auto: bf16 autocast on a GPU, fp32 on the CPU")
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    predict.add_argument("--out", default=None, help="write the scores to this CSV as they come; a re-run with the "
                         "same --out scores only what it lacks (resume)")
    predict.add_argument("--workers", type=int, default=None, help="DataLoader processes decoding images (default: "
                         "0 on the CPU, the CPU cores up to 16 with a GPU); on the CPU each takes a core from the "
                         "model, which pays for a small model only")
    predict.add_argument("--head-name", default=None, help="which head of a multi-dataset run")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=_predict)


def _list_command(commands, full: bool) -> None:
    what = commands.add_parser("list", help="the official checkpoints, backbones or datasets, and whether their "
                               "files are here", description="What exists: official checkpoints (what each score "
                               "means, whether cached for offline use), backbones (where their weights come from, "
                               "whether here), datasets (paper name, task, label; with --data-root whether "
                               "prepared). Nothing is downloaded.")
    what.add_argument("what", nargs="?", default="models", choices=["models", "backbones", "datasets"])
    what.add_argument("--data-root", default=None, help="folder holding one prepared dataset per subfolder")
    what.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    what.set_defaults(run=_list)


def _download(args) -> None:
    from .catalog import download
    table = download(args.names, cache_dir=args.cache_dir)
    print(table.to_string(index=False))


def _download_command(commands, full: bool) -> None:
    from .catalog import DEFAULT_DOWNLOADS
    fetch = commands.add_parser("download", help="prefetch official checkpoints and backbone weights into the HF "
                                "cache (for offline clusters)", description="Fetch into the Hugging Face cache "
                                "(HF_HOME, or --cache-dir) what `percept predict`, create_metric and training load "
                                "from the hub, so that machines without internet sharing that cache run with "
                                "HF_HUB_OFFLINE=1. Cached files are not fetched again.")
    fetch.add_argument("names", nargs="*", default=list(DEFAULT_DOWNLOADS), help="official checkpoints (official-"
                       "iqa, ...) and backbones (clip_vit_l14, ...); default: " + " ".join(DEFAULT_DOWNLOADS))
    fetch.add_argument("--cache-dir", default=None, help="cache folder (default: huggingface_hub's, from HF_HOME)")
    fetch.set_defaults(run=_download)


def _export(args) -> None:
    from .export import export_run
    path = export_run(args.run_dir, args.format, args.out, head_name=args.head_name,
                      backbone_weights=args.backbone_weights)
    size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    print(f"{args.format}: {path} ({size / 2**20:.1f} MB)")


def _export_command(commands, full: bool) -> None:
    export = commands.add_parser("export", help="write a finished run as a hub folder, the official .pth layout, "
                                 "or merged timm weights", description="hub: config.json + model.safetensors "
                                 "(LoRA + heads) + a model card, for PerceptCLIP.from_pretrained and the HF hub; "
                                 "official: the authors' release layout (transformers CLIPVisionModel + peft LoRA + "
                                 "mlp head, one head); merged: LoRA folded into plain timm weights, heads beside.")
    export.add_argument("run_dir", help="a finished run directory")
    export.add_argument("--format", required=True, choices=["hub", "official", "merged"])
    export.add_argument("--out", required=True, help="a folder (hub) or a file (official: .pth, merged: .safetensors)")
    export.add_argument("--head-name", default=None, help="which head, for a multi-dataset run in the official format")
    export.add_argument("--backbone-weights", default=None, help="a local file of the backbone's weights (default: "
                        "what the run used)")
    export.set_defaults(run=_export)


def _push(args) -> None:
    from .export import push_run
    print(push_run(args.run_dir, args.repo_id, private=args.private, token=args.token))


def _push_command(commands, full: bool) -> None:
    push = commands.add_parser("push", help="upload a finished run to the Hugging Face hub (hub format + model card)",
                               description="Export RUN in the hub format with its model card and upload it to "
                               "REPO_ID (created if needed). The token comes from HF_TOKEN or `hf auth login`.")
    push.add_argument("run_dir")
    push.add_argument("repo_id", help="user/name on the Hugging Face hub")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--token", default=None, help="a Hugging Face token (default: HF_TOKEN / the saved login)")
    push.set_defaults(run=_push)


def _delegated_command(commands, full: bool) -> None:
    """Commands parsed by their own modules (see main)."""
    commands.add_parser("bench", add_help=False, help="throughput of the fast path vs the official-style "
                        "reference (percept bench --help)")   # parsed by percept.bench.main (see main below)
    commands.add_parser("notebooks", add_help=False, help="execute the numbered notebooks with papermill "
                        "(percept notebooks --help)")   # parsed by percept.notebooks.main
    commands.add_parser("reproduce", add_help=False, help="the paper's experiments from reproduce.yaml "
                        "(percept reproduce --help)")   # parsed by percept.reproduce.main


COMMANDS = {"demo": _demo_command, "params": _params_command, "prepare": _prepare_command, "train": _train_command,
            "evaluate": _evaluate_command, "sweep": _sweep_command, "results": _results_command,
            "predict": _predict_command, "list": _list_command, "download": _download_command,
            "export": _export_command, "push": _push_command, "bench, notebooks, reproduce": _delegated_command}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the flags generated from the config dataclasses (``params``, ``train``, ``sweep``: they
    import torch) are added only for the command being run, or for all when ``command`` is None, so that
    ``percept prepare`` and ``percept --help`` start in a moment."""
    parser = argparse.ArgumentParser(prog="percept", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, add in COMMANDS.items():
        add(commands, full=command is None or command == name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:   # its options live with the benchmark (percept/bench/run.py)
        from .bench import main as bench_main
        return bench_main(argv[1:])
    if argv[:1] == ["notebooks"]:
        from .notebooks import main as notebooks_main
        return notebooks_main(argv[1:])
    if argv[:1] == ["reproduce"]:
        from .reproduce import main as reproduce_main
        return reproduce_main(argv[1:])
    args = build_parser(argv[0] if argv and not argv[0].startswith("-") else "").parse_args(argv)
    try:
        status = args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"percept {args.command}: error: {err}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
