"""The ``percept`` command line. ``percept COMMAND --help`` explains each command."""
from __future__ import annotations

import argparse
import json
import sys
import warnings


def _demo(args) -> None:
    from .demo import run_demo
    run_demo(args.out, epochs=args.epochs, seed=args.seed, log=(lambda *a: None) if args.quiet else print)


def _params(args) -> None:
    from .model import build_model
    model = build_model(backbone=args.backbone, pretrained=False, strategy=args.strategy, head=args.head,
                        lora_r=args.lora_r, lora_alpha=args.lora_alpha, heads={"main": args.outputs})
    print(json.dumps({"backbone": args.backbone, "strategy": args.strategy, "head": args.head,
                      **model.parameter_counts()}, indent=2))


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="percept", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="offline end-to-end run on embedded synthetic data (CPU, minutes)",
                               description="Generate the synthetic KADID-style IQA set, train a tiny "
                                           "random-initialised PerceptCLIP (LoRA + MLP head, PLCC loss) and "
                                           "report test SRCC/PLCC. A pipeline check, not a paper result.")
    demo.add_argument("--out", required=True, help="output directory (data, weights.safetensors, metrics.json)")
    demo.add_argument("--epochs", type=int, default=8, help="maximum epochs (early stopping patience 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed for data, split and training")
    demo.add_argument("--quiet", action="store_true", help="no per-epoch log")
    demo.set_defaults(run=_demo)

    params = commands.add_parser("params", help="parameter counts of a model configuration",
                                 description="Build a model with random weights and count LoRA, head, "
                                             "trainable and total parameters.")
    params.add_argument("--backbone", default="clip_vit_l14", help="backbone name (see percept.backbones.BACKBONES)")
    params.add_argument("--strategy", default="lora", choices=["lora", "frozen", "full"])
    params.add_argument("--head", default="mlp", choices=["mlp", "linear"])
    params.add_argument("--lora-r", type=int, default=16)
    params.add_argument("--lora-alpha", type=float, default=8)
    params.add_argument("--outputs", type=int, default=1, help="head outputs (1 for regression, 8 for EmoSet)")
    params.set_defaults(run=_params)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"percept {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
