"""``percept reproduce``: the paper's plan (reproduce.yaml) from the command line: print it with its cost
(``--dry-run``), run it (``--only``, ``--gpus``, a SLURM launcher), or run every experiment on fixture datasets
(``--smoke``). The plan itself is :mod:`percept.study.reproduce`."""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from ..core.resources import workspace
from ..study.launch import add_launcher_args, slurm_options
from ..study.reproduce import (
    REPRODUCE_YAML,
    figure_plan,
    load_reproduce_config,
    reproduce,
    reproduce_plan,
    sampling_report,
    smoke_config,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="percept reproduce",
                                     description="Reproduce the paper's tables (reproduce.yaml): sweeps on the real "
                                                 "datasets with CLIP ViT-L/14, then paper-vs-ours tables.")
    parser.add_argument("--config", default=str(REPRODUCE_YAML), help="plan file (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder, runs/ and tables/ (default: WORKSPACE/reproduce, "
                        "or WORKSPACE/reproduce_smoke with --smoke; WORKSPACE: $PERCEPT_HOME, else a checkout's "
                        "outputs/, else ~/percept)")
    parser.add_argument("--data-root", default=None, help="folder of the prepared datasets (default: the plan's "
                        "data_root or $PERCEPT_DATA_ROOT)")
    parser.add_argument("--only", nargs="+", default=None, help="experiment names to run")
    parser.add_argument("--gpus", type=int, nargs="*", default=None, help="GPU indices (default: all visible)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, its estimated GPU hours and the "
                        "batch composition of the multi-dataset groups")
    add_launcher_args(parser)
    parser.add_argument("--smoke", action="store_true", help="every experiment for one epoch on generated fixture "
                        "datasets with tiny random backbones (CPU, minutes; checks the plan, not the paper)")
    args = parser.parse_args(argv)
    try:
        config = load_reproduce_config(args.config)
        plan = reproduce_plan(smoke_config(config) if args.smoke else config)
        if args.only:
            plan = plan[plan["experiment"].isin(args.only)]
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(plan.drop(columns=["stated_gpu_hours", *(["gpu_hours"] if args.smoke else [])]).to_string(index=False))
            if args.dry_run:
                figures = figure_plan(config)
                if len(figures):
                    print("\nfigures (percept.study.paper_figures, into OUT/figures):")
                    print(figures.to_string(index=False))
                print("\nmulti-dataset batches (percept.engine.sampling):")
                print(sampling_report(config).to_string(index=False))
        if not args.smoke:
            print(f"total: {int(plan['runs'].sum())} runs, about {int(plan['gpu_hours'].sum()):,} L40S GPU hours "
                  f"(upper bound: 40 epochs each; early stopping shortens most runs)")
        if args.dry_run:
            return 0
        out = args.out or str(workspace() / ("reproduce_smoke" if args.smoke else "reproduce"))
        result = reproduce(out, args.config, args.data_root, args.only, args.gpus, smoke=args.smoke,
                           launcher=args.launcher, slurm=slurm_options(args))
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        print(f"percept reproduce: error: {err}", file=sys.stderr)
        return 2
    if result.failures:
        print(f"percept reproduce: {len(result.failures)} experiment(s) failed: "
              + "; ".join(f"{k}: {v}" for k, v in result.failures.items()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
