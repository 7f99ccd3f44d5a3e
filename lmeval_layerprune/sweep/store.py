"""A sweep folder on disk: where a cell lives, when it is complete, and how it is published.

A cell is written into a hidden ``.partial-<cell>-<host>-<pid>`` folder beside its final place and
renamed into place only once its files check out (:func:`check_cell`), so any number of writers
(one process, Ray workers on several nodes) may publish cells into one folder: a rename is atomic,
and a writer that finds the cell already published discards its own copy. A cell is *complete*
when its results file parses, names every task asked for, and each samples file has one line per
item and filter; anything else is reported in one line and run again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.fsutil import process_alive
from lmeval_layerprune.core.guard import owned_json
from lmeval_layerprune.core.layout import PLAN_FILE, RESULTS_GLOB, TOKEN_AGREEMENT_FILE
from lmeval_layerprune.core.output import write_output
from lmeval_layerprune.errors import SweepError
from lmeval_layerprune.sweep.grid import Cell

PARTIAL = ".partial-"


def cell_dir(out: Path, cell: Cell) -> Path:
    return Path(out) / cell.name


def write_json(path: Path, data: dict[str, Any], *, what: str, hint: str = "") -> None:
    """Write ``data`` as JSON by the safe-write rule (:func:`~lmeval_layerprune.core.output.write_output`):
    beside ``path`` then renamed, recorded in the folder's list of what this tool wrote; an earlier file
    of the sweep's is replaced (one written before that list existed is recognised by ``data``'s first two
    keys), a file the user put or edited there is refused in one line."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_output(path, text, overwrite=True, owned=owned_json(*list(data)[:2]), what=what, hint=hint)


# ------------------------------------------------------------------ checking


@dataclass(frozen=True)
class CellCheck:
    """What :func:`check_cell` found: ``results`` is the results file of a complete cell; otherwise
    ``problem`` says what is wrong (``None`` with no results: the cell was never published)."""

    results: Path | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.results is not None and self.problem is None


def _lines(path: Path) -> tuple[int, bool]:
    """(number of lines, whether the file ends with a complete JSON line)."""
    data = path.read_bytes()
    if not data:
        return 0, True
    if not data.endswith(b"\n"):
        return data.count(b"\n") + 1, False
    last = data[data.rstrip(b"\n").rfind(b"\n") + 1 :]
    try:
        json.loads(last)
    except ValueError:
        return data.count(b"\n"), False
    return data.count(b"\n"), True


def _filters(metrics: dict[str, Any]) -> set[str]:
    """The filter names of one task's metrics (``"acc,none"`` -> ``none``): lm-eval logs each item once per filter."""
    return {k.split(",", 1)[1] for k in metrics if "," in k and not k.startswith("alias")}


def check_run(folder: Path, tasks: Sequence[str]) -> CellCheck:
    """Check the lm-eval run saved in ``folder`` (``<model>/results_*.json`` and its samples files)."""
    found = sorted(folder.glob(f"*/{RESULTS_GLOB}"))
    if not found:
        return CellCheck(None, f"no {RESULTS_GLOB} in {folder}")
    if len(found) > 1:
        return CellCheck(None, f"{len(found)} results files in {folder} (one expected)")
    path = found[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        results, configs, counts = data["results"], data["configs"], data["n-samples"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        what = f"misses {e}" if isinstance(e, KeyError) else "does not parse"
        return CellCheck(path, f"{path.name} {what} (truncated or damaged?)")
    named = set(results) | set(configs) | set(data.get("group_subtasks") or {})
    missing = [t for t in tasks if t not in named]
    if missing:
        return CellCheck(path, f"{path.name} does not name the task(s) {', '.join(missing)}")
    date = path.stem[len("results_") :]
    for task in configs:
        samples = path.parent / f"samples_{task}_{date}.jsonl"
        try:
            n_items = int(counts[task]["effective"])
        except (KeyError, TypeError, ValueError):
            return CellCheck(path, f"{path.name} has no item count for {task}")
        expected = n_items * max(1, len(_filters(results.get(task, {}))))
        if not samples.is_file():
            return CellCheck(path, f"{samples.name} is missing")
        n, whole = _lines(samples)
        if n != expected or not whole:
            state = "" if whole else ", the last one cut short"
            return CellCheck(path, f"{samples.name} has {n} of {expected} lines{state} (truncated?)")
    return CellCheck(path)


def check_cell(out: Path, cell: Cell, tasks: Sequence[str], token_agreement: bool = False) -> CellCheck:
    """Whether ``cell`` is complete in the sweep folder ``out`` (see the module docstring)."""
    folder = cell_dir(out, cell)
    if not folder.is_dir():
        return CellCheck()
    if not any(folder.iterdir()):
        return CellCheck()  # an empty folder: never published (made by hand)
    check = check_run(folder, tasks)
    if check.complete and token_agreement and not cell.healed:
        ta = folder / TOKEN_AGREEMENT_FILE
        try:
            json.loads(ta.read_text())
        except (OSError, ValueError):
            return CellCheck(check.results, f"{ta.name} is missing or damaged")
    return check


# ---------------------------------------------------------------- publishing


def partial_name(cell: Cell) -> str:
    return f"{PARTIAL}{cell.name}-{socket.gethostname()}-{os.getpid()}"


def _owner_alive(name: str) -> bool:
    """Whether the writer of a partial folder is a live process on this host."""
    host_pid = name.rsplit("-", 1)
    if len(host_pid) != 2 or not host_pid[1].isdigit() or not host_pid[0].endswith(socket.gethostname()):
        return False
    pid = int(host_pid[1])
    return pid != os.getpid() and process_alive(pid)


def clear_partials(out: Path) -> list[Path]:
    """Remove half-written cells (hidden folders only this module writes) whose writer is gone."""
    removed = []
    for p in Path(out).glob(f"{PARTIAL}*"):
        if p.is_dir() and not _owner_alive(p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _written_by_sweep(folder: Path) -> bool:
    """Whether ``folder`` holds what a sweep cell is published with (a cell is checked before it is)."""
    return (folder / PLAN_FILE).is_file() or any(folder.glob(f"*/{RESULTS_GLOB}")) or any(folder.glob(RESULTS_GLOB))


def discard_cell(out: Path, cell: Cell) -> None:
    """Move an incomplete cell out of the way (renamed to a partial first: never half-deleted in place).

    Raises:
        SweepError: the folder holds nothing a sweep writes (a folder of the user's named like the cell).
    """
    folder = cell_dir(out, cell)
    if not folder.exists():
        return
    if folder.is_symlink() or not folder.is_dir() or not _written_by_sweep(folder):
        raise SweepError(
            f"{folder} is named like the sweep cell {cell.name} but is not one (no results file); it is left "
            "alone: move it out of the sweep folder and rerun the same command"
        )
    trash = Path(out) / f"{partial_name(cell)}-damaged"
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def publish_dir(out: Path, cell: Cell) -> Iterator[Path]:
    """A hidden folder to write ``cell`` into, renamed to the cell's name when the block succeeds.

    Idempotent: when another writer published the cell first, this writer's folder is discarded
    (the cell stays as the first writer left it). On an error the partial folder is removed."""
    tmp = Path(out) / partial_name(cell)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    target = cell_dir(out, cell)
    try:
        os.rename(tmp, target)  # atomic; replaces only an empty folder
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # a second writer: the first one's cell stands


def plan_file(out: Path, cell: Cell) -> Path:
    """The full plan record an in-memory cell keeps beside its results (read by its healed cells)."""
    return cell_dir(out, cell) / PLAN_FILE
