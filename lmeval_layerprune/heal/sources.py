"""Where training items come from: prompt sources for selfgen, heal's ``original`` baselines and
speculate, and plain-text sources for continued pretraining (``method: cpt``).

Prompts: ``bundled`` / ``mixed`` (:mod:`.prompts`), a local .jsonl/.json/.csv/.tsv/.parquet file, or a
Hub dataset id, in chat (``messages``), Alpaca (``instruction``/``input``/``output``) or plain
(``prompt`` with an optional response) layout; ``columns`` maps other column names.

Texts: ``corpus`` (:mod:`.corpus`, offline), a local ``.txt`` file (one document per paragraph, i.e.
per blank-line-separated block), any of the tabular files above with a ``text`` column, or a Hub
dataset with one (``columns: text=NAME`` maps another column; ``subset`` names the dataset's config).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval_layerprune.errors import SelfGenError
from lmeval_layerprune.heal.corpus import BUILTIN_TEXTS
from lmeval_layerprune.heal.prompts import BUILTIN_SETS, BUNDLED_NAME

logger = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One training prompt: a stable id, the chat messages up to the assistant turn, and the
    source's own response (``None`` when the source has none)."""

    id: str
    messages: list[dict[str, str]]
    reference: str | None = None


_RESPONSE_COLUMNS = ("response", "completion", "output", "answer")


_BUILDERS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def _bad_json_line(path: Path) -> str | None:
    """Where a JSON Lines file stops parsing (for the message), or None."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    return f"line {n} is not JSON ({e})"
    return None


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars or error logs from ``datasets`` while it reads a local file (errors are re-raised as ours)."""
    import datasets

    log = logging.getLogger("datasets")
    level, bars = log.level, datasets.is_progress_bar_enabled()
    log.setLevel(logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        log.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def _read_file(path: Path, source: str) -> list[dict[str, Any]]:
    """Rows of a local prompt file, read by ``datasets.load_dataset`` (json, csv, parquet builders)."""
    import datasets

    suffix = path.suffix.lower()
    builder = _BUILDERS.get(suffix)
    if builder is None:
        raise SelfGenError(f"{source}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, .tsv or .parquet")
    if path.stat().st_size == 0:
        return []
    kwargs: dict[str, Any] = {}
    if suffix == ".tsv":
        kwargs["delimiter"] = "\t"
    if builder in ("json", "csv"):
        try:
            head = path.read_bytes()[:4096].decode("utf-8")
        except UnicodeDecodeError:
            raise SelfGenError(f"prompt file {source} is not UTF-8 text; is it really {suffix}?") from None
        if suffix == ".json" and head.lstrip().startswith("{") and '"data"' in path.read_text(encoding="utf-8"):
            kwargs["field"] = "data"  # {"data": [...]}: the layout of many published sets
        if builder == "csv":
            kwargs["keep_default_na"] = False  # empty cells stay "" (as csv.DictReader gave them)
    try:
        with _quiet_datasets():
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised naming the file and the line where known
        where = _bad_json_line(path) if builder == "json" and suffix != ".json" else None
        if where:
            raise SelfGenError(f"{source}: {where}") from None
        cause = e.__cause__ or e.__context__ or e
        raise SelfGenError(
            f"prompt file {source} could not be read as {suffix} ({type(cause).__name__}: "
            f"{str(cause).splitlines()[0] if str(cause) else ''}); expected "
            + ("a JSON list of objects" if suffix == ".json" else f"a valid {suffix} file")
        ) from None
    return ds.to_list()


def _read_rows(source: str, split: str, subset: str | None = None, what: str = "prompt") -> list[dict[str, Any]]:
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path, source)
    known = (*_BUILDERS, ".txt")
    if path.suffix.lower() in known or source.startswith((".", "/", "~")) or path.exists():
        raise SelfGenError(f"{what} file {source!r} does not exist (or is not a file)")
    import datasets

    where = f"split {split!r}" + (f", subset {subset!r}" if subset else "")
    try:
        return datasets.load_dataset(source, subset, split=split).to_list()
    except Exception as e:  # noqa: BLE001 - re-raised with what to do
        offline = f"--prompts {BUNDLED_NAME} or --prompts mixed" if what == "prompt" else "data=corpus"
        raise SelfGenError(
            f"could not load the Hub dataset {source!r} ({where}): {e}. Offline, use a local file or {offline}"
        ) from e


def parse_columns(text: str | dict[str, str] | None) -> dict[str, str]:
    """``"prompt=question,response=answer"`` -> ``{"prompt": "question", "response": "answer"}``.

    Keys are our names (``id``, ``messages``, ``prompt``, ``instruction``, ``input``, ``response``,
    ``system``; ``text`` for plain-text sources); values are the source's column names.
    """
    if not text:
        return {}
    if isinstance(text, dict):
        pairs = dict(text)
    else:
        pairs = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise SelfGenError(f"bad column mapping {part!r}; expected OURS=THEIRS, e.g. prompt=question")
            pairs[key.strip()] = value.strip()
    valid = ("id", "messages", "prompt", "instruction", "input", "response", "system", "text")
    bad = [k for k in pairs if k not in valid]
    if bad:
        raise SelfGenError(f"unknown column role(s) {bad} in the mapping; valid: {', '.join(valid)}")
    return pairs


