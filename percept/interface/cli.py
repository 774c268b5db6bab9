"""The percept command line: PerceptCLIP (CLIP + LoRA + an MLP head) for image quality, memorability and emotion.
`percept COMMAND --help` explains each command. A run directory (RUN) and a folder of runs (ROOT) come first,
after the command, in every command that takes one (`--run-dir` / `--root` name them as well)."""
from __future__ import annotations

import argparse
import os
import select
import sys

from . import cli_commands as cmd
from .cli_options import add_data_flags


class _OnePlace(argparse.Action):
    """A value that may be given in one of two places (``percept status ROOT`` or ``--root ROOT``): the same value
    twice is fine, two different ones are an error."""

    def __call__(self, parser, namespace, value, option_string=None):
        if value is None:
            return
        before = getattr(namespace, self.dest, None)
        if before is not None and before != value:
            parser.error(f"two {self.metavar} given ({before} and {value}); give one, after the command")
        setattr(namespace, self.dest, value)


def _add_run_dir(p, help: str) -> None:
    """The run directory, given the same way in every command: ``percept COMMAND RUN`` (``--run-dir RUN`` too:
    one destination; the positional, when absent, leaves the flag's value)."""
    p.add_argument("run_dir", nargs="?", metavar="RUN", default=argparse.SUPPRESS, action=_OnePlace, help=help)
    p.add_argument("--run-dir", dest="run_dir", metavar="RUN", default=None, action=_OnePlace, help="= RUN")


def _add_tree_root(p) -> None:
    """A folder of run directories, given the same way: ``percept COMMAND ROOT`` (``--root ROOT`` too)."""
    p.add_argument("root", nargs="?", metavar="ROOT", default=argparse.SUPPRESS, action=_OnePlace,
                   help="a folder of run directories (a sweep's or `percept reproduce`'s runs/)")
    p.add_argument("--root", dest="root", metavar="ROOT", default=None, action=_OnePlace, help="= ROOT")


def _demo_command(commands) -> None:
    demo = commands.add_parser("demo", help="offline end-to-end run on embedded synthetic data (CPU, minutes)",
                               description="Generate the synthetic KADID-style IQA set, adapt the demo's "
                                           "own tiny image-text prior (tiny_clip_prior) with LoRA + MLP head (PLCC "
                                           "loss) and report test SRCC/PLCC. The recipe in miniature, not a paper "
                                           "result.")
    demo.add_argument("--out", required=True, help="output directory (synthetic/ data and run/ directory)")
    demo.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the demo preset's; early "
                      "stopping with the paper's patience 12)")
    demo.add_argument("--seed", type=int, default=0, help="seed for data, split and training")
    demo.add_argument("--quiet", action="store_true", help="no per-epoch log")
    demo.set_defaults(run=cmd.cmd_demo)


def _prepare_command(commands) -> None:
    from ..data.cards import CARDS
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
    prepare.set_defaults(run=cmd.cmd_prepare)


def _evaluate_command(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate a finished run on another dataset (no retraining)",
                                   description="Cross-dataset generalisation (Table 2, Table A.1): the run's best "
                                   "weights on a dataset's test part (or the whole dataset with --split 0).")
    _add_run_dir(evaluate, "a finished run directory")
    add_data_flags(evaluate, many=False)
    evaluate.add_argument("--split", type=int, default=0, help="split to use; 0 = every image (default)")
    evaluate.add_argument("--part", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--head-name", default=None, help="which head of a multi-dataset run (default: the "
                          "dataset's own head, else the first)")
    evaluate.add_argument("--out", default=None, help="output folder (default RUN/eval/...)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--workers", type=int, default=None,
                          help="DataLoader worker processes (default: 0 on CPU, the CPU cores up to 16 on GPU)")
    evaluate.set_defaults(run=cmd.cmd_evaluate)


def _results_command(commands) -> None:
    results = commands.add_parser("results", help="tables from a tree of runs",
                                  description="Collect finished runs below ROOT; select the learning rate by "
                                  "validation score; aggregate over splits (median and mean).")
    _add_tree_root(results)
    results.add_argument("--level", default="aggregated", choices=["runs", "selected", "aggregated", "wide"])
    results.add_argument("--metrics", nargs="+", default=["srcc", "plcc_logistic"], help="for --level wide")
    results.add_argument("--statistic", default="median", choices=["median", "mean"], help="for --level wide")
    results.add_argument("--csv", default=None, help="also write the table to this CSV file")
    results.set_defaults(run=cmd.cmd_results)


def _status_command(commands) -> None:
    status = commands.add_parser("status", help="the runs of a tree by state: done, running, failed, ...",
                                 description="One line per run directory below ROOT (a sweep's or `percept "
                                 "reproduce`'s runs/): done, running, failed (with its error), interrupted (its "
                                 "process is gone; re-running resumes it) or pending (percept.engine.runs).")
    _add_tree_root(status)
    from ..engine.runs import STATES
    status.add_argument("--state", nargs="+", default=None, choices=STATES, help="only these states")
    status.add_argument("--wide", action="store_true", help="every column in full (default: fit 100 columns)")
    status.set_defaults(run=cmd.cmd_status)


def _predict_command(commands) -> None:
    predict = commands.add_parser("predict", help="score image files with a run or an official checkpoint",
                                  description="One row per image: a score (IQA, memorability) or a class with "
                                  "probabilities (emotion), and an error column: an unreadable file is reported "
                                  "and the rest are scored (exit status 1 when any failed).")
    predict.add_argument("images", nargs="+", help="image files, folders (recursive), glob patterns, or .txt/.csv "
                         "lists of files")
    predict.add_argument("--model", default=None, help="(default: official-iqa, said when used) a run directory, its "
                         "hub folder or merged file "
                         "(percept export), official-iqa, official-memorability, official-emotions, or an official .pth")
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
    predict.add_argument("--overwrite", action="store_true", help="start --out anew instead of resuming it (needed "
                         "when it holds another model's scores)")
    predict.add_argument("--fast-resize", action="store_true", help="resize in torch's 8-bit kernels instead of "
                         "PIL's (pixels within one grey level, preprocessing ~2x faster; scores close to "
                         "evaluation's, not equal): for small models on few CPU cores")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=cmd.cmd_predict)


