"""What every run of a tree is doing: ``percept status ROOT`` (and a sweep's progress line with its ETA).

A run's state is read from its directory (:class:`~percept.runs.RunDir`): **done** (``metrics.json`` complete),
**running** (``state.json`` written by a live training process: same host and its pid alive, or another host's
that updated it within :data:`STALE_AFTER` seconds), **failed** (``state.json`` holds the error that stopped it),
**interrupted** (it was running, but its process is gone: killed, preempted, out of time; re-running resumes it)
**queued** (submitted to SLURM by ``--launcher slurm``, not started yet: a sweep does not submit it again) or
**pending** (configured by a sweep, never started). Torch-free.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .files import read_json, write_json
from .runs import RunDir

STALE_AFTER = 30 * 60          # seconds without an update before another host's "running" run counts as gone
STATES = ("done", "running", "queued", "failed", "interrupted", "pending")


def write_state(run: RunDir, state: str, **extra) -> None:
    """``state.json``: ``running`` (with ``epoch``) or ``failed`` (with ``error``), this process and host."""
    write_json(run.state_file, {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                                "updated": time.time(), **extra})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # someone else's live process
        return True
    return True


def run_status(run: RunDir, now: float | None = None) -> dict:
    """``{"run", "state", "epoch", "detail"}`` of one run directory (see the module's docstring)."""
    now = time.time() if now is None else now
    out = {"run": str(run.path), "state": "pending", "epoch": 0, "detail": ""}
    if run.is_complete():
        metrics = run.read_metrics()
        return {**out, "state": "done", "epoch": metrics.get("epochs_run", 0),
                "detail": f"val {metrics.get('select_metric')} {metrics.get('val_score', float('nan')):.4g}"}
    if not run.state_file.is_file():
        return out
    try:
        state = read_json(run.state_file)
    except ValueError:
        return {**out, "state": "failed", "detail": f"{run.state_file} is unreadable"}
    out["epoch"] = state.get("epoch", 0)
    age = now - float(state.get("updated", 0))
    if state.get("state") == "failed":
        return {**out, "state": "failed", "detail": state.get("error", "")}
    if state.get("state") == "queued":
        return {**out, "state": "queued", "detail": f"SLURM job {state.get('job')} submitted {age / 60:.0f} min ago; "
                                                    f"if squeue no longer lists it, delete {run.state_file.name} "
                                                    f"to submit it again"}
    here = state.get("host") == socket.gethostname()
    if (here and _alive(int(state.get("pid", -1)))) or (not here and age < STALE_AFTER):
        return {**out, "state": "running", "detail": f"pid {state.get('pid')} on {state.get('host')}, "
                                                        f"updated {age:.0f} s ago"}
    return {**out, "state": "interrupted", "detail": f"no process since {age / 60:.0f} min (pid {state.get('pid')} "
                                                     f"on {state.get('host')}); run it again to resume"}


def tree_status(root: str | os.PathLike):
    """One row per run directory below ``root`` (any folder with a ``config.json``), sorted by state then path."""
    import pandas as pd
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of runs")
    runs = [RunDir(p.parent) for p in sorted(root.rglob("config.json")) if "eval" not in p.relative_to(root).parts]
    rows = [run_status(r) for r in runs]
    for row in rows:
        row["run"] = str(Path(row["run"]).relative_to(root))
    frame = pd.DataFrame(rows, columns=["state", "run", "epoch", "detail"])
    order = {s: i for i, s in enumerate(STATES)}
    return frame.sort_values(["state", "run"], key=lambda c: c.map(order) if c.name == "state" else c,
                             kind="mergesort").reset_index(drop=True)


def eta_text(seconds_done: list[float], remaining: int, parallel: int = 1) -> str:
    """``ETA 12 min`` from the durations of the finished runs and how many remain (``parallel`` at a time)."""
    if not seconds_done or remaining <= 0:
        return "ETA -" if remaining > 0 else "all done"
    left = sum(seconds_done) / len(seconds_done) * remaining / max(1, parallel)
    return f"ETA {left / 3600:.1f} h" if left >= 3600 else f"ETA {left / 60:.0f} min" if left >= 60 \
        else f"ETA {left:.0f} s"
