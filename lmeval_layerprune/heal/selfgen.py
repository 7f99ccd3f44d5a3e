"""Self-generated responses: the unpruned parent answers a set of prompts (``lmeval-prune selfgen``).

The output is a JSONL file with one record per prompt::

    {"id": ..., "prompt": [{"role": "user", "content": ...}], "response": ..., "finish_reason": "stop"|"length",
     "prompt_tokens": int, "completion_tokens": int, "filtered": null|"truncated"|"empty"|"degenerate"|"overlength",
     "rep4": float, "reference": <the source's own response or null>}

and a sidecar ``<out>.meta.json`` with the teacher, the source, the backend and the sampling and
filter settings. Filtered records stay in the file (so a restart knows they are done); training
skips them.

The file is append-only and resumable: records are appended batch by batch, each batch in one
``write`` followed by ``fsync``; a restart drops a half-written last line and generates only the
prompts that have no record yet, so a run killed at any point and started again ends with every
prompt exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.fsutil import file_lock
from lmeval_layerprune.core.guard import check_causal_lm, check_weights, guard_output
from lmeval_layerprune.core.interrupt import keeping
from lmeval_layerprune.core.journal import (
    RunManifest,
    append_jsonl,
    describe_diff,
    read_jsonl,
    repair_torn_tail,
    torn_fragment,
)
from lmeval_layerprune.core.layout import LOCK_SUFFIX, META_SUFFIX
from lmeval_layerprune.errors import SelfGenError
from lmeval_layerprune.heal.backends import TransformersBackend, VLLMBackend, item_seed, pick_backend
from lmeval_layerprune.heal.settings import FILTERS, FilterSettings, GenerationSettings, SelfgenSettings
from lmeval_layerprune.heal.sources import Prompt, load_prompts, parse_columns
from lmeval_layerprune.probes.degeneration import ngram_repetition

logger = logging.getLogger(__name__)

#: Used when a tokenizer has no chat template: an Alpaca-style layout (documented in recovery/README.md).
FALLBACK_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)


# ------------------------------------------------------------- tokenization


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give ``tokenizer`` :data:`FALLBACK_CHAT_TEMPLATE` if it has no chat template; True if it did."""
    if getattr(tokenizer, "chat_template", None):
        return False
    logger.warning("the tokenizer has no chat template; using the Alpaca-style fallback (### Instruction / Response)")
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def encode_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` rendered with the chat template and the generation prompt.

    Tokenized by ``apply_chat_template`` itself, which adds no special tokens beyond those the
    template writes, so a template that starts with the BOS token yields exactly one BOS.
    """
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True, return_dict=True)
    return list(out["input_ids"])


def rep_n(ids: Sequence[int], n: int = 4) -> float:
    """Rep-n over token ids (the degeneration filter): the probes' :func:`ngram_repetition`."""
    return ngram_repetition(ids, n)


def filter_reason(
    response: str, finish_reason: str, prompt_tokens: int, completion_ids: Sequence[int], settings: FilterSettings
) -> str | None:
    """The first active filter that ``response`` fails, or None."""
    active = set(settings.filters)
    if "empty" in active and not response.strip():
        return "empty"
    if "truncated" in active and finish_reason == "length":
        return "truncated"
    if "degenerate" in active and rep_n(completion_ids) > settings.max_repetition:
        return "degenerate"
    if "overlength" in active and settings.max_length and prompt_tokens + len(completion_ids) > settings.max_length:
        return "overlength"
    return None


# ------------------------------------------------------------------- output


#: Keys every record of a selfgen file has (how a file is recognised as one).
RECORD_KEYS = ("id", "response", "finish_reason")
#: Generation settings whose change does not change any response (sampling is seeded per item).
_UNCOMPARED_GENERATION = ("batch_size",)
SEEDING = "per-item"


def read_records(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The complete records of a selfgen JSONL file.

    A last line without its newline is what a killed writer leaves; it is ignored. ``repair`` cuts it
    off, but only once every complete line has proven to be a selfgen record (a file that is not one
    is refused and left as it is).
    """
    path = Path(path)
    records, torn = read_jsonl(path, what="selfgen file")
    bad = next((i for i, r in enumerate(records, 1) if any(k not in r for k in RECORD_KEYS)), None)
    if bad is not None:
        lacks = ", ".join(k for k in RECORD_KEYS if k not in records[bad - 1])
        raise SelfGenError(f"{path} is not a selfgen file: line {bad} lacks {lacks}; name another --out (or --data)")
    if torn and repair:
        logger.warning("%s: dropping a half-written last record (%d bytes)", path, torn)
        if repair:
            if not records and not torn_fragment(path).startswith(b'{"id": '):
                raise SelfGenError(f"{path} is not a selfgen file (its only line is not a record); name another --out")
            repair_torn_tail(path)
    return records


def is_selfgen_file(path: str | Path) -> bool:
    """True if ``path`` is a JSONL file written by :func:`generate_responses`."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".jsonl"):
        return False
    with open(p, "rb") as fh:
        first = fh.readline()
    try:
        rec = json.loads(first.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(rec, dict) and "response" in rec and "finish_reason" in rec


def _prompt_hash(messages: Sequence[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()[:16]


def _manifest(out: Path, meta: dict[str, Any]) -> RunManifest:
    """The run manifest of a selfgen file: teacher, source and the settings that change responses."""
    gen = {k: v for k, v in meta["generation"].items() if k not in _UNCOMPARED_GENERATION}
    settings = {"teacher": meta["teacher"], "source": meta["source"], "generation": gen}
    if meta["generation"].get("temperature", 0) > 0:
        settings["seeding"] = SEEDING
    extra = {k: v for k, v in meta.items() if k not in settings}
    extra["batch_size"] = meta["generation"].get("batch_size")
    return RunManifest(out.with_name(out.name + META_SUFFIX), "selfgen", settings, extra=extra)


def check_output(out: Path, meta: dict[str, Any], prompts: Sequence[Prompt], inputs: Sequence[Any] = ()) -> bool:
    """Prove that ``out`` may be written by this run, changing nothing; True when it already holds records.

    Refused (:class:`SelfGenError` / :class:`~lmeval_layerprune.core.guard.OutputError`): ``out`` is an input,
    a file that is not a selfgen file of this tool, one started with other settings (named, old and new),
    or one holding records of other prompts.
    """
    guard_output(out, inputs=inputs, what="output file")
    if out.is_dir():
        raise SelfGenError(f"--out {out} is a folder; name a .jsonl file")
    manifest = _manifest(out, meta)
    if not out.exists() or out.stat().st_size == 0:
        if out.exists() and not manifest.is_mine(manifest.path):  # an empty file this tool did not start
            raise SelfGenError(
                f"--out {out} exists (empty) and has no {manifest.path.name} of this tool's beside it, so this tool "
                "did not create it; refusing to write into it, --overwrite or not: remove it, or name another --out"
            )
        manifest.check_writable()  # a user's file named like the sidecar is never replaced
        return False
    if not manifest.path.is_file() or manifest.path.is_symlink():
        raise SelfGenError(
            f"--out {out} exists but has no {manifest.path.name} beside it, so it is not a selfgen output of this "
            "tool; refusing to append to it. Name another --out"
        )
    records = read_records(out)  # refuses a file that is not a selfgen file, without changing it
    old = manifest.load() or {}
    if "seeding" not in old and old.get("generation", {}).get("temperature", 0) > 0:
        old["seeding"] = "per-batch (older version)"
    if old.get("generation"):
        old["generation"] = {k: v for k, v in old["generation"].items() if k not in _UNCOMPARED_GENERATION}
    diff = manifest.differences(old)
    if diff:
        raise SelfGenError(
            f"{out} was started with other settings ({describe_diff(diff)}); rerun with the same settings to resume "
            "it, or name another --out (or delete it and its .meta.json) to start over"
        )
    by_id = {p.id: p for p in prompts}
    for rec in records:
        pid = rec["id"]
        if pid in by_id and rec.get("prompt_hash") != _prompt_hash(by_id[pid].messages):
            raise SelfGenError(
                f"{out}: the record of prompt {pid!r} was made from a different prompt; "
                "the file belongs to another prompt source (use another --out)"
            )
    return True


def kept_responses(out: Path, prompts: Sequence[Prompt]) -> str:
    """What an interrupted run has kept (read from ``out`` when the interrupt comes), for the one line on Ctrl-C."""
    wanted = {p.id for p in prompts}
    try:
        records, _ = read_jsonl(out, what="selfgen file") if out.is_file() else ([], 0)
    except Exception:  # noqa: BLE001 - only words for the interrupt line
        records = []
    n = len({r.get("id") for r in records if r.get("id") in wanted})
    if not n:
        return f"no response was written yet ({out} holds none of these prompts)"
    return f"{n} of {len(wanted)} responses kept in {out}"


def _meta(teacher: str, gen: GenerationSettings, flt: FilterSettings, source: str | None) -> dict[str, Any]:
    return {
        "teacher": base_model_name(teacher) or teacher,
        "source": source,
        "generation": dataclasses.asdict(gen),
        "filters": dataclasses.asdict(flt) | {"filters": list(flt.filters)},
    }


def _check_teacher(model_path: str, teacher: str) -> None:
    """Refuse a teacher that cannot generate (encoder-only, encoder-decoder) or whose weights are unreadable."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as e:
        raise SelfGenError(f"teacher {teacher!r}: cannot read its config ({str(e).splitlines()[0]})") from None
    check_causal_lm(config, role="teacher", name=teacher)
    check_weights(model_path)


def _check_sampling(gen: GenerationSettings) -> None:
    if gen.max_new_tokens < 1 or gen.batch_size < 1:
        raise SelfGenError("max_new_tokens and batch_size must be at least 1")
    if gen.temperature < 0 or not 0 < gen.top_p <= 1 or gen.top_k < 0:
        raise SelfGenError(
            f"bad sampling settings temperature={gen.temperature}, top_p={gen.top_p}, top_k={gen.top_k}; "
            "expected temperature >= 0 (0: greedy), 0 < top_p <= 1, top_k >= 0 (0: off)"
        )


def _record(p: Prompt, ids: list[int], completion: list[int], finish: str, text: str, flt: FilterSettings) -> dict:
    return {
        "id": p.id,
        "prompt": p.messages,
        "response": text,
        "finish_reason": finish,
        "prompt_tokens": len(ids),
        "completion_tokens": len(completion),
        "rep4": round(rep_n(completion), 4),
        "filtered": filter_reason(text, finish, len(ids), completion, flt),
        "reference": p.reference,
        "prompt_hash": _prompt_hash(p.messages),
    }


def _generate(settings: SelfgenSettings, model_path: str, backend: str, todo: list[Prompt], done: int) -> None:
    """Generate the records of ``todo`` and append them to ``settings.out``, one write + fsync per batch."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    gen, out = settings.generation, Path(settings.out)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ensure_chat_template(tokenizer)
    engine: Any
    if backend == "vllm":
        engine = VLLMBackend(model_path, tokenizer, dtype=settings.dtype)
    else:
        engine = TransformersBackend(model_path, tokenizer, dtype=settings.dtype, device=settings.device)
    bar = tqdm(total=done + len(todo), initial=done, desc="selfgen", disable=not settings.progress)
    for start in range(0, len(todo), gen.batch_size):
        chunk = todo[start : start + gen.batch_size]
        encoded = [encode_prompt(tokenizer, p.messages) for p in chunk]
        results = engine.generate(encoded, gen, seeds=[item_seed(gen.seed, p.id) for p in chunk])
        recs = [
            _record(
                p,
                ids,
                completion,
                finish,
                tokenizer.decode(completion, skip_special_tokens=True).strip(),
                settings.filters,
            )  # fmt: skip
            for p, ids, (completion, finish) in zip(chunk, encoded, results, strict=True)
        ]
        append_jsonl(out, recs)
        bar.update(len(chunk))
    bar.close()


def generate_responses(settings: SelfgenSettings, prompts: Sequence[Prompt]) -> dict[str, Any]:
    """Have ``settings.teacher`` answer every prompt that ``settings.out`` has no record of yet, appending records.

    Everything is checked before anything is written or generated: the output must not be an input, and
    an existing output must be a selfgen file of this tool with the same settings (see
    :func:`check_output`). Returns a summary: ``total``, ``generated`` (this call), ``kept``,
    ``filtered`` (per reason), ``out``, ``backend``.
    """
    gen, flt, source = settings.generation, settings.filters, settings.source
    _check_sampling(gen)
    out = Path(settings.out)
    model_path = str(resolve_pretrained(settings.teacher))
    meta = _meta(settings.teacher, gen, flt, source)
    inputs = [model_path, source if source and Path(source).expanduser().exists() else None]
    check_output(out, meta, prompts, inputs)  # before the lock file or anything else appears
    out.parent.mkdir(parents=True, exist_ok=True)
    with keeping(lambda: kept_responses(out, prompts)), file_lock(out.with_name(out.name + LOCK_SUFFIX)):
        existed = check_output(out, meta, prompts, inputs)  # again, under the lock
        done = {r["id"]: r for r in read_records(out, repair=True)} if existed else {}
        todo = [p for p in prompts if p.id not in done]
        used_backend = pick_backend(settings.backend) if todo else "none"
        manifest = _manifest(out, {**meta, "backend": used_backend, "seeding": SEEDING})
        if not existed or todo:
            _check_teacher(model_path, settings.teacher)
        if not existed:
            manifest.write()
        if todo:
            _generate(settings, model_path, used_backend, todo, len(prompts) - len(todo))
        records = read_records(out)
    wanted = {p.id for p in prompts}
    mine = [r for r in records if r["id"] in wanted]
    reasons: dict[str, int] = {}
    for r in mine:
        if r.get("filtered"):
            reasons[r["filtered"]] = reasons.get(r["filtered"], 0) + 1
    return {
        "out": str(out),
        "total": len(mine),
        "generated": len(todo),
        "kept": sum(1 for r in mine if not r.get("filtered")),
        "filtered": reasons,
        "backend": used_backend,
    }


def training_pairs(records: Iterable[dict[str, Any]], *, use: str = "response") -> list[dict[str, Any]]:
    """Conversational prompt-completion rows for TRL from selfgen records (filtered ones skipped).

    ``use="response"`` trains on the teacher's answer, ``use="reference"`` on the source's own.
    """
    rows = []
    for r in records:
        if use == "response" and r.get("filtered"):
            continue
        text = r.get(use)
        if not text:
            continue
        rows.append({"prompt": r["prompt"], "completion": [{"role": "assistant", "content": text}]})
    return rows


__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "FILTERS",
    "FilterSettings",
    "GenerationSettings",
    "Prompt",
    "SelfgenSettings",
    "check_output",
    "encode_prompt",
    "ensure_chat_template",
    "filter_reason",
    "generate_responses",
    "is_selfgen_file",
    "load_prompts",
    "parse_columns",
    "read_records",
    "rep_n",
    "training_pairs",
]
