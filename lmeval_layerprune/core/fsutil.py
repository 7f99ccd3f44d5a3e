"""Atomic directory writes: build in a temporary sibling folder, then rename into place.

A process killed mid-write leaves only a ``.tmp-<pid>-*`` folder, which never looks
complete and is removed by the next writer once that pid is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _tmp_prefix() -> str:
    return f".tmp-{os.getpid()}@{socket.gethostname().replace('-', '_')}-"


def _tmp_owner(name: str) -> tuple[int, str] | None:
    try:
        owner = name[len(".tmp-") :].split("-", 1)[0]
        pid, _, host = owner.partition("@")
        return int(pid), host
    except ValueError:
        return None


def tmp_dir_is_live(path: Path) -> bool:
    """True unless ``path`` is a temporary folder of a process on this host that no longer exists.

    Folders written from another host (a shared cache) are always treated as live.
    """
    owner = _tmp_owner(path.name)
    if owner is None:
        return True
    pid, host = owner
    if host != socket.gethostname().replace("-", "_"):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_tmp_dirs(folder: Path) -> None:
    """Delete half-written folders whose writing process (on this host) no longer exists."""
    for tmp in folder.glob(".tmp-*"):
        if tmp.is_dir() and not tmp_dir_is_live(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success rename it to ``target``.

    If ``target`` appeared meanwhile (another process won the race), the new copy is
    discarded and the existing one kept. On error the temporary folder is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_tmp_dirs(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(), dir=target.parent))
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
