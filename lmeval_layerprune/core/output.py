"""The one rule for every file a command writes.

1. The file is written to a temporary name in the same folder (``.tmp-<pid>@<host>-<name>``, created
   with ``O_EXCL | O_NOFOLLOW``) and renamed into place: an existing path is never opened for
   writing, a kill leaves the old file or the new one, and a full disk or a file-size limit ends in
   one :class:`~lmeval_layerprune.errors.DiskFullError` naming the file, with nothing published.
2. A file that is in the way and that this tool did not write is refused, ``--overwrite`` or not,
   in one line naming the file and ``--overwrite``. "This tool wrote it" means: listed in the
   folder's hidden manifest ``.lmeval-prune-written.json`` and unchanged since (its sha256 matches;
   see :mod:`lmeval_layerprune.core.written`), or, for a name the manifest does not list, recognised
   by the caller's ``owned`` test (files written by versions before the manifest). A file the user
   edited is the user's, whatever its content.
3. A file of this tool's is replaced only with ``overwrite=True`` (a command passes ``--overwrite``,
   or ``True`` where replacing its own earlier output is the command's documented behaviour).
4. Links: a symbolic link at the file's name, or an output folder given as a symbolic link, is
   refused (never followed). A file with other hard links is never written into: the rename
   gives the name a new file, and the other links keep the old content.
5. Everything else in the folder is left untouched.

Adopting it is one line per call site::

    from lmeval_layerprune.core.output import OutputFolder, write_output

    # one file (the text, the bytes, or a function that writes the temporary path it is given)
    write_output(args.out, json.dumps(plan, indent=2) + "\\n", overwrite=True, what="plan file")
    write_output(args.plot, lambda tmp: fig.savefig(tmp, format="png"), what="plot", flag="--plot")

    # several named files in a folder that may hold the user's own files (``report``)
    folder = OutputFolder(out, overwrite=args.overwrite, inputs=runs, what="report folder")
    folder.check(REPORT_FILE, REPORT_JSON, PLOT_FILE)        # every refusal before the first write
    folder.write(REPORT_FILE, markdown)
    folder.write(REPORT_JSON, json.dumps(record, indent=2))
    folder.write(PLOT_FILE, lambda tmp: fig.savefig(tmp, format="png"))
    folder.write("layer_profiles.csv", lambda tmp: frame.to_csv(tmp, index=False))

The temporary name keeps the target's suffix, so writers that choose a format by the file name
(``savefig``, ``to_csv``) work unchanged; pass ``format=`` anyway where the library allows it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.fsutil import (
    folder_lock,
    fsync_dir,
    open_new,
    sha256_file,
    tmp_name,
    translate_space_errors,
)
from lmeval_layerprune.core.guard import Owned, as_owned_test, guard_output
from lmeval_layerprune.core.written import entry_for, is_ours, read_written, record_written
from lmeval_layerprune.errors import OutputError

__all__ = ["write_output", "check_replace", "OutputFolder"]

#: what ``write_output`` takes: the content, or a function that writes the temporary path it is given
Data = str | bytes | Callable[[Path], Any]


def check_replace(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    owned: Owned = None,
    what: str = "output",
    flag: str = "--out",
    hint: str = "",
) -> bool:
    """Refuse (changing nothing) to write ``path`` unless it is new, or this tool's and ``overwrite``.

    Returns:
        True when ``path`` exists (and may be replaced), False when it is new.
    """
    path = Path(path).expanduser()
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{path} is a symbolic link (to {os.readlink(path)}); refusing to write through it: "
            f"remove the link or name another {flag}"
        )
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a plain file"
        raise OutputError(f"{path} is {kind}; refusing to write the {what} there (name another {flag})")
    if not is_ours(path, as_owned_test(owned)):
        raise OutputError(
            f"{path} exists and lmeval-prune did not write it (or it was changed since); refusing to replace it, "
            f"--overwrite or not (--overwrite replaces only files this tool wrote): "
            f"{hint or f'move it away, or name another {flag}'}"
        )
    if not overwrite:
        raise OutputError(
            f"{path} exists (lmeval-prune wrote it); pass --overwrite to replace it, or name another {flag}"
        )
    return True


def _write_tmp(tmp: Path, data: Data) -> None:
    if callable(data):
        data(tmp)
        try:
            st = os.lstat(tmp)
        except FileNotFoundError:
            raise OutputError(f"nothing was written for {tmp.name.split('-', 2)[-1]}") from None
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"the writer of {tmp} left something other than a plain file")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        return
    blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd = open_new(tmp)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())


def write_output(
    path: str | os.PathLike[str],
    data: Data,
    *,
    overwrite: bool = False,
    what: str = "output",
    flag: str = "--out",
    owned: Owned = None,
    inputs: Iterable[Any] = (),
    hint: str = "",
) -> Path:
    """Write one file by the rule of this module; returns its path.

    Args:
        path: the file to write.
        data: its content (``str`` is written as UTF-8), or a function called with the temporary path
            to write (``lambda tmp: fig.savefig(tmp)``).
        overwrite: replace an earlier file of this tool's at ``path`` (never a file it did not write).
        what, flag, hint: words for the messages (``"report"``, ``"--out"``).
        owned: how to recognise a file of this tool's written before the manifest existed
            (:func:`lmeval_layerprune.core.guard.owned_json`, a callable).
        inputs: the command's inputs; ``path`` must not be, contain or damage one (:func:`guard_output`).

    Raises:
        OutputError: the file is a link, a folder, not this tool's, or this tool's without ``overwrite``.
        DiskFullError: the disk, a quota or the file-size limit ran out; nothing was published.
    """
    path = Path(path).expanduser()
    inputs = list(inputs)
    if inputs:
        guard_output(path, inputs=inputs, what=what, flag=flag, folder=False)
    check_replace(path, overwrite=overwrite, owned=owned, what=what, flag=flag, hint=hint)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    needed = len(data) if isinstance(data, bytes) else len(data.encode("utf-8")) if isinstance(data, str) else None
    with folder_lock(parent):
        tmp = tmp_name(path)
        try:
            with translate_space_errors(path, needed=needed):
                _write_tmp(tmp, data)
                digest = sha256_file(tmp)
                # again, just before the rename: nothing of the user's appeared there meanwhile
                existed = check_replace(path, overwrite=overwrite, owned=owned, what=what, flag=flag, hint=hint)
                new = entry_for(tmp, digest=digest)
                old = read_written(parent).get(path.name) if existed else None
                if old and "sha256" in old and "sha256" in new:  # a kill between the two records: either is ours
                    record_written(parent, {path.name: {"sha256": [*old["sha256"], digest]}})
                else:
                    record_written(parent, {path.name: new})
                os.replace(tmp, path)
                record_written(parent, {path.name: entry_for(path, digest=digest)})
                fsync_dir(parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return path


class OutputFolder:
    """A folder a command writes several named files into, beside whatever else the user keeps there.

    The folder itself is checked once (not an input, not inside a model or data folder, not a
    symbolic link, not a file); each file then follows :func:`write_output`. :meth:`check` runs every
    refusal before the first write, so a refused command changes nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        inputs: Iterable[Any] = (),
        what: str = "output folder",
        flag: str = "--out",
    ) -> None:
        self.path = Path(path).expanduser()
        self.overwrite = overwrite
        self.what = what
        self.flag = flag
        guard_output(self.path, inputs=inputs, what=what, flag=flag, folder=True)
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{flag} {self.path} is a file, not a folder; name the folder to write the {what} into")
        self.written: list[Path] = []

    def file(self, name: str | os.PathLike[str]) -> Path:
        """The path of ``name`` in the folder (a relative name; ``..`` and absolute names are refused)."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise OutputError(f"{name!r} is not a file name inside {self.path}")
        path = self.path / rel
        for part in [self.path, *reversed(path.parents[: len(rel.parts) - 1])]:
            if part.is_symlink():
                raise OutputError(
                    f"{part} is a symbolic link (to {os.readlink(part)}); refusing to write through it "
                    f"(remove the link or name another {self.flag})"
                )
        return path

    def check(self, *names: str, owned: Owned = None) -> None:
        """Refuse now, before anything is written, any of ``names`` that :meth:`write` would refuse."""
        for name in names:
            check_replace(self.file(name), overwrite=self.overwrite, owned=owned, what=self.what, flag=self.flag)

    def write(self, name: str | os.PathLike[str], data: Data, *, owned: Owned = None) -> Path:
        """Write ``name`` in the folder (see :func:`write_output`); returns its path."""
        path = write_output(self.file(name), data, overwrite=self.overwrite, what=self.what, flag=self.flag,
                            owned=owned)  # fmt: skip
        self.written.append(path)
        return path