def _row_to_prompt(row: dict[str, Any], index: int, cols: dict[str, str], system: str | None) -> Prompt:
    def col(name: str) -> str:
        return cols.get(name, name)

    rid = row.get(col("id"))
    pid = str(rid) if rid not in (None, "") else f"row-{index:06d}"
    reference = None
    messages: list[dict[str, str]]
    if col("messages") in row and row[col("messages")]:
        msgs = row[col("messages")]
        if isinstance(msgs, str):
            msgs = json.loads(msgs)
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
        if msgs and msgs[-1]["role"] == "assistant":
            reference = msgs[-1]["content"]
            msgs = msgs[:-1]
        if not msgs or msgs[-1]["role"] != "user":
            raise SelfGenError(f"row {index}: 'messages' must end with a user turn (optionally then an assistant one)")
        messages = msgs
    elif col("instruction") in row:
        instruction = str(row[col("instruction")] or "").strip()
        extra = str(row.get(col("input")) or "").strip()
        messages = [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction}]
        reference = row.get(col("response")) if col("response") in row else row.get("output")
    elif col("prompt") in row:
        prompt = row[col("prompt")]
        if isinstance(prompt, list):  # TRL's conversational prompt column
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        else:
            messages = [{"role": "user", "content": str(prompt)}]
        for name in [col("response")] if "response" in cols else list(_RESPONSE_COLUMNS):
            if name in row and row[name] not in (None, ""):
                value = row[name]
                reference = value[-1]["content"] if isinstance(value, list) else str(value)
                break
    else:
        raise SelfGenError(
            f"row {index} has columns {sorted(row)}: expected 'messages' (chat), 'instruction'/'input'/'output' "
            "(Alpaca) or 'prompt' (plain); map yours with --columns, e.g. prompt=question,response=answer"
        )
    sys_text = row.get(cols["system"]) if "system" in cols else None
    sys_text = sys_text or system
    if sys_text and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": str(sys_text)}, *messages]
    if not any(m["content"].strip() for m in messages if m["role"] == "user"):
        raise SelfGenError(f"row {index} (id {pid}) has an empty prompt")
    return Prompt(pid, messages, None if reference in (None, "") else str(reference))


def load_prompts(
    source: str,
    *,
    columns: str | dict[str, str] | None = None,
    split: str = "train",
    subset: str | None = None,
    n: int | None = None,
    system: str | None = None,
) -> list[Prompt]:
    """Read prompts from ``source``: ``"bundled"`` or ``"mixed"`` (:mod:`.prompts`), a local
    .jsonl/.json/.csv/.tsv/.parquet file, or a Hub dataset id (``subset``: its config name).

    Chat (``messages``), Alpaca (``instruction``/``input``/``output``) and plain (``prompt`` with an
    optional ``response``/``completion``/``output``/``answer``) rows are understood; ``columns`` maps
    other column names (see :func:`parse_columns`). ``n`` keeps the first ``n`` prompts.
    """
    cols = parse_columns(columns)
    if n is not None and n < 1:
        raise SelfGenError(f"n must be at least 1, got {n}")
    if source in BUILTIN_TEXTS:
        raise SelfGenError(
            f"{source!r} is plain text for continued pretraining (method: cpt), not prompts; prompt sources: "
            f"{', '.join(BUILTIN_SETS)}, a .jsonl/.json/.csv/.tsv/.parquet file or a Hub dataset id"
        )
    rows = BUILTIN_SETS[source]() if source in BUILTIN_SETS else _read_rows(source, split, subset)
    if not rows:
        raise SelfGenError(f"prompt source {source!r} is empty")
    prompts = [_row_to_prompt(row, i, cols, system) for i, row in enumerate(rows[: n or None])]
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SelfGenError(f"prompt source {source!r} has duplicate id {dup!r}; ids must be unique")
    return prompts


def _paragraphs(path: Path, source: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SelfGenError(f"text file {source} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [" ".join(block.split()) for block in text.split("\n\n") if block.strip()]


def load_texts(
    source: str,
    *,
    columns: str | dict[str, str] | None = None,
    split: str = "train",
    subset: str | None = None,
    n: int | None = None,
) -> list[str]:
    """The documents of a plain-text source, for continued pretraining (empty ones left out).

    ``source``: ``"corpus"`` (bundled, offline), a local ``.txt`` file (one document per paragraph),
    a local .jsonl/.json/.csv/.tsv/.parquet file or a Hub dataset id with a ``text`` column (or the
    column ``columns`` maps to ``text``, e.g. ``text=body``). ``n`` keeps the first ``n`` documents.
    """
    cols = parse_columns(columns)
    if n is not None and n < 1:
        raise SelfGenError(f"n must be at least 1, got {n}")
    if source in BUILTIN_SETS:
        raise SelfGenError(
            f"{source!r} is a prompt set, not plain text; continued pretraining reads {', '.join(BUILTIN_TEXTS)} "
            "(bundled), a .txt file, a .jsonl/.json/.csv/.tsv/.parquet file with a text column, or a Hub dataset id"
        )
    path = Path(source).expanduser()
    if source in BUILTIN_TEXTS:
        docs = BUILTIN_TEXTS[source]()
    elif path.suffix.lower() == ".txt" and path.is_file():
        docs = _paragraphs(path, source)
    else:
        rows = _read_rows(source, split, subset, what="text")
        name = cols.get("text", "text")
        if rows and name not in rows[0]:
            raise SelfGenError(
                f"text source {source!r} has columns {sorted(rows[0])}, no {name!r}; "
                "name the column that holds the text with columns: text=NAME (--columns text=NAME)"
            )
        docs = [str(r[name]).strip() for r in rows if r.get(name) is not None]
    docs = [d for d in docs if d.strip()][: n or None]
    if not docs:
        raise SelfGenError(f"text source {source!r} holds no text")
    return docs
