"""A pruned model as its parent's draft (self-speculative decoding), and token agreement.

The drafter is the *same* model with some layers skipped: :func:`build_drafter` returns a second
``*ForCausalLM`` object whose embedding, final norm, head, rotary tables and kept decoder layers
are the verifier's own modules (no parameter is copied: :func:`shared_storage` checks the storage
pointers). Each kept layer is wrapped in :class:`_DraftLayer`, which gives the layer its draft
index (``layer_idx``) for the duration of its forward, so the drafter keeps its own, shorter KV
cache while the verifier keeps its full one. transformers' assisted generation
(``generate(assistant_model=drafter)``) drafts with it and verifies with the full model, so the
greedy output is the full model's greedy output.

Greedy acceptance is a function of teacher-forced agreement: every accepted draft token is a token
of the verifier's greedy output, so when the drafter proposes position ``t`` it has seen exactly the
verifier's greedy prefix, and it proposes the verifier's token iff its top-1 prediction on that
prefix agrees. :func:`token_agreement` measures that agreement with one forward per response;
:func:`simulate_acceptance` turns it into verification steps and accepted tokens for a draft
length (exact for the constant draft length that :func:`assisted_generate` uses), which is how
``--search`` scores candidates without generating.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.layout import SPECULATE_FILE, SPECULATE_PLOT
from lmeval_layerprune.core.slicing import layer_subset
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import DraftError
from lmeval_layerprune.lmeval.draft import (
    DEFAULT_DRAFT_TOKENS,
    base_causal_lm,
    build_drafter,
    resolve_draft,
    shared_storage,
)
from lmeval_layerprune.methods.capture import Calibration

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ generation


@dataclass
class DraftStats:
    """What one (or several, summed) assisted generation(s) did."""

    new_tokens: int = 0  # tokens generated (the verifier's greedy output)
    steps: int = 0  # verification forwards of the full model
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens the verifier kept
    seconds: float = 0.0

    def __add__(self, other: DraftStats) -> DraftStats:
        return DraftStats(*(a + b for a, b in zip(astuple_(self), astuple_(other), strict=True)))

    @property
    def accepted_per_step(self) -> float:
        return self.accepted / self.steps if self.steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Share of the proposed draft tokens that were accepted."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def drafted_share(self) -> float:
        """Share of the generated tokens that came from the draft."""
        return self.accepted / self.new_tokens if self.new_tokens else 0.0

    def to_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(
            accepted_per_step=self.accepted_per_step,
            acceptance_rate=self.acceptance_rate,
            drafted_share=self.drafted_share,
        )
        return d


def astuple_(s: DraftStats) -> tuple[float, ...]:
    return (s.new_tokens, s.steps, s.drafted, s.accepted, s.seconds)


@contextmanager
def _counting(verifier: torch.nn.Module, drafter: torch.nn.Module) -> Iterator[dict[str, int]]:
    counts = {"steps": 0, "drafted": 0}

    def pre(_m: torch.nn.Module, _args: Any) -> None:
        counts["steps"] += 1

    original = drafter.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        given = kwargs.get("input_ids", args[0] if args else None)
        counts["drafted"] += int(out.sequences.shape[1] - given.shape[1])
        return out

    handle = base_causal_lm(verifier).register_forward_pre_hook(pre)
    drafter.generate = generate
    try:
        yield counts
    finally:
        handle.remove()
        del drafter.generate


def _eos(model: torch.nn.Module, tokenizer: Any) -> Any:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    return eos


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int, tokenizer: Any = None
) -> tuple[list[int], float]:
    """Plain greedy decoding of one prompt: the new token ids and the seconds it took."""
    ids = input_ids.to(model.device)
    t0 = time.perf_counter()
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=_eos(model, tokenizer),
        pad_token_id=getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None,
    )
    return out[0, ids.shape[1] :].tolist(), time.perf_counter() - t0


@torch.no_grad()
def assisted_generate(
    model: torch.nn.Module,
    drafter: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    tokenizer: Any = None,
) -> tuple[list[int], DraftStats]:
    """Greedy decoding of one prompt with ``drafter`` drafting: new token ids and :class:`DraftStats`."""
    ids = input_ids.to(model.device)
    if ids.shape[0] != 1:
        raise DraftError(f"assisted generation decodes one prompt at a time; got a batch of {ids.shape[0]}")
    with _counting(model, drafter) as counts:
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            assistant_model=drafter,
            eos_token_id=_eos(model, tokenizer),
            pad_token_id=getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None,
        )
        seconds = time.perf_counter() - t0
    new = out[0, ids.shape[1] :].tolist()
    stats = DraftStats(
        new_tokens=len(new),
        steps=counts["steps"],
        drafted=counts["drafted"],
        accepted=len(new) - counts["steps"],
        seconds=seconds,
    )
    return new, stats


# ------------------------------------------------------------- token agreement


@dataclass
class TokenAgreement:
    """Teacher-forced agreement of a model with reference (parent greedy) tokens."""

    agreement: float  # matched / tokens
    matched: int
    tokens: int
    per_response: list[float] = field(default_factory=list)
    #: per response, whether the model's top-1 equals the reference token, position by position
    hits: list[list[bool]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agreement": self.agreement,
            "matched": self.matched,
            "tokens": self.tokens,
            "per_response": self.per_response,
        }


def _as_ids(tokenizer: Any, item: str | Sequence[int]) -> list[int]:
    if isinstance(item, str):
        return list(tokenizer(item, add_special_tokens=False)["input_ids"])
    return [int(t) for t in item]


@torch.no_grad()
def token_agreement(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[int]],
    responses: Sequence[str | Sequence[int]] | None = None,
    *,
    parent: torch.nn.Module | None = None,
    drop: Sequence[int] | None = None,
    max_new_tokens: int = 64,
    progress: bool = False,
) -> TokenAgreement:
    """Share of the parent's greedy tokens that ``model`` predicts as its top-1 when fed the parent's text.

    Args:
        model: the model to score (a pruned model, or the parent itself with ``drop``).
        tokenizer: the tokenizer of both models (strings are tokenized without special tokens;
            pass token ids to control tokenization exactly, e.g. chat-templated prompts).
        prompts: prompt texts or token ids.
        responses: the parent's greedy continuation of each prompt (texts or token ids). If omitted,
            ``parent`` (default: ``model`` itself, before ``drop`` is applied) generates them greedily
            with ``max_new_tokens``.
        parent: the unpruned parent, used only to generate missing ``responses``.
        drop: layers of ``model`` to skip while scoring (in place, restored after; no copy), so one
            loaded model can score several ratios.
        max_new_tokens: length of generated responses.
        progress: show a progress bar.

    Returns:
        :class:`TokenAgreement` (``.agreement`` is the float to report); one teacher-forced forward
        per response.
    """
    from tqdm.auto import tqdm

    prompt_ids = [_as_ids(tokenizer, p) for p in prompts]
    if responses is None:
        gen_model = parent if parent is not None else model
        responses = [
            greedy_generate(gen_model, torch.tensor([p]), max_new_tokens, tokenizer)[0]
            for p in tqdm(prompt_ids, desc="parent greedy", disable=not progress)
        ]
    if len(responses) != len(prompt_ids):
        raise ValueError(f"got {len(prompt_ids)} prompts but {len(responses)} responses")
    response_ids = [_as_ids(tokenizer, r) for r in responses]
    device = next(model.parameters()).device
    hits: list[list[bool]] = []
    ctx = layer_subset(model, drop) if drop else _nullcontext()
    with ctx:
        for p, r in tqdm(list(zip(prompt_ids, response_ids, strict=True)), desc="agreement", disable=not progress):
            if not r:
                hits.append([])
                continue
            if not p:
                raise ValueError("a prompt is empty; token agreement needs at least one prompt token")
            ids = torch.tensor([p + r], device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0]
            pred = logits[len(p) - 1 : len(p) + len(r) - 1].argmax(-1).tolist()
            hits.append([a == b for a, b in zip(pred, r, strict=True)])
    matched = sum(sum(h) for h in hits)
    total = sum(len(h) for h in hits)
    return TokenAgreement(
        agreement=matched / total if total else 0.0,
        matched=matched,
        tokens=total,
        per_response=[sum(h) / len(h) if h else 0.0 for h in hits],
        hits=hits,
    )


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


def simulate_acceptance(hits: Sequence[bool], draft_tokens: int, max_new_tokens: int | None = None) -> DraftStats:
    """Verification steps and accepted draft tokens that greedy assisted generation with a constant draft
    length takes on one response, from its teacher-forced ``hits`` (see the module docstring).

    ``max_new_tokens`` is the generation budget (default: the response length); it caps the draft
    length near the end as transformers does (``max_length - cur_len - 1``).
    """
    total = len(hits)
    budget = total if max_new_tokens is None else max_new_tokens
    p = steps = accepted = drafted = 0
    while p < total:
        k = max(0, min(draft_tokens, budget - p - 1))
        m = 0
        while m < k and p + m < total and hits[p + m]:
            m += 1
        m = min(m, total - 1 - p)  # past the response's end (its EOS) nothing is kept
        steps += 1
        accepted += m
        drafted += k
        p += m + 1
    return DraftStats(new_tokens=total, steps=steps, drafted=drafted, accepted=accepted)


# ------------------------------------------------------------------ prompts


def task_prompts(
    tokenizer: Any, tasks: Sequence[str], limit: int | None = None, include_path: str | None = None
) -> list[list[int]]:
    """Token ids of the ``generate_until`` contexts of lm-eval ``tasks`` (as ``pruned-hf`` would encode them)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from lmeval_layerprune.lmeval.plugin import register

    register()
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; see `lm_eval ls tasks`")
    out: list[list[int]] = []

    def leaves(d: dict) -> Iterator[Any]:
        for v in d.values():
            if isinstance(v, dict):
                yield from leaves(v)
            else:
                yield v

    for task in leaves(get_task_dict(list(tasks), manager)):
        if task is None:
            continue
        task.build_all_requests(limit=limit)
        for inst in task.instances:
            if inst.request_type == "generate_until":
                out.append(list(tokenizer(inst.arguments[0], add_special_tokens=False)["input_ids"]))
    if not out:
        raise ValueError(f"task(s) {', '.join(tasks)} have no generation requests (generate_until) to draft for")
    return out[:limit] if limit else out


