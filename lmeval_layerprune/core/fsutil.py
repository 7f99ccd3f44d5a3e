"""Low-level file operations every writer shares: temporary names, atomic folders, locks, and the
translation of a full disk or a file-size limit into one message.

* Temporary outputs are named ``.tmp-<pid>@<host>-...`` beside their target. A process killed
  mid-write leaves only such a name, which never looks complete and is removed by the next writer
  once that pid is gone (:func:`remove_abandoned_tmp_dirs`).
* :func:`open_new` opens a file for writing only if it does not exist yet (``O_EXCL``) and never
  through a symbolic link (``O_NOFOLLOW``); :func:`open_append` is the one exception to "never open
  an existing path for writing", for the append-only journals, and refuses a link or a file with
  other hard links.
* :func:`space_errno` / :func:`space_error` / :func:`translate_space_errors`: ``ENOSPC``,
  ``EDQUOT`` and ``EFBIG`` (the file-size limit; Python ignores ``SIGXFSZ``, so the write fails with
  ``EFBIG`` instead of killing the process), whether raised as ``OSError`` or wrapped by a library
  (safetensors' ``SafetensorError``, torch's "file write failed"), become one
  :class:`~lmeval_layerprune.errors.DiskFullError` naming the path and the space needed when known.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import math
import os
import resource
import shutil
import socket
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from lmeval_layerprune.errors import DiskFullError, OutputError


def _tmp_prefix() -> str:
    return f".tmp-{os.getpid()}@{socket.gethostname().replace('-', '_')}-"


def tmp_name(target: Path) -> Path:
    """A fresh temporary sibling of ``target`` (same folder, so a ``rename`` publishes it in one step)."""
    return target.with_name(f"{_tmp_prefix()}{uuid.uuid4().hex[:8]}-{target.name}")


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
    return process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_tmp_dirs(folder: Path) -> None:
    """Delete half-written folders whose writing process (on this host) no longer exists (links are left)."""
    for tmp in folder.glob(".tmp-*"):
        if tmp.is_dir() and not tmp.is_symlink() and not tmp_dir_is_live(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success rename it to ``target``.

    If ``target`` appeared meanwhile (another process won the race), the new copy is
    discarded and the existing one kept. On error the temporary folder is removed; a full disk or
    a file-size limit is raised as :class:`DiskFullError` naming ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_tmp_dirs(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(), dir=target.parent))
    try:
        with translate_space_errors(target):
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
    """An exclusive advisory lock (released when the process dies, too). The lock file is never a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"lock file {path} is a symbolic link; refusing to open it (remove the link)") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` itself (no lock file appears in it); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def dir_size(path: Path) -> int:
    """Total size in bytes of the files under ``path`` (symbolic links are neither followed nor counted)."""
    total = 0
    for folder, _, files in os.walk(path, followlinks=False):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def sha256_file(path: Path) -> str:
    """The sha256 of a file's content (read in blocks; a link is not followed)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- opening files


def open_new(path: Path) -> int:
    """A write descriptor of a file created now: never an existing path, never through a link."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def open_append(path: Path, *, what: str = "journal") -> int:
    """An append descriptor of ``path`` (created if missing), refusing a symbolic link or a hard-linked file.

    Appending is the one in-place write this tool does (its append-only journals, proven its own first).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{what} {path} is a symbolic link; refusing to write through it") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        why = "has other hard links (appending would change them too)" if st.st_nlink > 1 else "is not a plain file"
        raise OutputError(f"{what} {path} {why}; refusing to write into it: copy it or name another file")
    return fd


def check_writable_in_place(path: Path, *, what: str = "journal") -> None:
    """Refuse to modify ``path`` in place when it is a symbolic link or has other hard links."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise OutputError(f"{what} {path} is a symbolic link; refusing to write through it")
        if st.st_nlink > 1:
            raise OutputError(
                f"{what} {path} has other hard links (writing would change them too); refusing to write into it: "
                "copy it or name another file"
            )


# ------------------------------------------------------------- disk full, EFBIG

_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: how libraries that wrap the OS error spell it (safetensors' Rust IoError, torch's writer, plain text)
_SPACE_TEXT = {
    errno.EFBIG: ("File too large", "FileTooLarge", "os error 27"),
    errno.ENOSPC: ("No space left on device", "StorageFull", "os error 28"),
    errno.EDQUOT: ("Disk quota exceeded", "QuotaExceeded", "FilesystemQuotaExceeded", "os error 122"),
}


def file_size_limit() -> int | None:
    """The soft file-size limit of this process in bytes (``ulimit -f``), or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def space_errno(error: BaseException) -> int | None:
    """``ENOSPC``, ``EDQUOT`` or ``EFBIG`` when ``error`` (or what caused it) is a write that ran out of room."""
    seen: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in seen and len(seen) < 8:
        seen.append(e)
        if isinstance(e, OSError) and e.errno in _SPACE_ERRNOS:
            return e.errno
        text = str(e)
        for code, needles in _SPACE_TEXT.items():
            if any(n in text for n in needles):
                return code
        if "file write failed" in text and file_size_limit() is not None:  # torch's writer, under a limit
            return errno.EFBIG
        e = e.__cause__ or e.__context__
    return None


def human_bytes(n: float) -> str:
    """``1.5 GB``, ``512 B``."""
    if n < 1000:
        return f"{int(n)} B"
    exp = min(int(math.log(n, 1000)), 4)
    return f"{n / 1000**exp:.1f} {' KMGT'[exp]}B"


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        if p.exists():
            with contextlib.suppress(OSError):
                return shutil.disk_usage(p).free
            return None
    return None


def space_error(path: str | os.PathLike[str], error: BaseException, *, needed: int | None = None,
                atomic: bool = True) -> DiskFullError:  # fmt: skip
    """One :class:`DiskFullError` line naming ``path``, the limit or the free space, and ``needed`` when known.

    ``atomic`` (the atomic writers): the line says that nothing half-written was published.
    """
    code = space_errno(error) or errno.ENOSPC
    need = f"; about {human_bytes(needed)} needed" if needed else ""
    tail = "; nothing half-written was published" if atomic else ""
    path = Path(path)
    if code == errno.EFBIG:
        limit = file_size_limit()
        where = f"the file-size limit ({human_bytes(limit)}, `ulimit -f`)" if limit else "the file system's file size"
        err = DiskFullError(
            f"file too large: writing {path} went past {where}{need}{tail}; raise the limit or write elsewhere"
        )
    else:
        free = _free_bytes(path.parent if not path.is_dir() else path)
        have = f"{human_bytes(free)} free" if free is not None else "the device is full"
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on the device"
        err = DiskFullError(f"{what} writing {path} ({have}{need}){tail}; free some space or write elsewhere")
    err.errno = code  # str(err) stays the one line; space_errno() still knows the cause
    return err


@contextlib.contextmanager
def translate_space_errors(path: str | os.PathLike[str], *, needed: int | None = None) -> Iterator[None]:
    """Re-raise a full disk or a file-size limit inside the block as one :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if space_errno(e) is None:
            raise
        raise space_error(path, e, needed=needed) from e
