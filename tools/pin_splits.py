"""Write the committed split files ``data_manifests/splits/{livec,koniq10k,emotionroi}.csv`` (+ sidecars).

Usage (``PATH`` holds the official releases in the layout below, e.g. the project's ``../shared/data``)::

    python tools/pin_splits.py --data-root PATH [--out DIR] [--datasets livec koniq10k emotionroi]

For each dataset the official label files are prepared into a temporary manifest (labels only: the
images need not be present; LIVEC gives the 1,162 rows of the .mat files without the 7 training
images, KonIQ-10k the 10,073 rows of its CSV, EmotionROI the 1,980 rows of ``ground_truth.txt``), the
protocol is computed over it (:func:`percept.data.pinned.compute_splits`) and the table is written with
:func:`percept.data.pinned.write_splits`. The output is deterministic: re-running it on the same files
gives byte-identical CSVs and sidecars (a test checks this).

LaMem's splits are not written: they are the official split files, which ``percept prepare lamem``
reads into the manifest.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from percept.data.pinned import (
    PINNED_DATASETS,
    PINNED_SPLITS_DIR,
    compute_splits,
    pinned_split_path,
    write_splits,
)
from percept.data.prepare import prepare
from percept.data.splits import DATASET_PROTOCOLS

# where each release sits under --data-root (the layout of the project's ../shared/data)
SOURCES = {"livec": "livec", "koniq10k": "koniq10k", "emotionroi": "emotion6"}


def pin(dataset: str, root: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Prepare ``dataset`` from its official release at ``root`` (labels only) and write its split file
    into ``out_dir`` (default ``data_manifests/splits``); returns the CSV path."""
    if dataset not in PINNED_DATASETS:
        raise ValueError(f"{dataset!r} has no committed split file; pinned datasets: {', '.join(PINNED_DATASETS)}")
    with tempfile.TemporaryDirectory(prefix=f"percept-pin-{dataset}-") as tmp:
        manifest, _ = prepare(dataset, root, out=Path(tmp) / f"{dataset}.csv", check_images=False)
    table = compute_splits(dataset, manifest)
    return write_splits(table, pinned_split_path(dataset, out_dir), dataset, DATASET_PROTOCOLS[dataset])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/pin_splits.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, type=Path,
                        help="folder holding " + ", ".join(f"{v}/ ({k})" for k, v in SOURCES.items()))
    parser.add_argument("--out", type=Path, default=PINNED_SPLITS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", default=list(PINNED_DATASETS), choices=PINNED_DATASETS)
    args = parser.parse_args(argv)
    for name in args.datasets:
        path = pin(name, args.data_root / SOURCES[name], args.out)
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