def source_prompts(tokenizer: Any, source: str, limit: int | None = None) -> list[list[int]]:
    """Token ids of chat-templated prompts from a ``selfgen`` prompt source (``bundled``, a file, a Hub id)."""
    from lmeval_layerprune.heal.selfgen import encode_prompt, ensure_chat_template, load_prompts

    ensure_chat_template(tokenizer)
    return [encode_prompt(tokenizer, p.messages) for p in load_prompts(source, n=limit)]


# ------------------------------------------------------------------ search


class _MemoryJournal:
    """What :func:`lmeval_layerprune.search.select.greedy_search` needs of a journal, in memory."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, float]] = {}

    def get(self, rec_id: str) -> dict[str, float] | None:
        return self.records.get(rec_id)

    def add(self, rec_id: str, raw: dict[str, float], **_extra: Any) -> None:
        self.records[rec_id] = raw


class AcceptanceObjective:
    """Greedy-search objective: verified tokens per step of a draft skipping ``drop``, simulated exactly
    from teacher-forced agreement with the model's own greedy responses (one forward per response)."""

    higher_is_better = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        draft_tokens: int,
        max_new_tokens: int,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.prompts, self.responses = list(prompts), list(responses)
        self.draft_tokens, self.max_new_tokens = draft_tokens, max_new_tokens

    def __call__(self, drop: Sequence[int], fraction: float = 1.0) -> dict[str, float]:
        ta = token_agreement(self.model, self.tokenizer, self.prompts, self.responses, drop=list(drop) or None)
        sim = sum(
            (simulate_acceptance(h, self.draft_tokens, self.max_new_tokens) for h in ta.hits),
            DraftStats(),
        )
        return {"tokens_per_step": sim.new_tokens / sim.steps if sim.steps else 0.0}


