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

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.fsutil import file_lock
from lmeval_layerprune.core.guard import check_causal_lm, check_weights, guard_output
from lmeval_layerprune.core.journal import (
    RunManifest,
    append_jsonl,
    describe_diff,
    read_jsonl,
    repair_torn_tail,
    torn_fragment,
)
from lmeval_layerprune.core.layout import META_SUFFIX
from lmeval_layerprune.errors import SelfGenError
from lmeval_layerprune.heal.prompts import BUILTIN_SETS, BUNDLED_NAME

logger = logging.getLogger(__name__)

FILTERS = ("truncated", "empty", "degenerate", "overlength")

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


@dataclass
class Prompt:
    """One training prompt: a stable id, the chat messages up to the assistant turn, and the
    source's own response (``None`` when the source has none)."""

    id: str
    messages: list[dict[str, str]]
    reference: str | None = None


@dataclass
class GenerationSettings:
    """Sampling settings (defaults: the paper's, temperature 0.9, top-p 0.95).

    ``temperature`` 0 means greedy decoding. Sampling is seeded per item, from ``seed`` and the
    prompt's id (:func:`item_seed`), so a resumed run, or one with another ``batch_size``, draws the
    same responses as an uninterrupted one.
    """

    max_new_tokens: int = 512
    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16
    system: str | None = None


@dataclass
class FilterSettings:
    """Which generated responses are marked unusable for training.

    ``filters`` names the active ones among ``truncated`` (hit ``max_new_tokens``), ``empty``,
    ``degenerate`` (Rep-4 over ``max_repetition``: the share of repeated token 4-grams) and
    ``overlength`` (prompt plus response over ``max_length`` tokens; off when ``max_length`` is None).
    """

    filters: tuple[str, ...] = FILTERS
    max_repetition: float = 0.5
    max_length: int | None = None

    def __post_init__(self) -> None:
        self.filters = tuple(self.filters)
        bad = [f for f in self.filters if f not in FILTERS]
        if bad:
            raise SelfGenError(f"unknown filter(s) {bad}; valid: {', '.join(FILTERS)}")


# ------------------------------------------------------------------- prompts

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


def _read_rows(source: str, split: str) -> list[dict[str, Any]]:
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path, source)
    known = tuple(_BUILDERS)
    if path.suffix.lower() in known or source.startswith((".", "/", "~")) or path.exists():
        raise SelfGenError(f"prompt file {source!r} does not exist (or is not a file)")
    import datasets

    try:
        return datasets.load_dataset(source, split=split).to_list()
    except Exception as e:  # noqa: BLE001 - re-raised with what to do
        raise SelfGenError(
            f"could not load the Hub dataset {source!r} (split {split!r}): {e}. Offline, use a local "
            f"file, --prompts {BUNDLED_NAME} or --prompts mixed"
        ) from e


