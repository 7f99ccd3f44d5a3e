"""Resumable state, written once: an append-only JSONL journal and a run manifest.

* :func:`read_jsonl` / :func:`append_jsonl` / :func:`repair_torn_tail`: the append-only record files
  of ``select`` (its journal) and ``selfgen`` (its responses). Each append is one ``write`` followed
  by ``fsync``, so a kill leaves at most a half-written last line (no newline). Readers ignore that
  line; it is cut off (:func:`repair_torn_tail`) only by a writer that has first proven the file is
  this tool's, written with the same settings. A refused run changes nothing.
* :class:`RunManifest`: the settings that determine a resumable run (``heal``'s state file,
  ``selfgen``'s metadata), with a marker saying this tool wrote it. A resume with other settings is
  refused with the settings that differ, old and new, and what to do.
* :class:`Journal`: ``select``'s measurement journal on top of both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.fsutil import check_writable_in_place, open_append, translate_space_errors
from lmeval_layerprune.core.output import check_replace, write_output
from lmeval_layerprune.errors import CorruptFileError, JournalError

TOOL = "lmeval-layerprune"


# ------------------------------------------------------------------ settings


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (tuples and sets become lists, unknown objects their ``str``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in (sorted(value, key=str) if isinstance(value, set) else value)]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def fingerprint(settings: Any) -> str:
    """A short hash of ``settings`` (canonical JSON)."""
    return hashlib.sha256(json.dumps(json_safe(settings), sort_keys=True).encode()).hexdigest()[:16]


_MISSING = "<unset>"


def settings_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted.key, old, new)`` for every leaf that differs between two settings mappings."""
    old, new = json_safe(old), json_safe(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append((name, _MISSING, new[key]))
            elif key not in new:
                out.append((name, old[key], _MISSING))
            else:
                out.extend(settings_diff(old[key], new[key], name))
        return out
    return [] if old == new else [(prefix or "settings", old, new)]


def describe_diff(diff: Sequence[tuple[str, Any, Any]], limit: int = 8) -> str:
    """``"sft.learning_rate: 0.01 -> 0.02; drop: '20-25' -> 'last:2'"``."""

    def show(v: Any) -> str:
        text = v if v == _MISSING else json.dumps(v)
        return text if len(text) <= 60 else text[:57] + "..."

    parts = [f"{k}: {show(a)} -> {show(b)}" for k, a, b in diff[:limit]]
    if len(diff) > limit:
        parts.append(f"... and {len(diff) - limit} more")
    return "; ".join(parts)


# --------------------------------------------------------------------- JSONL


def read_jsonl(path: str | Path, *, what: str = "journal") -> tuple[list[dict[str, Any]], int]:
    """The complete records of an append-only JSONL file, and the size of a half-written last line.

    Nothing is changed on disk. A line that is not a JSON object, or bytes that are not UTF-8, raise
    an error naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = []
    for n, line in enumerate(data[:end].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise CorruptFileError(
                f"{what} {path} is not text (line {n}: {e.reason} at byte {e.start}); it is not a file this tool "
                "wrote, or it is damaged: restore it or name another file"
            ) from None
        except json.JSONDecodeError as e:
            raise JournalError(f"{what} {path}: line {n} is not a JSON record ({e.msg}); the file is damaged") from None
        if not isinstance(rec, dict):
            raise JournalError(f"{what} {path}: line {n} is not a JSON object; this is not a {what} of this tool")
        records.append(rec)
    return records, len(data) - end


def repair_torn_tail(path: str | Path) -> int:
    """Cut a half-written last line (bytes after the last newline) off ``path``; returns the bytes cut.

    Call only after the file was proven to be this tool's, written with the same settings.
    """
    path = Path(path)
    if not path.exists():
        return 0
    check_writable_in_place(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        # the last newline: read backwards in blocks
        pos, end = size, 0
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                end = start + i + 1
                break
            pos = start
        if end < size:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    return size - end


def torn_fragment(path: str | Path, limit: int = 64) -> bytes:
    """The first ``limit`` bytes of the half-written last line of ``path`` (empty when there is none)."""
    data = Path(path).read_bytes()
    return data[data.rfind(b"\n") + 1 :][:limit]


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append ``records`` in one ``write``, then ``fsync`` (a kill leaves at most a torn last line).

    Never through a symbolic link, never into a file with other hard links; a full disk leaves at most
    a torn last line (ignored by readers, cut by the next proven writer) and raises ``DiskFullError``.
    """
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not text:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with translate_space_errors(path), os.fdopen(open_append(path), "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------------ manifest


@dataclass
class RunManifest:
    """The settings of a resumable run, saved as JSON with this tool's marker.

    ``kind`` names the command (``heal``, ``selfgen``); ``compare`` lists the keys whose change
    forbids a resume (default: all of ``settings``); ``extra`` is saved but never compared.
    """

    path: Path
    kind: str
    settings: dict[str, Any]
    compare: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tool": TOOL, "kind": self.kind, **json_safe(self.extra), **json_safe(self.settings)}

    def load(self) -> dict[str, Any] | None:
        """The saved manifest, or None when there is none. Raises when the file is not this tool's."""
        if not self.path.is_file():
            return None
        try:
            old = json.loads(self.path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptFileError(
                f"{self.kind} settings file {self.path} is unreadable ({type(e).__name__}); "
                "it is damaged or not this tool's: restore it, or name another output"
            ) from None
        if not isinstance(old, dict):
            raise JournalError(f"{self.path} is not a {self.kind} settings file of this tool")
        return old

    def differences(self, old: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        keys = self.compare if self.compare is not None else tuple(self.settings)
        new = json_safe(self.settings)
        return settings_diff({k: old.get(k, _MISSING) for k in keys}, {k: new.get(k, _MISSING) for k in keys})

    def check(self, *, what: str, how: str) -> bool:
        """True when a manifest with the same settings is saved; False when there is none.

        Raises :class:`JournalError` naming every differing setting (old -> new) and ``how`` to proceed.
        """
        old = self.load()
        if old is None:
            return False
        if old.get("kind") not in (None, self.kind):
            raise JournalError(f"{self.path} belongs to a {old.get('kind')} run, not {self.kind}; {how}")
        diff = self.differences(old)
        if diff:
            raise JournalError(f"{what} was started with other settings ({describe_diff(diff)}); {how}")
        return True

    def is_mine(self, path: Path) -> bool:
        """True when ``path`` holds a settings file of this kind written by this tool (its marker and kind)."""
        try:
            old = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(old, dict) and old.get("tool") == TOOL and old.get("kind") == self.kind

    def check_writable(self) -> None:
        """Refuse (changing nothing) when a file of the manifest's name is there and is not this tool's."""
        check_replace(self.path, overwrite=True, owned=self.is_mine, what=f"{self.kind} settings file",
                      hint="move it away, or name another output")  # fmt: skip

    def write(self) -> None:
        """Save by the safe-write rule (:func:`~lmeval_layerprune.core.output.write_output`): atomically, and
        never over a file of that name that this tool did not write (a user's ``OUT.meta.json``)."""
        write_output(self.path, json.dumps(self.to_dict(), indent=2) + "\n", overwrite=True, owned=self.is_mine,
                     what=f"{self.kind} settings file", hint="move it away, or name another output")  # fmt: skip


# ------------------------------------------------------------------- journal


def _settings_dict(settings: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return json_safe(dataclasses.asdict(settings))
    return json_safe(dict(settings))


@dataclass
class Journal:
    """Append-only JSONL record of every measurement, keyed by the settings (``select``'s journal).

    Every line carries ``settings_key``; the first also carries the settings themselves, so a
    journal of other settings is refused naming what differs.
    """

    path: Path | None
    settings_key: str
    records: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] | None = None

    @classmethod
    def open(cls, path: str | Path | None, settings: Any) -> Journal:
        key = settings.key() if hasattr(settings, "key") else fingerprint(settings)
        journal = cls(Path(path) if path else None, key, settings=_settings_dict(settings))
        if journal.path is None or not journal.path.exists():
            return journal
        lines, torn = read_jsonl(journal.path, what="journal")
        for i, rec in enumerate(lines):
            if "id" not in rec or "raw" not in rec or "settings_key" not in rec:
                raise JournalError(
                    f"{journal.path}: line {i + 1} is not a record of select's journal; this file is not a journal "
                    "of this tool: name another --journal"
                )
            if rec["settings_key"] != journal.settings_key:
                saved = next((r["settings"] for r in lines if isinstance(r.get("settings"), dict)), None)
                what = f" ({describe_diff(settings_diff(saved, journal.settings))})" if saved else ""
                raise JournalError(
                    f"the journal {journal.path} was written with other settings{what}; rerun with the same "
                    "settings to resume it, or use another --journal (or delete it) to start a new search"
                )
            journal.records[rec["id"]] = rec["raw"]
        if torn:
            if not lines and not torn_fragment(journal.path).startswith(b'{"settings_key": '):
                raise JournalError(
                    f"{journal.path} is not a journal of this tool (its only line is not a journal record); "
                    "name another --journal"
                )
            # proven ours and of these settings: drop the fragment so later appends start on a fresh line
            repair_torn_tail(journal.path)
        return journal

    @staticmethod
    def is_journal(path: str | Path) -> bool:
        """True when ``path``'s first line is a record of select's journal (a file this tool appends to)."""
        try:
            with open(path, "rb") as fh:
                first = fh.readline()
            rec = json.loads(first.decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(rec, dict) and "settings_key" in rec and "raw" in rec

    def get(self, rec_id: str) -> dict[str, float] | None:
        return self.records.get(rec_id)

    def add(self, rec_id: str, raw: dict[str, float], **extra: Any) -> None:
        first = not self.records
        self.records[rec_id] = raw
        if self.path is None:
            return
        rec = {"settings_key": self.settings_key, "id": rec_id, "raw": raw, **extra}
        if first and self.settings is not None and (not self.path.exists() or self.path.stat().st_size == 0):
            rec["settings"] = self.settings
        append_jsonl(self.path, [rec])
