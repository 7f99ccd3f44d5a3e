"""What this tool wrote into a folder: the hidden manifest ``.lmeval-prune-written.json``.

Every file the safe writers publish (:func:`lmeval_layerprune.core.output.write_output`, a sliced
checkpoint) is listed in the manifest of the folder it lies in, with its sha256 (files up to
16 MiB) or its size and modification time (larger files, such as weights). A file is this tool's
when it is listed **and** still matches: a file the user edited, or put in place of ours under the
same name, no longer matches and is treated as the user's. ``--overwrite`` replaces only files that
are this tool's; everything else in the folder is left as it is.

The manifest is hidden (``push`` skips hidden files, the cache key ignores them) and is itself
written atomically; a file of that name that is not this tool's manifest is never replaced.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.fsutil import fsync_dir, open_new, sha256_file, tmp_name
from lmeval_layerprune.core.layout import WRITTEN_MANIFEST
from lmeval_layerprune.errors import OutputError

TOOL = "lmeval-layerprune"
#: files up to this size are recorded by content (sha256), larger ones by size and modification time
SMALL_FILE = 16 << 20

Entry = dict[str, Any]


def manifest_path(folder: str | os.PathLike[str]) -> Path:
    return Path(folder) / WRITTEN_MANIFEST


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _load(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``; None when there is none or the file there is not this tool's."""
    st = _lstat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != TOOL or not isinstance(data.get("files"), dict):
        return None
    return data


def read_written(folder: str | os.PathLike[str]) -> dict[str, Entry]:
    """name -> entry of every file this tool recorded in ``folder`` ({} when there is no manifest of ours)."""
    data = _load(manifest_path(folder))
    return dict(data["files"]) if data else {}


def entry_for(path: Path, *, digest: str | None = None) -> Entry:
    """The manifest entry describing ``path`` as it is now (a folder: ``{"folder": true}``)."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        return {"folder": True}
    if st.st_size <= SMALL_FILE:
        return {"sha256": [digest or sha256_file(path)]}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def matches(path: Path, entry: Mapping[str, Any]) -> bool:
    """True when ``path`` is still what the manifest ``entry`` recorded (a link never is)."""
    st = _lstat(path)
    if st is None or stat.S_ISLNK(st.st_mode):
        return False
    if entry.get("folder"):
        return stat.S_ISDIR(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return False
    if "sha256" in entry:
        try:
            return sha256_file(path) in list(entry["sha256"])
        except OSError:
            return False
    return st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns")


def written_by_us(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is listed in its folder's manifest and unchanged since this tool wrote it."""
    path = Path(path)
    entry = read_written(path.parent).get(path.name)
    return entry is not None and matches(path, entry)


def is_ours(path: str | os.PathLike[str], legacy: Callable[[Path], bool] | None = None) -> bool:
    """True when ``path`` is this tool's: listed in its folder's manifest and unchanged since.

    A name the manifest does not list is this tool's only when ``legacy`` (how to recognise what
    versions before the manifest wrote: a marker line, a JSON schema) accepts it; a listed name that
    no longer matches was edited or replaced by the user and is theirs, whatever ``legacy`` says. A
    symbolic link is never this tool's.
    """
    path = Path(path)
    entry = read_written(path.parent).get(path.name)
    if entry is not None:
        return matches(path, entry)
    st = _lstat(path)
    return legacy is not None and st is not None and not stat.S_ISLNK(st.st_mode) and bool(legacy(path))


def record_written(folder: str | os.PathLike[str], entries: Mapping[str, Entry | None]) -> None:
    """Merge ``entries`` (name -> entry; None removes the name) into ``folder``'s manifest, atomically.

    Raises:
        OutputError: a file named like the manifest is there and is not this tool's (it is left alone).
    """
    folder = Path(folder)
    path = manifest_path(folder)
    st = _lstat(path)
    data = _load(path)
    if st is not None and data is None:
        raise OutputError(
            f"{path} is not lmeval-prune's list of the files it wrote (a link, a folder or another file); "
            "refusing to replace it: move it away"
        )
    files = dict(data["files"]) if data else {}
    for name, entry in entries.items():
        if entry is None:
            files.pop(name, None)
        else:
            files[name] = dict(entry)
    record = {
        "tool": TOOL,
        "about": "the files lmeval-prune wrote in this folder; --overwrite replaces only these, and only while "
        "they are unchanged",
        "files": dict(sorted(files.items())),
    }
    tmp = tmp_name(path)
    try:
        fd = open_new(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def record_folder(folder: str | os.PathLike[str]) -> None:
    """Record every entry of ``folder`` (top level; sub-folders as a whole) as written by this tool."""
    folder = Path(folder)
    entries = {}
    for p in sorted(folder.iterdir()):
        if p.name == WRITTEN_MANIFEST or p.is_symlink():
            continue
        entries[p.name] = entry_for(p)
    record_written(folder, entries)


def foreign_entries(
    folder: str | os.PathLike[str],
    *,
    known: Iterable[str] = (),
    owned: Callable[[Path], bool] | None = None,
) -> list[str]:
    """The names in ``folder`` (top level) that this tool did not write, sorted; folders end with ``/``.

    This tool's: listed in the manifest and unchanged; or, for a name the manifest does not list, a
    plain file named like one in ``known`` (names or ``fnmatch`` patterns: what older versions, or the
    steps of a run in progress, write without the manifest), or accepted by ``owned``. A listed name
    that no longer matches was changed by the user and is theirs. A symbolic link is never this tool's.
    """
    folder = Path(folder)
    listed = read_written(folder)
    known = tuple(known)
    out = []
    for p in sorted(folder.iterdir()):
        if p.name == WRITTEN_MANIFEST:
            continue
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            ours = False
        elif p.name in listed:
            ours = matches(p, listed[p.name])
        else:
            ours = (stat.S_ISREG(st.st_mode) and any(fnmatch.fnmatchcase(p.name, k) for k in known)) or (
                owned is not None and bool(owned(p))
            )
        if not ours:
            out.append(p.name + ("/" if stat.S_ISDIR(st.st_mode) else ""))
    return out


def refuse_foreign(
    folder: str | os.PathLike[str],
    *,
    known: Iterable[str] = (),
    owned: Callable[[Path], bool] | None = None,
    flag: str = "--out",
    why: str = "--overwrite replaces only lmeval-prune's own output and would lose them with it",
) -> None:
    """Refuse (changing nothing) when ``folder`` holds what this tool did not write (see :func:`foreign_entries`).

    For a command about to replace ``folder`` as a whole: the message names what would be lost (eight
    names at most), says ``why``, and asks to move them out.
    """
    foreign = foreign_entries(folder, known=known, owned=owned)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise OutputError(
            f"{flag} {folder} holds what this tool did not write ({shown}); {why}: move them out of the folder "
            f"(or name another {flag})"
        )