def _list_command(commands) -> None:
    what = commands.add_parser("list", help="the official checkpoints, backbones or datasets, and whether their "
                               "files are here", description="What exists: official checkpoints (what each score "
                               "means, whether cached for offline use), backbones (where their weights come from, "
                               "whether here), datasets (paper name, task, label; with --data-root whether "
                               "prepared). Nothing is downloaded.")
    what.add_argument("what", nargs="?", default="models", choices=["models", "backbones", "datasets"])
    what.add_argument("--data-root", default=None, help="folder holding one prepared dataset per subfolder")
    what.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    what.add_argument("--wide", action="store_true", help="every column in full (default: fit 100 columns)")
    what.set_defaults(run=cmd.cmd_list)


def _download_command(commands) -> None:
    from ..study.catalog import DEFAULT_DOWNLOADS
    fetch = commands.add_parser("download", help="prefetch official checkpoints and backbone weights into the HF "
                                "cache (for offline clusters)", description="Fetch into the Hugging Face cache "
                                "(HF_HOME, or --cache-dir) what `percept predict`, create_metric and training load "
                                "from the hub, so that machines without internet sharing that cache run with "
                                "HF_HUB_OFFLINE=1. Cached files are not fetched again.")
    fetch.add_argument("names", nargs="*", default=list(DEFAULT_DOWNLOADS), help="official checkpoints (official-"
                       "iqa, ...) and backbones (clip_vit_l14, ...); default: " + " ".join(DEFAULT_DOWNLOADS))
    fetch.add_argument("--cache-dir", default=None, help="cache folder (default: huggingface_hub's, from HF_HOME)")
    fetch.set_defaults(run=cmd.cmd_download)


def _export_command(commands) -> None:
    export = commands.add_parser("export", help="write a finished run as a hub folder, the official .pth layout, "
                                 "or merged timm weights", description="hub: config.json + model.safetensors "
                                 "(LoRA + heads) + a model card, for PerceptCLIP.from_pretrained and the HF hub; "
                                 "official: the authors' release layout (transformers CLIPVisionModel + peft LoRA + "
                                 "mlp head, one head); merged: LoRA folded into plain timm weights, heads beside.")
    _add_run_dir(export, "a finished run directory")
    export.add_argument("--format", required=True, choices=["hub", "official", "merged"])
    export.add_argument("--out", required=True, help="a folder (hub) or a file (official: .pth, merged: .safetensors)")
    export.add_argument("--head-name", default=None, help="which head, for a multi-dataset run in the official format")
    export.add_argument("--backbone-weights", default=None, help="a local file of the backbone's weights (default: "
                        "what the run used)")
    export.set_defaults(run=cmd.cmd_export)


def _push_command(commands) -> None:
    push = commands.add_parser("push", help="upload a finished run to the Hugging Face hub (hub format + model card)",
                               description="Export RUN in the hub format with its model card and upload it to "
                               "REPO_ID (created if needed). The token comes from HF_TOKEN or `hf auth login`.")
    _add_run_dir(push, "a finished run directory")
    push.add_argument("repo_id", help="user/name on the Hugging Face hub")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--token", default=None, help="a Hugging Face token (default: HF_TOKEN / the saved login)")
    push.set_defaults(run=cmd.cmd_push)


