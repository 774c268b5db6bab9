"""Files that are never half-written: every write goes to a temporary file next to the target and is
moved over it with ``os.replace`` (atomic on POSIX and Windows), so a crash leaves the previous version.

Torch-free on purpose: the data, results and table modules write through these helpers without loading torch.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0o022)   # read once (os.umask both sets and returns it) and put back at once
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    A crash mid-write leaves the previous file intact (never a half-written one). The file gets the
    permissions of one written with ``open`` (0666 less the umask), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the file was edited or damaged") from err


def write_csv(path: str | os.PathLike, frame: "pandas.DataFrame") -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


class LockedError(RuntimeError):
    """Another process holds the lock of a file or folder percept writes (:func:`exclusive_lock`)."""


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock (``filelock``, an OS lock released when the process dies, however it dies) on
    ``path`` (a ``.lock`` file) while percept writes ``what``; a second writer fails at once with
    :class:`LockedError` naming the holder (its pid, host and start, which the holder writes beside the lock)."""
    from filelock import FileLock, Timeout
    path = Path(path)
    holder = path.with_name(path.name + ".holder")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = json.loads(holder.read_text(encoding="utf-8"))
            by = f"process {who['pid']} on {who['host']}, since {who['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            by = "another process"
        raise LockedError(f"{what} is being written by {by}; wait for it to finish, or stop it") from None
    try:
        atomic_write_text(holder, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                              "since": datetime.datetime.now().isoformat(timespec="seconds")}))
        yield
    finally:
        try:
            holder.unlink()
        except OSError:
            pass
        lock.release()
