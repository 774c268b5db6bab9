"""Pre-resized uint8 image cache, so that JPEG decoding + resizing does not bottleneck the GPU.

Every image is decoded once (:func:`percept.core.images.load_rgb`), passed through the task's deterministic
:class:`~percept.data.preprocessing.ResizeSpec` (the first stage of every App. A.1 transform: shorter
side 224 for memorability/emotion test, LoDa's per-dataset resize for IQA, or full size) and stored as
uint8 HWC pixels.  The transforms' random/crop stages then run on the cached pixels; since the resize stage
is idempotent, ``transform(cache.get(p)) == transform(load_rgb(root / p))`` exactly.

Layout (memmap-friendly, one pair per dataset root + resize spec in ``cache_dir``; the spec — sizes *and*
interpolations, :meth:`ResizeSpec.to_json` — is hashed into the file name and checked on opening, so a cache
made with another interpolation, e.g. a bicubic KonIQ-10k cache from before LoDa's bilinear pre-resize was
followed, is never reused: it is rebuilt)::

    images-<hash>.json              index: format, root, resize spec, data file, entries
    images-<hash>.<build_id>.bin    all images' pixels packed back to back (np.memmap, read-only)

``entries`` maps each relative POSIX path to ``[offset, height, width, file_size, file_mtime_ns]``; size and
mtime are the source file's fingerprint.  The data file is written first under a fresh name, then the index
is replaced atomically, so a crash never leaves an index pointing at the wrong data.  :meth:`ImageCache.build`
reuses valid entries (no decoding), re-decodes stale or new ones; :meth:`ImageCache.open` refuses a cache
whose source files changed (:class:`StaleCacheError`).  One writer at a time per cache file.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
from PIL import Image

from ..core.files import atomic_path, atomic_write_text
from ..core.images import load_rgb
from .preprocessing import ResizeSpec

FORMAT = "percept-image-cache-v1"


class StaleCacheError(ValueError):
    """The cache was built from files that have since changed, or for other parameters."""


def _as_spec(resize_spec) -> ResizeSpec:
    return resize_spec if isinstance(resize_spec, ResizeSpec) else ResizeSpec(resize_spec)


def _key(path) -> str:
    key = PurePosixPath(str(path).replace(os.sep, "/")).as_posix()
    if key.startswith("/") or ".." in PurePosixPath(key).parts:
        raise ValueError(f"cache keys are paths relative to the dataset root; got {str(path)!r}")
    return key


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def cache_index_path(root, resize_spec, cache_dir) -> Path:
    """Where the index for (dataset root, resize spec) lives in ``cache_dir``."""
    ident = json.dumps({"root": str(Path(root).resolve()), "resize": _as_spec(resize_spec).to_json()},
                       sort_keys=True)
    return Path(cache_dir) / f"images-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.json"


class ImageCache:
    """Read access to a built cache; create with :meth:`build` or :meth:`open`."""

    def __init__(self, index_path: Path, index: dict):
        self.index_path = Path(index_path)
        self.root = Path(index["root"])
        self.spec = ResizeSpec.from_json(index["resize"])
        self.data_path = self.index_path.parent / index["data_file"]
        self._entries: dict[str, list[int]] = index["entries"]
        self._data: np.memmap | None = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, root, image_paths: Iterable, resize_spec, cache_dir, *, on_stale: str = "rebuild",
              num_workers: int | None = None) -> "ImageCache":
        """Make sure ``cache_dir`` holds every ``image_paths`` (relative to ``root``) resized by ``resize_spec``.

        ``resize_spec`` is a :class:`ResizeSpec` (use ``transform.pre_resize`` or
        :func:`~percept.data.preprocessing.deterministic_resize`) or a bare size (None/int/(h, w)).
        Valid existing entries are reused; entries whose source file changed are re-decoded
        (``on_stale="rebuild"``) or refused with :class:`StaleCacheError` (``on_stale="error"``).
        Entries of files not requested this time are kept while their files are unchanged.
        Images are decoded by ``num_workers`` threads (PIL releases the GIL while decoding/resizing).
        """
        if on_stale not in ("rebuild", "error"):
            raise ValueError(f"on_stale must be 'rebuild' or 'error', got {on_stale!r}")
        root, spec = Path(root), _as_spec(resize_spec)
        index_path = cache_index_path(root, spec, cache_dir)
        keys = list(dict.fromkeys(_key(p) for p in image_paths))
        old = None
        if index_path.exists():
            try:
                old = cls._load(index_path)
            except StaleCacheError:                                     # unreadable/truncated: rebuild all
                old = None
        if old is not None and old.spec != spec:   # hash collision or hand-edited file: never mix
            raise StaleCacheError(f"cache {index_path} was built for {old.spec}, not {spec}")

        fingerprints = {k: _fingerprint(root / k) for k in keys}
        missing = [k for k, fp in fingerprints.items() if fp is None]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) to cache do not exist under {root}, e.g. "
                                    f"{root / missing[0]}")
        reuse: dict[str, list[int]] = {}
        if old is not None:
            for k, entry in old._entries.items():
                fp = fingerprints[k] if k in fingerprints else _fingerprint(root / k)
                if fp is not None and tuple(entry[3:5]) == fp:
                    reuse[k] = entry
            stale = [k for k in old._entries if k in fingerprints and k not in reuse]
            if stale and on_stale == "error":
                raise StaleCacheError(_stale_message(index_path, root, stale))
        todo = [k for k in keys if k not in reuse]
        if old is not None and not todo and set(reuse) == set(old._entries):
            return old                                                  # up to date: nothing to write

        build_id = uuid.uuid4().hex[:12]
        data_file = f"{index_path.stem}.{build_id}.bin"
        entries: dict[str, list[int]] = {}
        offset = 0
        with atomic_path(index_path.parent / data_file) as tmp, open(tmp, "wb") as out:
            def write(k: str, pixels: np.ndarray, fp: tuple[int, int]) -> None:
                nonlocal offset
                out.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
                entries[k] = [offset, int(pixels.shape[0]), int(pixels.shape[1]), *fp]
                offset += pixels.size

            for k, entry in reuse.items():
                write(k, old.get_array(k), tuple(entry[3:5]))
            workers = num_workers or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(max(1, workers)) as pool:
                for start in range(0, len(todo), 256):                    # bounded memory
                    chunk = todo[start:start + 256]
                    for k, pixels in zip(chunk, pool.map(lambda k: _decode(root / k, spec), chunk)):
                        write(k, pixels, fingerprints[k])
        index = {"format": FORMAT, "root": str(root.resolve()), "resize": spec.to_json(), "data_file": data_file,
                 "data_bytes": offset, "entries": entries}
        atomic_write_text(index_path, json.dumps(index))
        for stray in index_path.parent.glob(f"{index_path.stem}.*.bin"):   # superseded data files
            if stray.name != data_file:
                stray.unlink(missing_ok=True)
        return cls(index_path, index)

    @classmethod
    def open(cls, root, resize_spec, cache_dir, *, verify: bool = True) -> "ImageCache":
        """Open the cache built for (``root``, ``resize_spec``); with ``verify``, refuse one with changed files."""
        index_path = cache_index_path(root, resize_spec, cache_dir)
        if not index_path.exists():
            raise FileNotFoundError(f"no image cache for root {root} and {_as_spec(resize_spec)} in {cache_dir} "
                                    f"(expected {index_path}); create it with ImageCache.build")
        cache = cls._load(index_path)
        if cache.spec != _as_spec(resize_spec):
            raise StaleCacheError(f"cache {index_path} was built for {cache.spec}, not {_as_spec(resize_spec)}")
        if verify:
            stale = cache.stale()
            if stale:
                raise StaleCacheError(_stale_message(index_path, cache.root, stale))
        return cache

    @classmethod
    def _load(cls, index_path: Path) -> "ImageCache":
        try:
            index = json.loads(Path(index_path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise StaleCacheError(f"cannot read image cache index {index_path}: {err}; delete it to rebuild") from err
        if index.get("format") != FORMAT:
            raise StaleCacheError(f"{index_path} is not a {FORMAT} index (format {index.get('format')!r})")
        cache = cls(index_path, index)
        if not cache.data_path.exists() or cache.data_path.stat().st_size != index["data_bytes"]:
            raise StaleCacheError(f"cache data {cache.data_path} is missing or truncated; delete {index_path} "
                                  f"to rebuild")
        return cache

    # ---- access -------------------------------------------------------------------------------
    def stale(self) -> list[str]:
        """Relative paths whose source file is missing or changed (size or mtime) since caching."""
        return [k for k, e in self._entries.items() if _fingerprint(self.root / k) != tuple(e[3:5])]

    def get_array(self, relative_path) -> np.ndarray:
        """The cached pixels, a read-only ``(H, W, 3)`` uint8 view into the memmap."""
        key = _key(relative_path)
        try:
            offset, h, w = self._entries[key][:3]
        except KeyError:
            raise KeyError(f"{key!r} is not in image cache {self.index_path}; rebuild it with this image") from None
        if self._data is None:                       # opened lazily: once per DataLoader worker process
            self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        return self._data[offset:offset + h * w * 3].reshape(h, w, 3)

    def get(self, relative_path) -> Image.Image:
        """The cached image as an RGB PIL image (a copy)."""
        return Image.fromarray(np.array(self.get_array(relative_path)), "RGB")

    def __contains__(self, relative_path) -> bool:
        return _key(relative_path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def paths(self) -> list[str]:
        return list(self._entries)

    def __getstate__(self):                           # picklable for DataLoader workers (spawn)
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def __repr__(self) -> str:
        return f"ImageCache({self.index_path}, {len(self)} images, {self.spec})"


def _decode(path: Path, spec: ResizeSpec) -> np.ndarray:
    return np.asarray(spec(load_rgb(path)), dtype=np.uint8)


def _stale_message(index_path: Path, root: Path, stale: list[str]) -> str:
    shown = ", ".join(str(root / k) for k in stale[:5]) + (f", ... ({len(stale)} in all)" if len(stale) > 5 else "")
    return (f"image cache {index_path} is stale: these source files changed or disappeared since it was built: "
            f"{shown}. Rebuild it with ImageCache.build(...)")