def parse_columns(text: str | dict[str, str] | None) -> dict[str, str]:
    """``"prompt=question,response=answer"`` -> ``{"prompt": "question", "response": "answer"}``.

    Keys are our names (``id``, ``messages``, ``prompt``, ``instruction``, ``input``, ``response``,
    ``system``); values are the source's column names.
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
    valid = ("id", "messages", "prompt", "instruction", "input", "response", "system")
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
    n: int | None = None,
    system: str | None = None,
) -> list[Prompt]:
    """Read prompts from ``source``: ``"bundled"`` or ``"mixed"`` (:mod:`.prompt_set`), a local
    .jsonl/.json/.csv/.tsv/.parquet file, or a Hub dataset id.

    Chat (``messages``), Alpaca (``instruction``/``input``/``output``) and plain (``prompt`` with an
    optional ``response``/``completion``/``output``/``answer``) rows are understood; ``columns`` maps
    other column names (see :func:`parse_columns`). ``n`` keeps the first ``n`` prompts.
    """
    cols = parse_columns(columns)
    if n is not None and n < 1:
        raise SelfGenError(f"n must be at least 1, got {n}")
    rows = BUILTIN_SETS[source]() if source in BUILTIN_SETS else _read_rows(source, split)
    if not rows:
        raise SelfGenError(f"prompt source {source!r} is empty")
    prompts = [_row_to_prompt(row, i, cols, system) for i, row in enumerate(rows[: n or None])]
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SelfGenError(f"prompt source {source!r} has duplicate id {dup!r}; ids must be unique")
    return prompts


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
    from lmeval_layerprune.probes.degeneration import ngram_repetition

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


# ------------------------------------------------------------------ backends


def _eos_ids(tokenizer: Any, model_eos: Any) -> list[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if isinstance(model_eos, int):
        ids.add(model_eos)
    elif model_eos:
        ids.update(int(i) for i in model_eos)
    return sorted(ids)


class TransformersBackend:
    """Batched ``generate`` with left padding (the fallback when vLLM or a GPU is missing)."""

    name = "transformers"

    def __init__(self, model_path: str, tokenizer: Any, dtype: str | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype) if dtype else "auto"}
        self.model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs).to(self.device).eval()
        self.tokenizer = tokenizer
        self.eos = _eos_ids(tokenizer, self.model.generation_config.eos_token_id)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]

    def generate(
        self, batch: list[list[int]], settings: GenerationSettings, seeds: Sequence[int]
    ) -> list[tuple[list[int], str]]:
        """Completion token ids (without EOS) and finish reason (``stop``/``length``) per prompt.

        Sampling draws each row's tokens from its own generator (``seeds``, one per prompt), so a
        response does not depend on which other prompts share its batch.
        """
        import torch
        from transformers import LogitsProcessorList

        width = max(map(len, batch))
        ids = torch.tensor([[self.pad] * (width - len(b)) + b for b in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch], device=self.device)
        # greedy decoding over scores that the per-row sampler has reduced to the one token it drew
        kwargs: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if settings.temperature > 0:
            kwargs["logits_processor"] = LogitsProcessorList([_PerRowSampler(seeds, settings)])
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=settings.max_new_tokens,
                eos_token_id=self.eos,
                pad_token_id=self.pad,
                **kwargs,
            )
        results = []
        for row in out[:, width:].tolist():
            stop = next((i for i, t in enumerate(row) if t in self.eos), None)
            results.append((row, "length") if stop is None else (row[:stop], "stop"))
        return results


def item_seed(seed: int, item_id: str) -> int:
    """The sampling seed of one item: a stable hash of the run's seed and the item's id."""
    digest = hashlib.sha256(f"{int(seed)}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


class _PerRowSampler:
    """A logits processor that samples each row with its own seeded generator (temperature, top-k, top-p)
    and leaves only the drawn token possible, so greedy decoding emits exactly it."""

    def __init__(self, seeds: Sequence[int], settings: GenerationSettings) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.settings = settings

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        s = self.settings
        logits = scores.double() / s.temperature
        if s.top_k and s.top_k > 0:
            kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if s.top_p < 1.0:  # keep the smallest set of most likely tokens whose mass reaches top_p
            sorted_p, order = torch.sort(probs, descending=True, dim=-1)
            before = sorted_p.cumsum(-1) - sorted_p
            sorted_p = sorted_p.masked_fill(before >= s.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            cdf = probs[row].cpu().cumsum(0)
            u = torch.rand((), generator=gen, dtype=torch.float64) * cdf[-1]
            token = int(torch.searchsorted(cdf, u.reshape(1), right=True).clamp(max=cdf.numel() - 1))
            out[row, token] = 0.0
        return out


class VLLMBackend:
    """vLLM offline inference on token-id prompts (so the chat template's BOS is never doubled)."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer: Any, dtype: str | None = None, **engine_kwargs: Any) -> None:
        from vllm import LLM

        self.llm = LLM(model=model_path, dtype=dtype or "auto", **engine_kwargs)
        self.tokenizer = tokenizer

    def generate(
        self, batch: list[list[int]], settings: GenerationSettings, seeds: Sequence[int]
    ) -> list[tuple[list[int], str]]:
        """Completion token ids and finish reason per prompt (each prompt sampled with its own seed)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                temperature=settings.temperature,
                top_p=settings.top_p if settings.temperature > 0 else 1.0,
                top_k=settings.top_k if settings.top_k > 0 else -1,
                max_tokens=settings.max_new_tokens,
                seed=seed,
            )
            for seed in seeds
        ]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=b) for b in batch], params, use_tqdm=False)
        return [
            (list(o.outputs[0].token_ids), "length" if o.outputs[0].finish_reason == "length" else "stop") for o in outs
        ]


def pick_backend(backend: str) -> str:
    """``auto`` -> ``vllm`` when vLLM is installed and CUDA is available, else ``transformers``."""
    import importlib.util

    if backend not in ("auto", "vllm", "transformers"):
        raise SelfGenError(f"unknown backend {backend!r}; valid: auto, vllm, transformers")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "vllm" and not has_vllm:
        raise SelfGenError("backend 'vllm' needs vLLM: pip install 'lmeval-layerprune[vllm]'")
    if backend != "auto":
        return backend
    import torch

    return "vllm" if has_vllm and torch.cuda.is_available() else "transformers"


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
        return False
    if not manifest.path.is_file():
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


def _meta(teacher: str, gen: GenerationSettings, flt: FilterSettings, source: str | None) -> dict[str, Any]:
    from lmeval_layerprune.core.embedded import base_model_name

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


def generate_responses(
    teacher: str,
    prompts: Sequence[Prompt],
    out: str | Path,
    *,
    generation: GenerationSettings | None = None,
    filters: FilterSettings | None = None,
    source: str | None = None,
    backend: str = "auto",
    dtype: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Have ``teacher`` answer every prompt that ``out`` has no record of yet, appending records.

    Everything is checked before anything is written or generated: ``out`` must not be an input, and
    an existing ``out`` must be a selfgen file of this tool with the same settings (see
    :func:`check_output`). Returns a summary: ``total``, ``generated`` (this call), ``kept``,
    ``filtered`` (per reason), ``out``.
    """
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from lmeval_layerprune.core.embedded import resolve_pretrained

    gen = generation or GenerationSettings()
    flt = filters or FilterSettings()
    if gen.max_new_tokens < 1 or gen.batch_size < 1:
        raise SelfGenError("max_new_tokens and batch_size must be at least 1")
    if gen.temperature < 0 or not 0 < gen.top_p <= 1 or gen.top_k < 0:
        raise SelfGenError(
            f"bad sampling settings temperature={gen.temperature}, top_p={gen.top_p}, top_k={gen.top_k}; "
            "expected temperature >= 0 (0: greedy), 0 < top_p <= 1, top_k >= 0 (0: off)"
        )
    out = Path(out)
    model_path = str(resolve_pretrained(teacher))
    meta = _meta(teacher, gen, flt, source)
    inputs = [model_path, source if source and Path(source).expanduser().exists() else None]
    check_output(out, meta, prompts, inputs)  # before the lock file or anything else appears
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.with_name(out.name + ".lock")):
        existed = check_output(out, meta, prompts, inputs)  # again, under the lock
        done = {r["id"]: r for r in read_records(out, repair=True)} if existed else {}
        by_id = {p.id: p for p in prompts}
        todo = [p for p in prompts if p.id not in done]
        used_backend = pick_backend(backend) if todo else "none"
        manifest = _manifest(out, {**meta, "backend": used_backend, "seeding": SEEDING})
        if not existed:
            _check_teacher(model_path, teacher)
            manifest.write()
        if todo:
            if existed:
                _check_teacher(model_path, teacher)
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            ensure_chat_template(tokenizer)
            engine: Any
            if used_backend == "vllm":
                engine = VLLMBackend(model_path, tokenizer, dtype=dtype)
            else:
                engine = TransformersBackend(model_path, tokenizer, dtype=dtype, device=device)
            bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="selfgen", disable=not progress)
            for start in range(0, len(todo), gen.batch_size):
                chunk = todo[start : start + gen.batch_size]
                encoded = [encode_prompt(tokenizer, p.messages) for p in chunk]
                results = engine.generate(encoded, gen, seeds=[item_seed(gen.seed, p.id) for p in chunk])
                recs = []
                for p, ids, (completion, finish) in zip(chunk, encoded, results, strict=True):
                    text = tokenizer.decode(completion, skip_special_tokens=True).strip()
                    reason = filter_reason(text, finish, len(ids), completion, flt)
                    recs.append(
                        {
                            "id": p.id,
                            "prompt": p.messages,
                            "response": text,
                            "finish_reason": finish,
                            "prompt_tokens": len(ids),
                            "completion_tokens": len(completion),
                            "rep4": round(rep_n(completion), 4),
                            "filtered": reason,
                            "reference": p.reference,
                            "prompt_hash": _prompt_hash(p.messages),
                        }
                    )
                append_jsonl(out, recs)  # one write + fsync per batch
                bar.update(len(chunk))
            bar.close()
        records = read_records(out)
    wanted = set(by_id)
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
