"""Reference data shipped inside the package, found with :mod:`importlib.resources`, so that a
``pip install``-ed percept has it as well as a git checkout:

* ``data_manifests/cards/NAME.md`` — the dataset cards (rendered from :mod:`percept.data.cards`);
* ``data_manifests/splits/NAME.csv`` + ``.json`` sidecars — the pinned split files (:mod:`percept.data.pinned`);
* ``paper/paper_results.csv`` — every cell of the paper's tables (:mod:`percept.study.paper`);
* ``reproduce.yaml`` — the paper's experiments as a plan (:mod:`percept.study.reproduce`);
* ``notebooks/NN_name.ipynb`` — the numbered notebooks (``percept notebooks``).

The repository's top-level ``data_manifests/``, ``paper/`` and ``reproduce.yaml`` are links to these; the other way
round, ``percept/core/resources/notebooks`` is a link to the checkout's ``notebooks/``, their source (a wheel holds copies). The demo prior's
weights ship with :mod:`percept.engine.prior` (``percept/engine/prior/weights``), found the same way.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[3]   # the folder holding percept/ (this file: percept/core/resources/)


def checkout_root() -> Path | None:
    """The git checkout this percept runs from (an editable install or ``PYTHONPATH``), or None when percept is
    an installed package (its folder is then, e.g., ``site-packages``)."""
    root = PACKAGE_ROOT
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def workspace() -> Path:
    """Where commands put what they make when no ``--out`` is given (the notebooks' runs, data and executed copies,
    ``percept reproduce``'s runs) and where ``percept app`` looks for demo runs: ``$PERCEPT_HOME`` if set, else the
    checkout's ``outputs/``, else ``~/percept`` for an installed package. Never the working directory."""
    if os.environ.get("PERCEPT_HOME"):
        return Path(os.environ["PERCEPT_HOME"]).expanduser().resolve()
    root = checkout_root()
    return root / "outputs" if root is not None else Path.home() / "percept"


def package_path(package: str, *parts: str) -> Path:
    """A file or folder shipped in ``package`` (e.g. ``"percept.core.resources"``) as a filesystem path."""
    target = files(package).joinpath(*parts)
    if not isinstance(target, Path):   # a zip import: percept reads and writes these files in place
        raise RuntimeError(f"percept needs its package data on the file system, not inside {target!r}; "
                           f"install percept as a regular (unzipped) package")
    return target


def resource_path(*parts: str) -> Path:
    """A file or folder of ``percept/core/resources``: ``resource_path("paper", "paper_results.csv")``."""
    return package_path(__name__, *parts)
