"""One guard for every output this tool writes, and atomic replacement.

Rules (checked before any work, and changing nothing on disk when they refuse):

1. An output that **is** or **contains** one of the command's inputs is refused, ``--overwrite`` or
   not (symbolic links are resolved first).
2. An output that **lies inside** an input folder is refused when the folder is read whole (a model
   or a data folder: every bare folder input). Inside a folder of which only some files are read
   (:class:`Reads`; a bare folder that holds lm-eval task YAMLs and no model files is recognised as
   one), a new file that nothing reads is allowed (``select --include-path mytasks --out
   mytasks/plan.json``); a file named like the ones read (``*.yaml``), a folder output, or an existing
   file this tool did not write is refused.
3. An output given as a **symbolic link** is refused, never followed, whatever it points to; the
   message names the real path, so a user who means it can name that instead.
4. ``--overwrite`` replaces only what this tool wrote: listed, unchanged, in the folder's manifest
   (:mod:`lmeval_layerprune.core.written`), or recognised by its own marker (the plan file of a sliced
   checkpoint, the state file of a heal run, a selfgen file's metadata, the marker line of a
   generated model card, the cache entry marker). Anything else in the way is refused, and the
   message names the path.
5. Replacement is atomic (:func:`replace_atomically`): the new output is written beside the old,
   the two are swapped by one ``rename`` (``renameat2(RENAME_EXCHANGE)`` for folders where the
   kernel has it), then the old one is deleted. A process killed at any moment leaves the old
   output or the new one, complete, at the target path (plus, at worst, a hidden ``.tmp-*``
   leftover that the next writer removes). A full disk or a file-size limit ends it with one
   :class:`~lmeval_layerprune.errors.DiskFullError` naming the target, and nothing is published.

Single files and several named files in one folder go through :mod:`lmeval_layerprune.core.output`
(``write_output``, ``OutputFolder``), which applies these rules per file.

It also holds the input checks every command shares: :func:`check_causal_lm` refuses models that
cannot generate text (encoder-only, encoder-decoder) with one message, and :func:`corrupt_file`
turns an unreadable weights, data, results or plan file into a message that names it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.fsutil import (
    fsync_dir,
    remove_abandoned_tmp_dirs,
    tmp_dir_is_live,
    tmp_name,
    translate_space_errors,
)
from lmeval_layerprune.core.written import is_ours
from lmeval_layerprune.errors import CorruptFileError, ModelKindError, OutputError

__all__ = [
    "Reads",
    "guard_output",
    "replace_atomically",
    "owned_by_marker",
    "owned_json",
    "check_causal_lm",
    "corrupt_file",
]


Owned = Callable[[Path], bool] | str | Iterable[str] | None

#: what lm-eval reads from an ``--include-path`` folder: task YAMLs, and the Python files they import
TASK_PATTERNS = ("*.yaml", "*.yml", "*.py")
#: a folder holding one of these at its top is a model (read whole, by name and by glob)
_MODEL_FILES = ("config.json", "adapter_config.json", "params.json")
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
_SCAN_LIMIT = 5000  # entries looked at to recognise a task folder


@dataclass(frozen=True)
class Reads:
    """An input folder of which only the files matching ``patterns`` are read (a path, for ``os.fspath``).

    ``guard_output(out, inputs=[model, Reads(include_path)])`` lets a new file that nothing reads lie
    inside ``include_path`` (``--out mytasks/plan.json``), while a model or data folder given as a bare
    path stays off limits. A bare folder holding task YAMLs and no model files is read this way too.
    """

    path: str | os.PathLike[str]
    patterns: tuple[str, ...] = TASK_PATTERNS

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return os.fspath(self.path)


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve(strict=False)


def _is_model_folder(folder: Path) -> bool:
    return any((folder / n).exists() for n in _MODEL_FILES) or any(
        next(folder.glob(g), None) is not None for g in _WEIGHT_GLOBS
    )


def _holds_task_yaml(folder: Path) -> bool:
    seen = 0
    for _, dirs, files in os.walk(folder):
        if any(f.endswith((".yaml", ".yml")) for f in files):
            return True
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
        seen += len(files) + len(dirs)
        if seen > _SCAN_LIMIT:
            return False
    return False


def _reads(item: Any, real: Path) -> tuple[str, ...] | None:
    """The patterns of the files read from input ``real`` (None: it is read whole)."""
    if isinstance(item, Reads):
        return item.patterns
    if real.is_dir() and not _is_model_folder(real) and _holds_task_yaml(real):
        return TASK_PATTERNS  # a folder of lm-eval task YAMLs (--include-path): only those are read
    return None


def _local_inputs(inputs: Iterable[Any]) -> list[tuple[str, Path, tuple[str, ...] | None]]:
    """(as given, resolved, patterns read) for the inputs on disk (Hub ids and ``None`` are skipped)."""
    out = []
    for item in inputs:
        if item is None or not isinstance(item, str | os.PathLike):
            continue
        text = os.fspath(item)
        if not text or not Path(text).expanduser().exists():
            continue
        real = _real(text)
        out.append((text, real, _reads(item, real)))
    return out


def owned_by_marker(*markers: str) -> Callable[[Path], bool]:
    """An ``owned`` test: ``path`` is ours when it holds (a folder) or sits beside (a file) one of ``markers``.

    For a folder the markers are file names inside it; for a file they are suffixes appended to its
    name (``out.jsonl`` + ``.meta.json``).
    """

    def test(path: Path) -> bool:
        if path.is_dir():
            return any((path / m).is_file() for m in markers)
        return any(path.with_name(path.name + m).is_file() for m in markers)

    return test


def owned_json(*keys: str) -> Callable[[Path], bool]:
    """An ``owned`` test for JSON files this tool writes: a JSON object holding every one of ``keys``."""

    def test(path: Path) -> bool:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(data, dict) and all(k in data for k in keys)

    return test


def as_owned_test(owned: Owned) -> Callable[[Path], bool] | None:
    if owned is None or callable(owned):
        return owned  # type: ignore[return-value]
    markers = (owned,) if isinstance(owned, str) else tuple(owned)
    return owned_by_marker(*markers)


def _occupied(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def _looks_like_folder(given: Path, target: Path) -> bool:
    return target.is_dir() or (not target.exists() and not given.suffix)


def _check_inside(given: str, target: Path, text: str, reads: tuple[str, ...] | None, *, folder: bool,
                  owned: Callable[[Path], bool] | None, what: str, flag: str) -> None:  # fmt: skip
    """``target`` lies inside the input folder ``text``: refuse unless it is a file nothing there reads."""
    if reads is None:
        raise OutputError(
            f"{flag} {given} lies inside the input {text}; refusing to write there (name an {what} outside it)"
        )
    if folder:
        raise OutputError(
            f"{flag} {given} lies inside the input {text}; a folder written there could be read as part of it "
            f"(name an {what} outside it)"
        )
    hit = next((p for p in reads if fnmatch.fnmatch(target.name, p)), None)
    if hit:
        raise OutputError(
            f"{flag} {given} lies inside the input {text} and is named like the files read from it ({hit}); "
            f"refusing to write there (name an {what} that is not {hit}, or one outside it)"
        )
    if (target.exists() or target.is_symlink()) and not is_ours(target, owned):
        raise OutputError(
            f"{flag} {given} is a file inside the input {text} that this tool did not write (it may be read); "
            f"refusing to write over it (name another {what})"
        )


def guard_output(
    out: str | os.PathLike[str],
    *,
    inputs: Iterable[Any] = (),
    overwrite: bool = False,
    owned: Owned = None,
    what: str = "output",
    flag: str = "--out",
    hint: str = "",
    folder: bool | None = None,
) -> None:
    """Refuse an output that would damage an input or replace something this tool did not write.

    Args:
        out: the output file or folder.
        inputs: the command's inputs (paths; Hub ids, ``None`` and missing paths are ignored). A folder
            is read whole (a model, a data folder) unless it is given as :class:`Reads` or holds lm-eval
            task YAMLs and no model files: then only a file named like those it reads is off limits.
        overwrite: the caller will replace an existing ``out``; then ``out`` must be ours by ``owned``
            (or listed, unchanged, in its folder's manifest of what this tool wrote).
        owned: how to recognise an output of ours: a callable, or marker name(s) (see
            :func:`owned_by_marker`). ``None``: only the manifest counts.
        what, flag: words for the messages (``"plan file"``, ``"--out"``).
        hint: what to do, for the refusal of something this tool did not write.
        folder: ``out`` is a folder output (default: it is an existing folder, or a new name without a suffix).

    Raises:
        OutputError: naming the path and what to do. Nothing on disk is changed, ever.
    """
    given = os.fspath(out)
    target = _real(given)
    test = as_owned_test(owned)
    is_folder = _looks_like_folder(Path(given), target) if folder is None else folder
    for text, src, reads in _local_inputs(inputs):
        if target == src:
            raise OutputError(f"{flag} {given} is the input {text}; refusing to write over it (name another {what})")
        if src in target.parents:
            _check_inside(given, target, text, reads, folder=is_folder, owned=test, what=what, flag=flag)
        if target in src.parents:
            raise OutputError(
                f"{flag} {given} contains the input {text}; "
                f"{'--overwrite would delete it' if overwrite else 'writing there could destroy it'} "
                f"(name an {what} that does not hold your inputs)"
            )
    link = Path(given).expanduser()
    if link.is_symlink():
        raise OutputError(
            f"{flag} {given} is a symbolic link (to {os.readlink(link)}); refusing to write through it: "
            f"name the real {what} ({target}) if you mean it, or remove the link"
        )
    if not overwrite:
        return
    if not _occupied(target):
        return
    if is_ours(target, test):
        return
    kind = "folder" if target.is_dir() else "file"
    raise OutputError(
        f"{flag} {given} is a {kind} this tool did not write (it carries no marker of lmeval-prune's); refusing to "
        f"replace it. {hint or f'Remove it yourself if it is disposable, or name another {what}'}"
    )


# ------------------------------------------------------------------ atomic swap

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where the kernel or libc lacks it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"renameat2({a}, {b}) failed: {os.strerror(err)}")


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.lmeval-old")


def recover(target: str | os.PathLike[str]) -> None:
    """Finish a swap that a kill interrupted between its two renames (only where ``renameat2`` is missing).

    If ``target`` is gone and its set-aside old copy is there, put the old copy back.
    """
    target = Path(target)
    old = _old_name(target)
    if not target.exists() and old.exists():
        os.rename(old, target)
    elif target.exists() and old.exists():
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_abandoned(parent: Path) -> None:
    remove_abandoned_tmp_dirs(parent)
    for tmp in parent.glob(".tmp-*"):
        if tmp.is_file() and not tmp_dir_is_live(tmp):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def replace_atomically(target: str | os.PathLike[str], *, needed: int | None = None) -> Iterator[Path]:
    """Yield a sibling temporary path to write the new ``target`` to (a file or a folder; it does not exist yet).

    When the block ends without an exception, the new output takes ``target``'s place in one step
    and the old one (if any) is deleted; on an exception the temporary output is removed and
    ``target`` is untouched. A full disk or a file-size limit is raised as one
    :class:`~lmeval_layerprune.errors.DiskFullError` naming ``target`` (and ``needed`` bytes when
    given). A ``target`` that is a symbolic link is refused, never followed. Guard the target with
    :func:`guard_output` first.
    """
    target = Path(target).expanduser()
    if target.is_symlink():
        raise OutputError(f"{target} is a symbolic link; refusing to replace what it points to (remove the link)")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    _remove_abandoned(parent)
    tmp = tmp_name(target)
    try:
        with translate_space_errors(target, needed=needed):
            yield tmp
            if not tmp.exists():
                raise OutputError(f"nothing was written for {target}")
            if tmp.is_file():
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            fsync_dir(parent)
        if not target.exists() and not target.is_symlink():
            os.rename(tmp, target)
        elif tmp.is_dir() and target.is_dir() and _exchange(tmp, target):
            pass  # tmp now holds the old output; removed below
        elif tmp.is_file() and not target.is_dir():
            os.replace(tmp, target)  # one atomic rename for files (other hard links keep the old content)
        else:
            old = _old_name(target)
            _remove(old)
            os.rename(target, old)  # a kill here: recover() puts the old one back
            os.rename(tmp, target)
            _remove(old)
        fsync_dir(parent)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


# ----------------------------------------------------------------- model cards

#: The last line of every card ``lmeval-prune card`` writes: how a later run knows it may replace the card.
CARD_MARKER = "<!-- generated by lmeval-layerprune (delete this line to keep your edits from being replaced) -->"


def is_generated_card(path: Path) -> bool:
    """True for a model card written by this tool (the marker line; older cards: the "Made with" line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return CARD_MARKER in text or "Made with [lmeval-layerprune]" in text


def mark_card(text: str) -> str:
    """``text`` with :data:`CARD_MARKER` as its last line."""
    return text.rstrip("\n") + "\n\n" + CARD_MARKER + "\n"


# --------------------------------------------------------------- input checks


def check_causal_lm(config: Any, *, role: str = "model", name: str | None = None) -> None:
    """Refuse a model that cannot generate text left to right (encoder-only, encoder-decoder).

    ``config`` is a transformers config (or a parsed ``config.json``); ``role`` names the model's job
    in the message (``"teacher"``, ``"base model"``).
    """
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    model_type = str(get("model_type", "") or "")
    label = f"{role} {name!r}" if name else role
    if get("is_encoder_decoder", False):
        raise ModelKindError(
            f"the {label} is an encoder-decoder model ({model_type}); this command needs a decoder-only "
            "causal language model (e.g. Llama, Qwen, SmolLM)"
        )
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:  # pragma: no cover - transformers always has them
        return
    if not model_type:
        return
    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if causal is None or model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ModelKindError(
            f"the {label} is a {model_type!r} model, which cannot generate text (an encoder-only or "
            "non-causal architecture); this command needs a decoder-only causal language model"
        )


def corrupt_file(
    path: str | os.PathLike[str], error: BaseException, *, kind: str = "file", fix: str = ""
) -> CorruptFileError:
    """A :class:`CorruptFileError` naming ``path``, what went wrong and what to do."""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    hint = fix or "restore it, or delete it and write it again"
    return CorruptFileError(f"{kind} {path} is unreadable ({type(error).__name__}: {detail}); {hint}")


def check_weights(folder: str | os.PathLike[str], *, fix: str = "") -> None:
    """Read the header of every ``*.safetensors`` file in ``folder`` (cheap: no tensor is loaded).

    A truncated or garbled weights file raises :class:`CorruptFileError` naming it, instead of a
    ``SafetensorError`` from deep inside the loader that names no file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a dependency of transformers
        return
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as e:  # noqa: BLE001 - SafetensorError and OSError alike: name the file
            raise corrupt_file(
                path,
                e,
                kind="weights file",
                fix=fix
                or "the checkpoint is truncated or damaged: download or write it again "
                "(a materialized cache entry: `lmeval-prune cache clear`)",
            ) from None
