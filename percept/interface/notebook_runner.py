"""Executing the numbered notebooks (``notebooks/NN_name.ipynb``, shipped in the package) with papermill:
``make demo`` = ``percept notebooks --out DIR``; ``percept notebooks --copy --out DIR`` copies them, unexecuted,
for JupyterLab.

:func:`run_notebooks` runs them with the ``python3`` kernel of this environment, writes the executed copies to
``out_dir/<name>.ipynb``, prints one line per notebook (its time and the headline the notebook wrote with
:func:`percept.interface.notebooks.headline`) and, on failure, names the notebook and the failing cell.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

from ..core.resources import checkout_root, resource_path, workspace

CHECKOUT = checkout_root()                 # None for an installed package
NOTEBOOKS_DIR = resource_path("notebooks")  # in a checkout a link to its notebooks/, in a wheel a copy
HEADLINE_FILE = "headline.txt"   # what a notebook writes for the runner's line (percept.interface.notebooks.headline)


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


def notebook_paths(names: Iterable[str] | None = None, directory: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order; ``names``: some of them, by ``NN``,
    ``NN_name`` or ``name``."""
    directory = Path(directory) if directory else NOTEBOOKS_DIR
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if names is None:
        return found
    picked = []
    for name in names:
        stem = Path(str(name)).stem
        matches = [p for p in found if stem in (p.stem, p.stem[:2], p.stem[3:])]
        if not matches:
            raise ValueError(f"no notebook {name!r} in {directory}; notebooks: {', '.join(p.stem for p in found)}")
        picked += [m for m in matches if m not in picked]
    return picked


