"""A pruned model as its parent's draft (self-speculative decoding): decoding, token agreement, the
simulated acceptance, the greedy choice of layers to skip, and prompts to draft for.

The drafter (:func:`lmeval_layerprune.lmeval.draft.build_drafter`) is the *same* model with some layers
skipped: its embedding, final norm, head, rotary tables and kept decoder layers are the verifier's own
modules (no parameter is copied), and it keeps its own, shorter KV cache. transformers' assisted
generation (``generate(assistant_model=drafter)``, :func:`assisted_generate`) drafts with it and
verifies with the full model, so the greedy output is the full model's greedy output.

Greedy acceptance is a function of teacher-forced agreement: every accepted draft token is a token
of the verifier's greedy output, so when the drafter proposes position ``t`` it has seen exactly the
verifier's greedy prefix, and it proposes the verifier's token iff its top-1 prediction on that
prefix agrees. :func:`token_agreement` measures that agreement with one forward per response;
:func:`simulate_acceptance` turns it into verification steps and accepted tokens for a draft
length (exact for the constant draft length that :func:`assisted_generate` uses), which is how
:func:`search_draft` (``speculate --search``) scores candidates without generating, on ``select``'s
greedy loop (:mod:`lmeval_layerprune.search.greedy`). The command itself is
:mod:`lmeval_layerprune.speed.speculate_run`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from lm_eval.tasks import TaskManager, get_task_dict
from tqdm.auto import tqdm

from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.journal import Journal
from lmeval_layerprune.core.slicing import layer_subset
from lmeval_layerprune.errors import DraftError
from lmeval_layerprune.heal.selfgen import encode_prompt, ensure_chat_template, load_prompts
from lmeval_layerprune.lmeval.draft import base_causal_lm
from lmeval_layerprune.lmeval.plugin import register as register_plugin
from lmeval_layerprune.search.greedy import GreedySettings, greedy_search
from lmeval_layerprune.search.protocols import Objective

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
    register_plugin()
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
    ensure_chat_template(tokenizer)
    return [encode_prompt(tokenizer, p.messages) for p in load_prompts(source, n=limit)]


# ------------------------------------------------------------------ search


class AcceptanceObjective(Objective):
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
    objective: AcceptanceObjective, n: int, *, protect: Sequence[int] = (), progress: bool = True
) -> dict[str, Any]:
    """Greedily choose ``n`` layers to skip for drafting, maximising ``objective`` (simulated tokens per
    verification step).

    Runs ``select``'s greedy loop (:func:`lmeval_layerprune.search.greedy.greedy_search`) with a journal in
    memory; returns its record (``drop``, ``order``, ``rounds``, ...). ``protect``: layers never skipped.
    """
    n_layers = arch_num_layers(base_causal_lm(objective.model).config)
    settings = GreedySettings(n=n, protect=tuple(protect), progress=progress)
    return greedy_search(objective, n_layers, Journal(None, "speculate"), settings)