def search_draft(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    n: int,
    *,
    draft_tokens: int = DEFAULT_DRAFT_TOKENS,
    max_new_tokens: int = 64,
    protect: Sequence[int] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Greedily choose ``n`` layers to skip for drafting, maximising simulated tokens per verification step.

    Reuses ``select``'s greedy loop (:func:`lmeval_layerprune.search.select.greedy_search`) with
    :class:`AcceptanceObjective`; returns its record (``drop``, ``order``, ``rounds``, ...).
    """
    from lmeval_layerprune.search.select import greedy_search

    objective = AcceptanceObjective(model, tokenizer, prompts, responses, draft_tokens, max_new_tokens)
    n_layers = arch_num_layers(base_causal_lm(model).config)
    return greedy_search(objective, n_layers, n, protect, _MemoryJournal(), progress=progress)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the command


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def run_speculate(
    model: str,
    drafts: Sequence[str],
    *,
    tasks: Sequence[str] | None = None,
    prompts: str | None = None,
    include_path: str | None = None,
    limit: int = 8,
    max_new_tokens: int = 64,
    draft_tokens: int = DEFAULT_DRAFT_TOKENS,
    search: int | None = None,
    rounds: int = 1,
    dtype: str = "float32",
    device: str | None = None,
    threads: int | None = None,
    calib: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure each draft spec against plain greedy decoding on the same prompts (interleaved rounds).

    Returns (and writes to ``out/speculate.json``, with ``out/speculate.png``) a record with the
    conditions and, per draft: the layers skipped, acceptance (accepted draft tokens per
    verification step, share of drafted tokens accepted, share of output tokens from the draft),
    tokens/s and speed-up against greedy, the speed-up forward counts alone allow, teacher-forced
    token agreement, and whether every output was identical to greedy.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained

    if not drafts and not search:
        raise DraftError("give at least one --draft spec or --search N")
    if tasks and prompts:
        raise DraftError("give --tasks or --prompts, not both")
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    path = str(resolve_pretrained(model))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    n_layers = arch_num_layers(lm.config)
    if tasks:
        prompt_ids = task_prompts(tokenizer, tasks, limit, include_path)
        source = "tasks:" + ",".join(tasks)
    else:
        prompt_ids = source_prompts(tokenizer, prompts or "bundled", limit)
        source = prompts or "bundled"
    specs: list[tuple[str, tuple[int, ...]]] = [
        (s, resolve_draft(lm, s, tokenizer, calibration=Calibration.of(calib))) for s in drafts
    ]

    # reference pass (also the warm-up): the model's own greedy output for every prompt
    refs = [
        greedy_generate(lm, torch.tensor([p]), max_new_tokens, tokenizer)[0]
        for p in tqdm(prompt_ids, desc="greedy reference", disable=not progress)
    ]
    searched = None
    if search:
        searched = search_draft(
            lm,
            tokenizer,
            prompt_ids,
            refs,
            int(search),
            draft_tokens=draft_tokens,
            max_new_tokens=max_new_tokens,
            progress=progress,
        )
        specs.append((f"search:{search}={format_indices(searched['drop'])}", tuple(searched["drop"])))
    drafters = [build_drafter(lm, layers, draft_tokens) for _, layers in specs]
    storage = [shared_storage(lm, d) for d in drafters]

    greedy_s: list[float] = []
    draft_s: list[list[float]] = [[] for _ in specs]
    totals = [DraftStats() for _ in specs]
    identical = [True for _ in specs]
    greedy_tokens = 0
    work = rounds * len(prompt_ids) * (1 + len(specs))
    with tqdm(total=work, desc="speculate", disable=not progress) as bar:
        for r in range(rounds):
            g_round = 0.0
            d_round = [0.0 for _ in specs]
            for i, p in enumerate(prompt_ids):
                ids = torch.tensor([p])
                order = list(range(len(specs)))
                order = order[(r + i) % len(order) :] + order[: (r + i) % len(order)] if order else order
                toks, secs = greedy_generate(lm, ids, max_new_tokens, tokenizer)
                g_round += secs
                greedy_tokens += len(toks)
                identical_ref = toks == refs[i]
                bar.update(1)
                for j in order:
                    new, st = assisted_generate(lm, drafters[j], ids, max_new_tokens, tokenizer)
                    identical[j] &= new == refs[i] and identical_ref
                    totals[j] = totals[j] + st
                    d_round[j] += st.seconds
                    bar.update(1)
            greedy_s.append(g_round)
            for j in range(len(specs)):
                draft_s[j].append(d_round[j])

    ref_tokens = sum(len(x) for x in refs)
    results = []
    for j, (text, layers) in enumerate(specs):
        st = totals[j]
        ta = token_agreement(lm, tokenizer, prompt_ids, refs, drop=layers)
        sim = sum((simulate_acceptance(h, draft_tokens, max_new_tokens) for h in ta.hits), DraftStats())
        keep_share = (n_layers - len(layers)) / n_layers
        bound = st.new_tokens / (st.steps + st.drafted * keep_share) if st.steps else 0.0
        results.append(
            {
                "spec": text,
                "layers": list(layers),
                "skipped": len(layers),
                "skipped_share": len(layers) / n_layers,
                **{k: v for k, v in st.to_dict().items() if k != "seconds"},
                "tokens_per_s": st.new_tokens / st.seconds if st.seconds else 0.0,
                "speedup": _median([g / d for g, d in zip(greedy_s, draft_s[j], strict=True) if d]),
                "speedup_rounds": [g / d for g, d in zip(greedy_s, draft_s[j], strict=True) if d],
                "forward_bound_speedup": bound,
                "simulated_steps": sim.steps,
                "simulated_accepted": sim.accepted,
                "token_agreement": ta.agreement,
                "identical": identical[j],
                "extra_weight_bytes": storage[j]["extra_bytes"],
            }
        )
    record = {
        "model": base_model_name(model) or model,
        "num_layers": n_layers,
        "prompts": source,
        "num_prompts": len(prompt_ids),
        "max_new_tokens": max_new_tokens,
        "draft_tokens": draft_tokens,
        "rounds": rounds,
        "device": _device_name(device),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "greedy": {
            "tokens": ref_tokens,
            "tokens_per_s": greedy_tokens / sum(greedy_s) if sum(greedy_s) else 0.0,
            "seconds_rounds": greedy_s,
        },
        "drafts": results,
        "search": searched,
    }
    if out is not None:
        import json

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPECULATE_FILE).write_text(json.dumps(record, indent=2))
        plot_speculate(record, folder / SPECULATE_PLOT)
    return record


def _device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def format_speculate(record: dict[str, Any]) -> str:
    """The table ``lmeval-prune speculate`` prints."""
    g = record["greedy"]
    lines = [
        f"{record['model']}: {record['num_prompts']} prompts ({record['prompts']}), {record['max_new_tokens']} new "
        f"tokens, {record['draft_tokens']} draft tokens/step, {record['rounds']} round(s); {record['device']}, "
        f"{record['dtype']}, {record['threads']} thread(s)",
        f"plain greedy: {g['tokens_per_s']:.1f} tokens/s",
        f"{'draft':<28} {'skip':>5} {'acc/step':>8} {'acc rate':>8} {'from draft':>10} {'agree':>6} "
        f"{'tok/s':>7} {'speed-up':>8} {'bound':>6} identical",
    ]
    for d in record["drafts"]:
        lines.append(
            f"{d['spec'][:28]:<28} {d['skipped']:>5} {d['accepted_per_step']:>8.2f} {d['acceptance_rate']:>8.1%} "
            f"{d['drafted_share']:>10.1%} {d['token_agreement']:>6.1%} {d['tokens_per_s']:>7.1f} "
            f"{d['speedup']:>7.2f}x {d['forward_bound_speedup']:>5.2f}x {'yes' if d['identical'] else 'NO'}"
        )
    lines.append(
        "acc/step: accepted draft tokens per verification step; acc rate: share of drafted tokens accepted; "
        "bound: the speed-up if a forward cost only its layer count (verification of several tokens as cheap as one)"
    )
    return "\n".join(lines)


def plot_speculate(record: dict[str, Any], path: str | Path) -> None:
    """Speed-up and acceptance against layers skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drafts = sorted(record["drafts"], key=lambda d: d["skipped"])
    x = [d["skipped"] for d in drafts]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(x, [d["speedup"] for d in drafts], "o", label="measured")
    a1.plot(x, [d["forward_bound_speedup"] for d in drafts], "s", mfc="none", label="forward-count bound")
    a1.axhline(1.0, color="grey", lw=0.8)
    for d in drafts:
        a1.annotate(d["spec"].split("=")[0], (d["skipped"], d["speedup"]), fontsize=6, alpha=0.7)
    a1.set_xlabel("layers skipped by the draft")
    a1.set_ylabel("speed-up vs plain greedy")
    a1.legend(fontsize=8)
    a2.plot(x, [d["acceptance_rate"] for d in drafts], "o", label="drafted tokens accepted")
    a2.plot(x, [d["token_agreement"] for d in drafts], "s", mfc="none", label="token agreement")
    a2.set_xlabel("layers skipped by the draft")
    a2.set_ylim(0, 1)
    a2.legend(fontsize=8)
    fig.suptitle(f"{record['model']}: self-speculative decoding ({record['device']}, {record['dtype']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
