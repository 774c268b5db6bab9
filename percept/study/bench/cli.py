"""``percept bench`` (= ``python -m percept.study.bench``): one measurement run (:func:`~percept.study.bench.run.benchmark`), or
the prepared GPU check (``--suite gpu-check``, :mod:`percept.study.bench.gpu_check`)."""
from __future__ import annotations

import argparse

from .gpu_check import STEPS, gpu_check
from .run import add_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="percept bench", description="Training/inference/data throughput of the fast path and of the "
                                          "official-style reference path, side by side; JSON with --out. "
                                          "--suite gpu-check --out DIR: every GPU number the project reports "
                                          "(make gpu-check; a dry run without a GPU)."))
    parser.add_argument("--suite", choices=["gpu-check"], default=None, help="gpu-check: the prepared GPU check "
                        "(percept.study.bench.gpu_check) into the folder --out; its own settings (ViT-L/14, batch 128 on a "
                        "GPU; tiny_clip, a few steps without one)")
    parser.add_argument("--dry-run", action="store_true", help="with --suite: the CPU settings even on a GPU")
    parser.add_argument("--only", default=None, metavar="A,B", help="with --suite: only these steps (default: all: "
                        + ", ".join(STEPS) + "), e.g. a rerun of the failed ones into another folder")
    args = parser.parse_args(argv)
    if args.suite == "gpu-check":
        if not args.out:
            parser.error("--suite gpu-check needs --out DIR (a folder)")
        steps = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
        try:
            record = gpu_check(args.out, device=args.device, dry_run=True if args.dry_run else None, steps=steps)
        except ValueError as err:      # an unknown step or device, before anything runs
            parser.error(str(err))
        return 1 if record["failed"] else 0
    if args.only:
        parser.error("--only goes with --suite gpu-check")
    run_from_args(args)
    return 0
