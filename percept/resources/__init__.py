"""Reference data shipped inside the package, found with :mod:`importlib.resources` (issue 14), so that a
``pip install``-ed percept has it as well as a git checkout:

* ``data_manifests/cards/NAME.md`` — the dataset cards (rendered from :mod:`percept.data.cards`);
* ``data_manifests/splits/NAME.csv`` + ``.json`` sidecars — the pinned split files (:mod:`percept.data.pinned`);
* ``paper/paper_results.csv`` — every cell of the paper's tables (:mod:`percept.paper`);
* ``reproduce.yaml`` — the paper's experiments as a plan (:mod:`percept.reproduce`).

The repository's top-level ``data_manifests/``, ``paper/`` and ``reproduce.yaml`` are links to these. The demo prior's
weights ship with :mod:`percept.prior` (``percept/prior/weights``), found the same way.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(package: str, *parts: str) -> Path:
    """A file or folder shipped in ``package`` (e.g. ``"percept.resources"``) as a filesystem path."""
    target = files(package).joinpath(*parts)
    if not isinstance(target, Path):   # a zip import: percept reads and writes these files in place
        raise RuntimeError(f"percept needs its package data on the file system, not inside {target!r}; "
                           f"install percept as a regular (unzipped) package")
    return target


def resource_path(*parts: str) -> Path:
    """A file or folder of ``percept/resources``: ``resource_path("paper", "paper_results.csv")``."""
    return package_path(__name__, *parts)
