"""The ``percept`` command line. ``percept COMMAND --help`` explains each command."""
from __future__ import annotations

import argparse
import json
import sys


def _demo(args) -> None:
    from .demo import run_demo
    run_demo(args.out, epochs=args.epochs, seed=args.seed, log=(lambda *a: None) if args.quiet else print)


def _params(args) -> None:
    from .model import build_model
    model = build_model(backbone=args.backbone, pretrained=False, strategy=args.strategy, head=args.head,
                        lora_r=args.lora_r, lora_alpha=args.lora_alpha, heads={"main": args.outputs})
    print(json.dumps({"backbone": args.backbone, "strategy": args.strategy, "head": args.head,
                      **model.parameter_counts()}, indent=2))


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