def parameters_cell(notebook) -> int | None:
    """Index of the cell tagged ``parameters`` (None if absent)."""
    for i, cell in enumerate(notebook.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    return None


@contextlib.contextmanager
def _importable_percept():
    """Make ``import percept`` in the kernel (a subprocess) import this percept, even from a checkout that is not
    installed: the folder holding this package goes first on PYTHONPATH for the duration."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _failure(path: Path, err: Exception) -> NotebookError:
    cell = getattr(err, "cell_index", None)
    source = (getattr(err, "source", "") or "").strip().splitlines()
    where = f"cell {cell}" if cell is not None else "a cell"
    if getattr(err, "exec_count", None) is not None:
        where += f" (execution count {err.exec_count})"
    first = f" starting `{source[0][:100]}`" if source else ""
    what = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    return NotebookError(f"notebook {path.name} failed in {where}{first}: {what}")


def default_out() -> Path:
    """Where the notebooks' executed copies, runs and data go without ``--out``: ``workspace()/notebooks``."""
    return workspace() / "notebooks"


def run_notebooks(names: Iterable[str] | None = None, out_dir: str | os.PathLike | None = None,
                  parameters: Mapping | None = None, kernel: str | None = "python3",
                  notebooks_dir: str | os.PathLike | None = None, per_notebook: Mapping[str, Mapping] | None = None,
                  timeout: int | None = 1200, stop_on_error: bool = True, log=print) -> list[dict]:
    """Execute notebooks with papermill; executed copies go to ``out_dir/<name>.ipynb``.

    One line per notebook: its time and its headline (what it wrote with :func:`headline`). Every notebook
    gets ``parameters`` plus ``out_dir=out_dir/<name>``; its runs and data are ``out_dir/runs`` and ``out_dir/data``
    (so that one call shares them between notebooks), its figures ``out_dir/figures`` outside a checkout (a
    checkout's go to its ``figures/``); ``per_notebook[name]`` adds parameters for one notebook. The kernel runs with the notebook's folder as
    its working directory. Returns ``[{"notebook", "seconds", "status", "output", "error"}]``; raises
    :class:`NotebookError` naming the notebook and the failing cell (``stop_on_error``)."""
    import papermill as pm

    out_dir = Path(out_dir or default_out()).resolve()
    paths = notebook_paths(names, notebooks_dir)      # an unknown name fails before anything is made
    out_dir.mkdir(parents=True, exist_ok=True)
    if not paths:
        raise ValueError(f"no notebooks in {notebooks_dir or NOTEBOOKS_DIR}")
    shared = dict(parameters or {})   # runs, data and figures are found beside out_dir (notebooks.resolve_paths)
    results = []
    with _importable_percept():
        for path in paths:
            params = {"out_dir": str(out_dir / path.stem), **shared, **((per_notebook or {}).get(path.stem, {}))}
            Path(params["out_dir"]).mkdir(parents=True, exist_ok=True)
            output = out_dir / path.name
            headline_file = Path(params["out_dir"]) / HEADLINE_FILE
            headline_file.unlink(missing_ok=True)   # a stale headline never speaks for this execution
            started = time.time()
            record = {"notebook": path.stem, "output": str(output), "error": None, "headline": ""}
            try:
                # the kernel's own log at ERROR: ipykernel warns about unencrypted TCP on every start (a local
                # kernel on the loopback interface, as JupyterLab's), which buried the runner's lines
                pm.execute_notebook(str(path), str(output), parameters=params, kernel_name=kernel,
                                    cwd=str(path.parent if CHECKOUT is not None else Path(params["out_dir"])),
                                    progress_bar=False, log_output=False,
                                    execution_timeout=timeout, extra_arguments=["--IPKernelApp.log_level=ERROR"])
                record["status"] = "ok"
                if headline_file.is_file():
                    record["headline"] = headline_file.read_text().strip()
            except Exception as err:   # papermill wraps kernel errors; report the notebook and cell
                failure = _failure(path, err)
                record.update(status="failed", error=str(failure))
                record["seconds"] = round(time.time() - started, 1)
                results.append(record)
                log(f"{path.stem:24s} FAILED after {record['seconds']:6.1f} s  -> {output}")
                log(f"  {failure}")
                if stop_on_error:
                    raise failure from err
                continue
            record["seconds"] = round(time.time() - started, 1)
            results.append(record)
            log(f"{path.stem:24s} {record['seconds']:6.1f} s  {record['headline'] or '-> ' + str(output)}")
    total = sum(r["seconds"] for r in results)
    log(f"{len(results)} notebooks, {sum(r['status'] == 'ok' for r in results)} ok, {total:.0f} s in all")
    return results


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def copy_notebooks(names: Iterable[str] | None, out_dir: str | os.PathLike, log=print) -> list[Path]:
    """Copy the numbered notebooks (unexecuted, as shipped) into ``out_dir``, to open in JupyterLab; an existing
    copy is never overwritten (it may hold the user's edits)."""
    out_dir = Path(out_dir).resolve()
    paths = notebook_paths(names)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in paths:
        target = out_dir / path.name
        if target.exists():
            log(f"{path.stem:24s} kept (already in {out_dir}: it may hold your edits; delete it to copy it again)")
            continue
        shutil.copyfile(path, target)
        copied.append(target)
        log(f"{path.stem:24s} -> {target}")
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="percept notebooks",
                                     description="Execute the numbered notebooks (shipped with percept) with "
                                                 "papermill on their embedded defaults (offline, CPU); executed "
                                                 "copies, runs and data go to --out. --copy: copy them, "
                                                 "unexecuted, to --out instead (to open in JupyterLab).")
    parser.add_argument("names", nargs="*", help="notebooks to run (NN, NN_name or name; default: all)")
    parser.add_argument("--out", default=None, help=f"output folder (default: {default_out()}; the workspace is "
                        f"$PERCEPT_HOME, else a checkout's outputs/, else ~/percept)")
    parser.add_argument("--copy", action="store_true", help="copy the notebooks, unexecuted, to --out (required "
                        "then) instead of running them")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="parameter for every notebook (VALUE parsed as JSON when it can be; repeatable)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: %(default)s)")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    args = parser.parse_args(argv)
    parameters = {}
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter {item!r}: expected KEY=VALUE")
        parameters[key] = _value(value)
    try:
        if args.copy:       # never into the executed copies' folder (a copy there would be overwritten by a run)
            if not args.out:
                parser.error("--copy needs --out DIR (a folder of your own, to open in JupyterLab)")
            copy_notebooks(args.names or None, args.out)
            return 0
        results = run_notebooks(args.names or None, args.out, parameters, args.kernel,
                                stop_on_error=not args.keep_going)
    except (NotebookError, ValueError, OSError) as err:
        print(f"percept notebooks: error: {err}", file=sys.stderr)
        return 1
    return 0 if all(r["status"] == "ok" for r in results) else 1
