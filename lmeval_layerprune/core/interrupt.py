"""What an interrupted command has kept: the words of the one line ``lmeval-prune`` prints on Ctrl-C.

The command line (``lmeval_layerprune.cli.main``) turns ``SIGINT`` and ``SIGTERM`` into one line,
``lmeval-prune: interrupted (SIGINT): <what was kept>; <how to resume>``, and exit code 130 or 143.
A command tells it what it has kept so far with a note, as precise as it can be, evaluated only
when the interrupt arrives (so it costs nothing while the command runs)::

    from lmeval_layerprune.core.interrupt import keeping

    with keeping(lambda: f"{done} of {total} cells kept in {out}", resume="rerun the same command to resume"):
        for cell in cells:
            ...

Notes nest: the innermost note's text is printed, with the innermost ``resume`` that is set (so a
library function can say what it kept, ``resume=None``, and the command around it how to resume:
``heal`` says how a heal run resumes while its self-generation step says how many responses are
kept). A note that raises, or has no text, is skipped. This module imports nothing heavy, so the
command line can read it without loading any command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Text = str | Callable[[], str | None] | None

_NOTES: list[tuple[Text, Text]] = []
#: the innermost note when an interrupt left its block (the blocks are gone by the time it is printed)
_AT_INTERRUPT: list[tuple[str | None, str | None]] = []


def note_kept(what: Text, *, resume: Text = None) -> None:
    """Set the command-wide note (what is kept, how to resume), below any :func:`keeping` block."""
    if _NOTES:
        _NOTES[0] = (what, resume)
    else:
        _NOTES.append((what, resume))


@contextlib.contextmanager
def keeping(what: Text, *, resume: Text = None) -> Iterator[None]:
    """The note while the block runs (``what``, ``resume``: text, or a function giving it at interrupt time)."""
    _NOTES.append((what, resume))
    depth = len(_NOTES)
    try:
        yield
    except KeyboardInterrupt:  # SIGINT, and SIGTERM as errors.Terminated
        if not _AT_INTERRUPT:
            _AT_INTERRUPT.append(_current())
        raise
    finally:
        del _NOTES[depth - 1 :]


def kept_note() -> tuple[str | None, str | None]:
    """(what was kept, how to resume) of the innermost note when the interrupt came (or now); (None, None)
    when no command set one."""
    return _AT_INTERRUPT[0] if _AT_INTERRUPT else _current()


def _current() -> tuple[str | None, str | None]:
    text = resume = None
    for what, how in reversed(_NOTES):
        if resume is None:
            try:
                resume = (how() if callable(how) else how) or None
            except Exception:  # noqa: BLE001 - the note must never hide the interrupt
                resume = None
        if text is None:
            try:
                text = (what() if callable(what) else what) or None
            except Exception:  # noqa: BLE001 - the note must never hide the interrupt
                continue
        if text is not None and resume is not None:
            break
    return (str(text) if text else None), resume


def clear_notes() -> None:
    """Forget every note (the command line does this before a command starts)."""
    _NOTES.clear()
    _AT_INTERRUPT.clear()
