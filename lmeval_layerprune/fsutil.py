"""Atomic directory writes: build in a temporary sibling folder, then rename into place.

A process killed mid-write leaves only a ``.tmp-<pid>-*`` folder, which never looks
complete and is removed by the next writer once that pid is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def remove_abandoned_tmp_dirs(folder: Path) -> None:
    """Delete half-written folders whose writing process no longer exists."""
    for tmp in folder.glob(".tmp-*-*"):
        try:
            pid = int(tmp.name.split("-")[1])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success rename it to ``target``.

    If ``target`` appeared meanwhile (another process won the race), the new copy is
    discarded and the existing one kept. On error the temporary folder is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_tmp_dirs(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released when the process dies, too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dir_size(path: Path) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