def _app_command(commands) -> None:
    app = commands.add_parser("app", help="interactive demo in the browser (Gradio): scores and attention maps",
                              description="Upload images, get each model's scores (emotion: the class "
                              "probabilities) and, for one image, the CLS attention maps of the most important "
                              "heads, fine-tuned vs original. Without --model: the demo runs `percept notebooks` "
                              "trained (offline). Needs the app extra: pip install 'perceptclip[app]'.")
    app.add_argument("--model", action="append", default=None, help="a run directory, its hub folder or merged "
                     "file (percept export), official-iqa, official-memorability, official-emotions or an official "
                     ".pth; repeat for several (default: the demo runs in --runs-dir)")
    app.add_argument("--runs-dir", default=None, help="where to look for the demo runs (default: "
                     "WORKSPACE/notebooks/runs, where `percept notebooks` writes them; WORKSPACE: $PERCEPT_HOME, "
                     "else a checkout's outputs/, else ~/percept)")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    app.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    app.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    app.set_defaults(run=cmd.cmd_app)


def _delegated_command(commands) -> None:
    """Commands parsed by their own modules (see main): train, sweep and params by jsonargparse
    (:mod:`percept.interface.cli_options`), the others by theirs."""
    commands.add_parser("params", add_help=False, help="parameter counts of a model configuration")
    commands.add_parser("train", add_help=False, help="train one run (one dataset, or several: multi-dataset)")
    commands.add_parser("sweep", add_help=False, help="many runs: splits x learning rates x model variants")
    commands.add_parser("bench", add_help=False, help="throughput of the fast path vs the official-style "
                        "reference (percept bench --help)")   # parsed by percept.study.bench.main (see main below)
    commands.add_parser("notebooks", add_help=False, help="execute the numbered notebooks with papermill "
                        "(percept notebooks --help)")   # parsed by percept.interface.notebooks.main
    commands.add_parser("reproduce", add_help=False, help="the paper's experiments from reproduce.yaml "
                        "(percept reproduce --help)")   # parsed by percept.interface.cli_reproduce.main


COMMANDS = {"demo": _demo_command, "prepare": _prepare_command, "evaluate": _evaluate_command,
            "results": _results_command, "status": _status_command, "predict": _predict_command,
            "list": _list_command, "download": _download_command, "export": _export_command, "push": _push_command,
            "app": _app_command, "params, train, sweep, bench, notebooks, reproduce": _delegated_command}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but those parsed by their own modules (``params``, ``train``, ``sweep``:
    :mod:`percept.interface.cli_options`; ``bench``, ``notebooks``, ``reproduce``)."""
    from .. import __version__
    parser = argparse.ArgumentParser(prog="percept", description=__doc__)
    parser.add_argument("--version", action="version", version=f"percept {__version__} (perceptclip)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = commands   # the command parsers, by name
    for add in COMMANDS.values():
        add(commands)
    return parser


# the commands that take a run directory (RUN) or a folder of runs (ROOT) after their name, and its destination
# (train's: percept.interface.cli_options)
TAKES_RUN_OR_ROOT = {"evaluate": "run_dir", "export": "run_dir", "push": "run_dir", "status": "root",
                     "results": "root"}
RESUMABLE = {"train", "sweep", "reproduce", "predict", "notebooks"}   # commands whose re-run continues the work


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        return _dispatch(argv, command)
    except BrokenPipeError:                      # `percept list | head`: the reader has gone, and that is fine
        if not _stdout_closed():                 # a pipe of the command's own: an error, said
            print(f"percept {command}: error: a pipe closed (BrokenPipeError)", file=sys.stderr)
            return 2
        try:                                     # no second error when stdout is flushed at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        again = ("; re-run the same command to resume" if command in RESUMABLE and
                 (command != "predict" or "--out" in argv) else "")
        print(f"\npercept {command}: interrupted{again}", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, ImportError) as err:   # OSError: disk full, read-only, missing
        print(f"percept {command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str], command: str) -> int:
    if command == "bench":   # its options live with the benchmark (percept/study/bench/run.py)
        from ..study.bench import main as bench_main
        return bench_main(argv[1:])
    if command == "notebooks":
        from .notebooks import main as notebooks_main
        return notebooks_main(argv[1:])
    if command == "reproduce":
        from .cli_reproduce import main as reproduce_main
        return reproduce_main(argv[1:])
    if command in ("train", "sweep", "params"):   # jsonargparse: flags from the config dataclasses, --config files
        from .cli_options import parse_options
        return getattr(cmd, f"cmd_{command}")(parse_options(command, argv[1:])) or 0
    parser = build_parser()
    args = parser.parse_args(argv)
    name = TAKES_RUN_OR_ROOT.get(args.command)
    if name is not None and getattr(args, name) is None:
        what = ("run directory", "RUN") if name == "run_dir" else ("folder of runs", "ROOT")
        raise ValueError(f"no {what[0]} given: percept {args.command} {what[1]} ...")
    return args.run(args) or 0


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone: flushing it fails, or poll reports an error on its
    write end (what is left after a failed write, once the buffer was dropped)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):     # no poll (Windows), or no real file behind stdout
        return False


def _one_line(err: BaseException) -> str:
    """An error as one line (a DataLoader worker's error carries its traceback: its last line says it all)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in str(err):
        return lines[-1]
    return " ".join(lines) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
