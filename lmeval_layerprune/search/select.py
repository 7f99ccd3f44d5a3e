"""Choose which layers to remove: one-pass metrics and the greedy search of the paper.

Greedy search (``iterative``, ``ppl``): starting from the full model, every remaining
layer that is not protected is removed in turn (together with the ones already chosen),
the pruned model is scored, each task's score is normalised by the **full model's** score
(0 when that is 0), the normalised scores are averaged, and the best candidate is removed
(ties go to the higher index); repeat until ``n`` layers are gone.

Better than the original code on each point:

* one loaded model for the whole search: candidates run by swapping the layer list
  (:func:`lmeval_layerprune.core.slicing.layer_subset`), never by writing checkpoints or
  restarting an engine;
* the baseline is computed once; decoding is whatever the task says (greedy for the
  bundled probes);
* the objective runs through lm-eval itself, on a *selection* split: for the bundled
  tasks a different generator seed (``selection_seed``) than the evaluation items;
* within a round, the hidden states entering each layer are reused for ``ppl`` (SLEB-style
  calibration perplexity) and for every loglikelihood forward of a task objective, so a
  candidate only recomputes the layers after the one it removes (:class:`HiddenStateReuse`);
* exact early elimination (the default; ``exhaustive=True`` turns it off): where every
  task's primary metric is a mean of per-item values in a known range (exact match,
  accuracy), candidates are scored chunk by chunk on the same items in the same order, and a
  candidate stops as soon as the best score it can still reach is below the score another
  candidate is already certain of: the chosen layer is the exhaustive search's, by
  construction (``docs/selection-search.md``);
* ties on the primary score are reported and broken by a continuous secondary score that
  costs no extra pass (the mean log-probability of the reference answer as far as greedy
  generation followed it, or of the gold choice), then by the higher index;
* every candidate's result is appended to a journal as soon as it is known, so a killed
  run restarted with the same arguments continues where it stopped and ends with the same plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import torch

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.guard import guard_output, owned_json
from lmeval_layerprune.core.journal import Journal
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import _get_layers, keep_from_drop, layer_subset
from lmeval_layerprune.methods.capture import (
    DEFAULT_CALIB_MAX_TOKENS,
    DEFAULT_CALIB_SAMPLES,
    Calibration,
    calibration_states,
    load_calibration_texts,
)
from lmeval_layerprune.methods.registry import get_method, method_names
from lmeval_layerprune.methods.resolve import choose_layers

logger = logging.getLogger(__name__)

DEFAULT_TASKS = ("arith_probe",)
DEFAULT_SELECTION_SEED = 777
#: memory for the hidden states kept within a round (beyond it, forwards simply recompute)
DEFAULT_REUSE_BYTES = 4 << 30
#: items per task scored at a time by the exact search (the stopping granularity); also the
#: batch those items are run in, so every mode sees the very same batches
DEFAULT_CHUNK_SIZE = 8
#: primary metrics whose per-item values lie in a known range (with a ``mean`` aggregation,
#: they bound what a partly scored candidate can still reach)
BOUNDED_METRICS: dict[str, tuple[float, float]] = {
    "exact_match": (0.0, 1.0),
    "acc": (0.0, 1.0),
    "acc_norm": (0.0, 1.0),
    "em": (0.0, 1.0),
}
_T = TypeVar("_T")


@dataclass
class SelectionSettings:
    """Everything that determines a selection's result (and so its journal)."""

    model: str
    method: str = "iterative"
    n: int = 8
    tasks: tuple[str, ...] = DEFAULT_TASKS
    include_path: str | None = None
    limit: int | None = 100
    protect: tuple[int, ...] = (0,)
    selection_seed: int = DEFAULT_SELECTION_SEED
    calib: str | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    dtype: str = "float32"
    batch_size: int = 8
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def key(self) -> str:
        # race shares the journal with exact runs: full-budget results are the same measurements
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


# -------------------------------------------------------------------- journal


def _candidate_id(dropped: Sequence[int]) -> str:
    return "drop:" + ",".join(map(str, sorted(dropped)))


# ------------------------------------------------------------------ objectives


class TaskObjective:
    """Scores of lm-eval tasks (each leaf task's primary metric) for the model without ``drop``.

    Metrics where lower is better (perplexities) are reported negated-free but listed in
    :attr:`lower_is_better`, so normalisation can invert their ratio.
    """

    higher_is_better = True

    def __init__(
        self,
        lm: Any,
        tasks: Sequence[str],
        limit: int | None,
        selection_seed: int,
        include_path: str | Path | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        from lm_eval.tasks import TaskManager, get_task_dict

        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be at least 1 (items per task scored at a time)")
        self.lm = lm
        self.limit = limit
        self.chunk_size = chunk_size
        # Task metadata overrides reach the bundled generators: a disjoint selection split.
        include = str(include_path) if include_path else None
        manager = TaskManager(include_path=include, metadata={"seed": selection_seed})
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            raise ValueError(
                f"unknown task(s) {', '.join(unknown)}; see `lm_eval ls tasks` "
                "(and --include-path for tasks in your own folder)"
            )
        self.task_dict = get_task_dict(list(tasks), manager)
        self.lower_is_better = {name for name, task in _leaf_tasks(self.task_dict) if not _higher_is_better(task)}
        self.reuse = HiddenStateReuse(lm.model)
        self._items: dict[str, list[tuple[Any, list[Any]]]] | None = None
        self.item_tasks: list[ItemTask] | None = None
        self.no_bounds_reason: str | None = None
        self.has_secondary = False
        self._first_logp: dict[tuple[int, ...], tuple[list[int], list[torch.Tensor]]] = {}
        self._prepare_items()

    def start_round(self, dropped: Sequence[int]) -> None:
        self.reuse.start_round(dropped)

    # ------------------------------------------------------ item-level scoring

    def _prepare_items(self) -> None:
        """Build every task's requests once (the prompts a full ``lm_eval`` run builds, few-shot
        examples included) and decide whether the primary metrics can be bounded."""
        from lm_eval.api.metrics import mean
        from lm_eval.defaults import DEFAULT_OTHER_SEED
        from lm_eval.evaluator_utils import get_sample_size

        tasks, items, reasons = [], {}, []
        secondary = True
        for name, task in _leaf_tasks(self.task_dict):
            metric = _primary_metric_name(task)
            agg = task.aggregation().get(metric)
            if metric not in BOUNDED_METRICS:
                reasons.append(f"{name}: metric {metric!r} has no known range")
            elif agg is not mean:
                reasons.append(f"{name}: metric {metric!r} is not aggregated as a mean")
            elif not _higher_is_better(task):
                reasons.append(f"{name}: metric {metric!r} is better when lower")
            if task.OUTPUT_TYPE not in ("generate_until", "multiple_choice", "loglikelihood"):
                reasons.append(f"{name}: output type {task.OUTPUT_TYPE!r} is not scored item by item")
                continue
            task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
            limit = get_sample_size(task, self.limit)
            task.build_all_requests(limit=limit, rank=0, world_size=1)
            by_doc: dict[int, list[Any]] = defaultdict(list)
            for inst in task.instances:
                by_doc[inst.doc_id].append(inst)
            docs = list(task.doc_iterator(rank=0, limit=limit, world_size=1))
            items[name] = [(doc, sorted(by_doc[doc_id], key=lambda i: i.idx)) for doc_id, doc in docs]
            lo, hi = BOUNDED_METRICS.get(metric, (-math.inf, math.inf))
            tasks.append(ItemTask(name, metric, len(docs), lo, hi))
            secondary = secondary and task.OUTPUT_TYPE in ("generate_until", "multiple_choice", "loglikelihood")
        if reasons:
            self.no_bounds_reason = "; ".join(reasons)
            return
        self._items, self.item_tasks, self.has_secondary = items, tasks, secondary

    @property
    def num_chunks(self) -> int:
        assert self.item_tasks is not None
        return max(-(-t.n // self.chunk_size) for t in self.item_tasks) if self.item_tasks else 0

    def chunk(self, drop: Sequence[int], k: int) -> dict[str, float]:
        """Per-item primary values (``"task|i"``) and secondary values (``"task|i|s"``) of items
        ``k*chunk_size ..`` of every task, for the model without ``drop``. The items of one chunk
        run together (one batch at ``batch_size >= chunk_size``), whatever the mode."""
        assert self._items is not None and self.item_tasks is not None
        lo_i, hi_i = k * self.chunk_size, (k + 1) * self.chunk_size
        chosen: dict[str, list[tuple[int, Any, list[Any]]]] = {}
        requests: dict[str, list[Any]] = defaultdict(list)
        for t in self.item_tasks:
            rows = []
            for i in range(lo_i, min(hi_i, t.n)):
                doc, insts = self._items[t.name][i]
                fresh = [replace(inst, resps=[], filtered_resps={}) for inst in insts]
                rows.append((i, doc, fresh))
                for inst in fresh:
                    requests[inst.request_type].append(inst)
            chosen[t.name] = rows
        self._first_logp = {}
        with self._patched(sorted(drop)):
            for reqtype, reqs in requests.items():
                cloned = [r for r in reqs for _ in range(r.repeats or 1)]
                resps = getattr(self.lm, reqtype)(cloned, disable_tqdm=True)
                for x, req in zip(resps, cloned, strict=True):
                    req.resps.append(x)
        out: dict[str, float] = {}
        for t in self.item_tasks:
            task = dict(_leaf_tasks(self.task_dict))[t.name]
            rows = chosen[t.name]
            if not rows:
                continue
            saved = task._instances
            task._instances = [inst for _, _, insts in rows for inst in insts]
            try:
                task.apply_filters()
            finally:
                task._instances = saved
            filter_key = next(iter(rows[0][2][0].filtered_resps))
            for i, doc, insts in rows:
                metrics = task.process_results(doc, [inst.filtered_resps[filter_key] for inst in insts])
                value = float(metrics[t.metric])
                if not t.lo <= value <= t.hi:
                    raise ValueError(
                        f"task {t.name!r}, item {i}: {t.metric} = {value} lies outside [{t.lo}, {t.hi}]; "
                        "the early elimination's bound would be wrong (rerun with --exhaustive)"
                    )
                out[f"{t.name}|{i}"] = value
                sec = self._secondary_item(task, doc, insts)
                if sec is not None:
                    out[f"{t.name}|{i}|s"] = sec
        self._first_logp = {}
        return out

    def _secondary_item(self, task: Any, doc: Any, insts: list[Any]) -> float | None:
        """Log-probability of the reference under the candidate, from what its pass produced:
        the gold choice's log-likelihood, or the first-step log-probability of the reference
        answer during greedy generation: while the generated tokens follow the reference, each
        step's logits are the teacher-forced ones, so the log-probability of the reference up to
        and including its first token the model got wrong comes with the generation, no extra pass."""
        kind = task.OUTPUT_TYPE
        if kind == "loglikelihood":
            return float(insts[0].resps[0][0])
        if kind == "multiple_choice":
            gold = task.doc_to_target(doc)
            if isinstance(gold, str):
                choices = task.doc_to_choice(doc)
                gold = choices.index(gold) if gold in choices else None
            if isinstance(gold, list):
                gold = gold[0] if gold else None
            if not isinstance(gold, int) or not 0 <= gold < len(insts):
                return None
            return float(insts[gold].resps[0][0])
        if kind == "generate_until":
            target = task.doc_to_target(doc)
            if isinstance(target, list):
                target = target[0] if target else ""
            if isinstance(target, int) and task.config.doc_to_choice is not None:
                target = task.doc_to_choice(doc)[target]
            context = insts[0].args[0]
            found = self._first_logp.get(tuple(self.lm.tok_encode(context)))
            if found is None:
                return None
            _, cont = self.lm._encode_pair(context, f"{task.config.target_delimiter}{target}")
            return _prefix_logprob(*found, cont)
        return None

    @contextmanager
    def _patched(self, drop: list[int]) -> Iterator[None]:
        """The candidate's model, loglikelihood forwards through the hidden-state reuse and
        generation keeping its first-step log-probabilities."""
        patches = {"_model_call": self._model_call(self.lm._model_call)}
        if self.has_secondary:
            patches["_model_generate"] = self._model_generate(self.lm._model_generate)
        saved = {name: vars(self.lm).get(name, _MISSING) for name in patches}
        for name, fn in patches.items():
            setattr(self.lm, name, fn)
        try:
            with self.reuse.candidate(drop):
                yield
        finally:
            for name, old in saved.items():
                if old is _MISSING:
                    delattr(self.lm, name)
                else:
                    setattr(self.lm, name, old)

    def _model_generate(self, original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def model_generate(context: torch.Tensor, max_length: int, stop: list[str], **kwargs: Any) -> torch.Tensor:
            out = original(
                context=context,
                max_length=max_length,
                stop=stop,
                output_logits=True,
                return_dict_in_generate=True,
                **kwargs,
            )
            logits = getattr(out, "logits", None)
            if logits:
                mask = kwargs.get("attention_mask")
                generated = out.sequences[:, context.shape[1] :].tolist()
                for row in range(context.shape[0]):
                    ids = context[row][mask[row].bool()] if mask is not None else context[row]
                    steps = [step[row] for step in logits[: len(generated[row])]]
                    self._first_logp[tuple(ids.tolist())] = (generated[row], steps)
            return out.sequences

        return model_generate

    def _model_call(self, original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """HFLM's forward for loglikelihood requests, routed through the hidden-state reuse."""

        def model_call(inps: torch.Tensor, attn_mask: Any = None, labels: Any = None) -> torch.Tensor:
            if attn_mask is not None or labels is not None:  # seq2seq: not a decoder-only forward
                return original(inps, attn_mask, labels)
            key = (tuple(inps.shape), hashlib.blake2b(inps.detach().cpu().numpy().tobytes(), digest_size=16).digest())
            return self.reuse.forward(key, lambda: original(inps))

        return model_call

    def __call__(self, drop: Sequence[int], fraction: float = 1.0) -> dict[str, float]:
        from lm_eval.defaults import DEFAULT_OTHER_SEED
        from lm_eval.evaluator import evaluate

        limit = self.limit
        if fraction != 1.0:
            if limit is None:
                raise ValueError("racing needs --limit (the item budget it takes fractions of)")
            limit = max(1, round(limit * fraction))  # lm-eval takes the first `limit` items: nested subsets
        for _, task in _leaf_tasks(self.task_dict):
            # the same few-shot examples for every candidate, as `lm_eval` picks them (seed 1234)
            task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
        had = "_model_call" in vars(self.lm)
        saved = vars(self.lm).get("_model_call")
        self.lm._model_call = self._model_call(self.lm._model_call)
        try:
            with self.reuse.candidate(sorted(drop)):
                results = evaluate(
                    lm=self.lm,
                    task_dict=self.task_dict,
                    limit=limit,
                    bootstrap_iters=0,
                    log_samples=False,
                    verbosity="ERROR",
                )
        finally:
            if had:
                self.lm._model_call = saved
            else:
                del self.lm._model_call
        return primary_metrics(results)


_MISSING = object()


def _prefix_logprob(generated: Sequence[int], steps: Sequence[torch.Tensor], reference: Sequence[int]) -> float | None:
    """Sum of log p(reference token j) over j up to the first one greedy generation got wrong
    (all of them when it produced the whole reference); ``steps[j]`` are step j's logits."""
    if not reference or not steps:
        return None
    total = 0.0
    for j, tok in enumerate(reference):
        if j >= len(steps):
            break
        total += float(torch.log_softmax(steps[j].float(), dim=-1)[tok])
        if j >= len(generated) or generated[j] != tok:
            break
    return total


@dataclass(frozen=True)
class ItemTask:
    """What the early elimination knows of one task: its items and its metric's range."""

    name: str
    metric: str
    n: int
    lo: float = 0.0
    hi: float = 1.0


def _primary_metric_name(task: Any) -> str:
    metrics = getattr(task.config, "metric_list", None) or [{"metric": "acc"}]
    name = metrics[0]["metric"]
    return name if isinstance(name, str) else getattr(name, "__name__", str(name))


def _leaf_tasks(task_dict: dict) -> Iterator[tuple[str, Any]]:
    for key, value in task_dict.items():
        if isinstance(value, dict):
            yield from _leaf_tasks(value)
        else:
            yield str(key), value


def _higher_is_better(task: Any) -> bool:
    """Direction of a task's primary (first declared) metric."""
    from lm_eval.api.registry import is_higher_better

    metrics = getattr(task.config, "metric_list", None) or [{"metric": "acc"}]
    first = metrics[0]
    if "higher_is_better" in first:
        return bool(first["higher_is_better"])
    name = first["metric"] if isinstance(first["metric"], str) else first["metric"].__name__
    return is_higher_better(name) is not False


def primary_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Each leaf task's first declared metric (under its first filter), read by :mod:`.results`."""
    from lmeval_layerprune.lmeval.results import parse_results

    return parse_results(results).primary_scores()


class _Skip(torch.nn.Module):
    """Stands in for a decoder layer whose output is already known: returns its input.

    Attribute reads (e.g. ``attention_type``, which some models read off each layer) go
    to the layer it replaces.
    """

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_wrapped", layer)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_wrapped"), name)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class HiddenStateReuse:
    """Reuse, within one greedy round, the hidden states entering the round model's layers.

    In a round with layers ``D`` already removed, candidate ``c`` removes one more layer, at
    slot ``q`` of the round's model. Everything before slot ``q`` is the same for the round's
    model and for the candidate, so the state entering slot ``q`` (per input) can be taken from
    an earlier run instead of recomputing layers ``0..q-1``. States are captured from the
    candidates' own runs (no extra pass): a full run of the candidate at slot ``q`` yields the
    round's states for slots ``0..q``. A candidate deeper than what is known starts from the
    deepest known state and extends the capture, so any visiting order reuses what it can
    (the search visits strong candidates first, not always the deepest); states are kept up
    to ``max_bytes`` per round.

    Used by :class:`PerplexityObjective` (one key per calibration text) and by
    :class:`TaskObjective` for every loglikelihood forward pass lm-eval makes (keyed by the
    exact token batch); generation is never reused.
    """

    def __init__(self, model: torch.nn.Module, max_bytes: int = DEFAULT_REUSE_BYTES) -> None:
        self.model = model
        self.num_layers = arch_num_layers(model.config)
        self.max_bytes = max_bytes
        self.enabled = True
        self.hits = 0  # forward passes that skipped layers
        self._round: tuple[int, ...] | None = None
        self._slot: int | None = None
        self._states: dict[Any, list[torch.Tensor]] = {}
        self._bytes = 0

    def start_round(self, dropped: Sequence[int]) -> None:
        self._round, self._slot = tuple(sorted(dropped)), None
        self._states.clear()
        self._bytes = 0

    @contextmanager
    def candidate(self, drop: Sequence[int]) -> Iterator[None]:
        """Run ``drop``'s model inside: the model's layers are swapped, forwards may reuse."""
        self._slot = self._slot_of(drop)
        try:
            with layer_subset(self.model, drop):
                yield
        finally:
            self._slot = None

    def _slot_of(self, drop: Sequence[int]) -> int | None:
        if not self.enabled or self._round is None:
            return None
        extra = set(drop) - set(self._round)
        if len(extra) != 1 or not set(self._round) <= set(drop):
            return None
        slot = keep_from_drop(self.num_layers, self._round).index(extra.pop())
        return slot if slot > 0 else None  # slot 0: nothing before it to reuse

    def forward(self, key: Any, run: Callable[[], _T]) -> _T:
        """``run()`` (a forward pass of the current candidate on the input ``key`` names),
        skipping the layers whose output is already known."""
        q = self._slot
        if q is None:
            return run()
        states = self._states.get(key)
        if states is not None and len(states) > q:
            self.hits += 1
            return self._run_from(q, states[q], run)
        if states is not None and len(states) > 1:
            # known up to a shallower slot: start there, capture the states up to slot q
            self.hits += 1
            return self._run_from(len(states) - 1, states[-1], run, extend=(key, q))
        return self._run_capturing(key, q, run)

    def _layers(self) -> tuple[torch.nn.Module, str, torch.nn.ModuleList]:
        return _get_layers(self.model, arch_for(self.model.config))

    def _run_capturing(self, key: Any, q: int, run: Callable[[], _T]) -> _T:
        _, _, layers = self._layers()
        seen: list[torch.Tensor] = []

        def grab(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append(kwargs.get("hidden_states", args[0] if args else None))

        # the candidate's layers 0..q see exactly the round model's inputs of slots 0..q
        handles = [layer.register_forward_pre_hook(grab, with_kwargs=True) for layer in layers[: q + 1]]
        try:
            out = run()
        finally:
            for h in handles:
                h.remove()
        if len(seen) == q + 1 and all(isinstance(s, torch.Tensor) for s in seen):
            size = sum(_nbytes(s) for s in seen)
            old = self._states.get(key)
            if old is not None:
                self._bytes -= sum(_nbytes(s) for s in old)
            if self._bytes + size <= self.max_bytes:
                self._states[key] = [s.detach() for s in seen]
                self._bytes += size
            else:
                self._states.pop(key, None)
        return out

    def _run_from(
        self, q: int, state: torch.Tensor, run: Callable[[], _T], extend: tuple[Any, int] | None = None
    ) -> _T:
        parent, attr, layers = self._layers()
        setattr(parent, attr, torch.nn.ModuleList([*map(_Skip, layers[:q]), *layers[q:]]))

        def inject(_m: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                return (state, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": state}

        seen: list[torch.Tensor] = []

        def grab(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append(kwargs.get("hidden_states", args[0] if args else None))

        handles = [layers[q].register_forward_pre_hook(inject, with_kwargs=True)]
        if extend is not None:
            handles += [
                layer.register_forward_pre_hook(grab, with_kwargs=True) for layer in layers[q + 1 : extend[1] + 1]
            ]
        try:
            out = run()
        finally:
            for h in handles:
                h.remove()
            setattr(parent, attr, layers)
        if extend is not None and len(seen) == extend[1] - q and all(isinstance(s, torch.Tensor) for s in seen):
            size = sum(_nbytes(s) for s in seen)
            if self._bytes + size <= self.max_bytes:
                self._states[extend[0]].extend(s.detach() for s in seen)
                self._bytes += size
        return out


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class PerplexityObjective:
    """Calibration perplexity (SLEB-style), reusing hidden states within a round
    (:class:`HiddenStateReuse`, one key per calibration text)."""

    higher_is_better = False

    def __init__(self, model: torch.nn.Module, tokenizer: Any, texts: Sequence[str]) -> None:
        self.model = model.eval()
        device = next(model.parameters()).device
        self.batches = [
            tokenizer(t, return_tensors="pt", truncation=True, max_length=DEFAULT_CALIB_MAX_TOKENS)["input_ids"].to(
                device
            )
            for t in texts
        ]
        self.reuse = HiddenStateReuse(self.model)

    def start_round(self, dropped: Sequence[int]) -> None:
        self.reuse.start_round(dropped)

    @torch.no_grad()
    def __call__(self, drop: Sequence[int], fraction: float = 1.0) -> dict[str, float]:
        # racing scores on the first part of the texts; the same texts keep their states
        batches = self.batches if fraction == 1.0 else self.batches[: max(1, round(len(self.batches) * fraction))]
        total, count = 0.0, 0
        with self.reuse.candidate(sorted(drop)):
            for b, ids in enumerate(batches):
                logits = self.reuse.forward(b, lambda ids=ids: self.model(input_ids=ids, use_cache=False).logits)
                logits = logits.float()
                total += float(torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum"))
                count += ids.shape[1] - 1
        return {"perplexity": float(torch.exp(torch.tensor(total / max(count, 1))))}


# --------------------------------------------------------------------- search


def normalized(
    raw: dict[str, float], base: dict[str, float], higher_is_better: bool, lower_is_better: set[str] = frozenset()
) -> float:
    """Mean over tasks of score / baseline (baseline / score where lower is better); 0 when undefined."""
    vals = []
    for k, b in base.items():
        v = raw.get(k, 0.0)
        if higher_is_better and k not in lower_is_better:
            vals.append(v / b if b else 0.0)
        else:
            vals.append(b / v if v else 0.0)
    return sum(vals) / len(vals) if vals else 0.0


#: successive-halving rungs of ``--race``: budget fractions of the full objective; after each
#: rung only the best third of the candidates (at least two) go on to the next
RACE_RUNGS = (1 / 9, 1 / 3, 1.0)
RACE_KEEP = 3


# ------------------------------------------------------- exact early elimination


def retention_bounds(
    sums: dict[str, Fraction], counts: dict[str, int], tasks: Sequence[ItemTask], base: dict[str, Fraction]
) -> tuple[Fraction, Fraction]:
    """The lowest and highest normalised score a partly scored candidate can still end with.

    ``sums[t]`` is the exact sum of the per-item values seen on task ``t``, ``counts[t]`` how
    many items they are, ``base[t]`` the full model's mean; every unseen item lies in
    ``[t.lo, t.hi]``. The score is the search's: mean over tasks of mean / baseline (0 where
    the baseline is 0). Exact rational arithmetic: a complete tally gives ``lo == hi`` == the score.
    """
    lows, highs = [], []
    for t in tasks:
        b = base[t.name]
        if b == 0 or t.n == 0:
            lows.append(Fraction(0))
            highs.append(Fraction(0))
            continue
        seen, rest = sums.get(t.name, Fraction(0)), t.n - counts.get(t.name, 0)
        lows.append((seen + rest * Fraction(t.lo)) / (t.n * b))
        highs.append((seen + rest * Fraction(t.hi)) / (t.n * b))
    m = max(len(tasks), 1)
    return sum(lows, Fraction(0)) / m, sum(highs, Fraction(0)) / m


def certainly_beaten(c: int, upper: Fraction, lower: dict[int, Fraction], index_ties: bool) -> int | None:
    """Another candidate that will certainly rank above ``c``, or None.

    ``upper`` is the best score ``c`` can still reach, ``lower[o]`` what candidate ``o`` is
    already certain of. ``o`` beats ``c`` when ``upper < lower[o]``. On equality it beats ``c``
    only when ties are broken by index alone (``index_ties``) and ``o`` has the higher index;
    with a secondary tie-break score the tie is still open, so ``c`` goes on.
    """
    best = None
    for o, low in lower.items():
        if o == c:
            continue
        if upper < low or (index_ties and upper == low and o > c):
            if best is None or (low, o) > (lower[best], best):
                best = o
    return best


def pick_best(
    scores: dict[int, Fraction], secondary: Callable[[int], float | None] | None = None
) -> tuple[int, list[int], dict[int, float]]:
    """The round's choice under the search's total order: the primary score, then (among the
    candidates tied on it) the secondary score, then the higher index.

    Returns the choice, the candidates tied at the top on the primary score (sorted) and the
    secondary scores used (empty when there was no tie or no secondary score)."""
    top = max(scores.values())
    ties = sorted(c for c, v in scores.items() if v == top)
    used: dict[int, float] = {}
    if len(ties) > 1 and secondary is not None:
        values = {c: secondary(c) for c in ties}
        if all(v is not None for v in values.values()):
            used = {c: float(v) for c, v in values.items() if v is not None}
    best = max(ties, key=lambda c: (used.get(c, 0.0), c))
    return best, ties, used


@dataclass
class _Tally:
    """Per-item results of one candidate so far (exact sums; secondary values as floats)."""

    sums: dict[str, Fraction] = field(default_factory=lambda: defaultdict(Fraction))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    second: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, raw: dict[str, float]) -> int:
        items = 0
        for key, value in raw.items():
            if key.endswith("|s"):
                self.second[key[:-2].rsplit("|", 1)[0]].append(float(value))
            else:
                task = key.rsplit("|", 1)[0]
                self.sums[task] += Fraction(value)
                self.counts[task] += 1
                items += 1
        return items

    def secondary(self, tasks: Sequence[ItemTask]) -> float | None:
        if any(len(self.second.get(t.name, ())) != t.n or t.n == 0 for t in tasks):
            return None
        return sum(sum(self.second[t.name]) / t.n for t in tasks) / len(tasks)

    def estimate(self, tasks: Sequence[ItemTask], base: dict[str, Fraction]) -> float:
        """Normalised mean over the items seen (to order the next round's candidates)."""
        vals = [
            float(self.sums[t.name] / self.counts[t.name] / base[t.name])
            for t in tasks
            if self.counts.get(t.name) and base[t.name]
        ]
        return sum(vals) / len(tasks) if vals else 0.0


def greedy_search(
    objective: Callable[..., dict[str, float]],
    num_layers: int,
    n: int,
    protect: Sequence[int],
    journal: Journal,
    higher_is_better: bool = True,
    progress: bool = True,
    race: bool = False,
    exhaustive: bool = False,
) -> dict[str, Any]:
    """The greedy loop; returns ``drop``, ``order``, ``baseline`` and per-round records.

    Objectives that score items one by one (``item_tasks``, ``num_chunks``, ``chunk(drop, k)``:
    :class:`TaskObjective` on tasks whose primary metric is a mean of bounded per-item values)
    are scored chunk by chunk, strong candidates first (by the previous round's scores), and a
    candidate stops as soon as :func:`certainly_beaten` says another one will rank above it;
    ``exhaustive`` scores every item of every candidate instead. Both choose the same layer in
    every round by construction (the same chunks, the same total order: :func:`pick_best`).
    Other objectives are called once per candidate (``objective(drop)``).

    With ``race``, each round is a successive-halving race: every candidate is scored on
    the first ninth of the items (``objective(drop, fraction=1/9)``), the best third goes on
    to a third of the items, and the best third of those to the full budget, where the
    winner is picked as in the exact search. Full-budget results are shared with exact runs
    through the journal.
    """
    from tqdm.auto import tqdm

    protect = set(protect)
    candidates_total = num_layers - len(protect)
    if n >= candidates_total or n < 1:
        raise ValueError(
            f"n={n} must be between 1 and {candidates_total - 1} (the layers that are not protected, minus 1)"
        )
    start_round = getattr(objective, "start_round", None)
    lower = getattr(objective, "lower_is_better", set())
    rungs = RACE_RUNGS if race else (1.0,)
    tasks: list[ItemTask] | None = getattr(objective, "item_tasks", None)
    chunked = tasks is not None and hasattr(objective, "chunk")
    index_ties = not (chunked and getattr(objective, "has_secondary", False))
    eliminate = chunked and not exhaustive and not race
    warnings: list[str] = []

    def measure(rec_id: str, drop: list[int], fraction: float, **extra: Any) -> dict[str, float]:
        rec_id = rec_id if fraction == 1.0 else f"{rec_id}@{fraction:.4f}"
        raw = journal.get(rec_id)
        if raw is None:
            raw = objective(drop) if fraction == 1.0 else objective(drop, fraction=fraction)
            journal.add(rec_id, raw, **extra)
        return raw

    def measure_chunk(rec_id: str, drop: list[int], k: int, **extra: Any) -> dict[str, float]:
        rec_id = f"{rec_id}#{k}"
        raw = journal.get(rec_id)
        if raw is None:
            raw = objective.chunk(drop, k)  # type: ignore[attr-defined]
            journal.add(rec_id, raw, chunk=k, **extra)
        return raw

    bases: dict[float, dict[str, float]] = {f: measure("baseline", [], f) for f in rungs if f != 1.0 or not chunked}
    exact_base: dict[str, Fraction] = {}
    num_chunks = 0
    if chunked:
        assert tasks is not None
        num_chunks = objective.num_chunks  # type: ignore[attr-defined]
        tally = _Tally()
        for k in range(num_chunks):
            tally.add(measure_chunk("baseline", [], k))
        exact_base = {t.name: tally.sums[t.name] / t.n if t.n else Fraction(0) for t in tasks}
        bases[1.0] = {name: float(v) for name, v in exact_base.items()}
    total_items = sum(t.n for t in tasks) if chunked and tasks else 0
    for task, value in bases[1.0].items():
        if value == 0:
            msg = (
                f"the full model scores 0 on {task}: its retention is 0 for every candidate, so it cannot "
                "tell candidates apart (use a task the model can do, or more items)"
            )
            warnings.append(msg)
            logger.warning(msg)

    dropped: list[int] = []
    rounds = []
    evaluations = 0
    items_evaluated = items_exhaustive = 0
    previous: dict[int, float] = {}
    seconds: list[float] = []
    total = sum(candidates_total - r for r in range(n)) if not race else None
    with tqdm(total=total, desc="layer search", disable=not progress, unit="cand") as bar:
        for r in range(n):
            started = time.perf_counter()
            alive = [i for i in range(num_layers) if i not in dropped and i not in protect]
            scores: dict[int, Any] = {}
            budget: dict[int, float] = {}
            stopped: dict[int, dict[str, Any]] = {}
            tallies: dict[int, _Tally] = {}
            items_round = 0
            if start_round is not None:
                start_round(dropped)
            # strong candidates first (the previous round's scores) so the bar rises early;
            # the first round, and objectives without elimination, go deepest first (hidden-state reuse)
            order = sorted(alive, key=lambda c: (previous.get(c, 0.0), c) if eliminate else (0.0, c), reverse=True)
            for fraction in rungs:
                final = fraction == 1.0
                low_bounds: dict[int, Fraction] = {}
                for c in order if final else sorted(alive, reverse=True):
                    if c not in alive:
                        continue
                    cid, drop = _candidate_id([*dropped, c]), sorted([*dropped, c])
                    evaluations += 1
                    bar.set_postfix(round=f"{r + 1}/{n}", layer=c, budget=fraction, stopped=len(stopped))
                    if not (final and chunked):
                        raw = measure(cid, drop, fraction, round=r, candidate=c)
                        scores[c] = Fraction(normalized(raw, bases[fraction], higher_is_better, lower))
                        budget[c] = fraction
                        bar.update(1)
                        continue
                    assert tasks is not None
                    tally = tallies[c] = _Tally()
                    items_exhaustive += total_items
                    done = 0
                    low, high = retention_bounds(tally.sums, tally.counts, tasks, exact_base)
                    for k in range(num_chunks):
                        by = certainly_beaten(c, high, low_bounds, index_ties) if eliminate else None
                        if by is not None:
                            stopped[c] = {"items": done, "of": total_items, "bound": float(high), "by": by}
                            if journal.get(f"{cid}#stop") is None:
                                journal.add(f"{cid}#stop", {"items": float(done), "bound": float(high)}, by=by)
                            break
                        got = tally.add(measure_chunk(cid, drop, k, round=r, candidate=c))
                        done += got
                        low, high = retention_bounds(tally.sums, tally.counts, tasks, exact_base)
                        low_bounds[c] = low
                        bar.update(got / max(total_items, 1))
                    else:
                        scores[c] = low
                    items_round += done
                    budget[c] = fraction
                    if c in stopped:
                        bar.update((total_items - done) / max(total_items, 1))
                if not final:
                    ranked = sorted(alive, key=lambda c: (scores[c], c), reverse=True)
                    alive = ranked[: max(2, -(-len(ranked) // RACE_KEEP))]
            finalists = {c: scores[c] for c in alive if c not in stopped}
            second = None
            if chunked and not index_ties and tasks:
                second = {c: tallies[c].secondary(tasks) for c in finalists}.get
            best, ties, used = pick_best(finalists, second)
            dropped.append(best)
            items_evaluated += items_round
            if chunked and tasks:
                previous = {
                    c: (float(scores[c]) if c in finalists else t.estimate(tasks, exact_base))
                    for c, t in tallies.items()
                }
            record: dict[str, Any] = {
                "round": r,
                "chosen": best,
                "scores": {str(c): float(scores[c]) for c in sorted(scores) if c not in stopped},
            }
            if chunked:
                record["items"] = items_round
            if stopped:
                record["stopped"] = {str(c): stopped[c] for c in sorted(stopped)}
            if len(ties) > 1:
                record["ties"] = ties
                record["tie_break"] = "secondary" if used else "index"
                if used:
                    record["secondary"] = {str(c): used[c] for c in sorted(used)}
                how = (
                    "the mean log-probability of the reference answer decided"
                    if used
                    else "the higher index decided (no secondary score)"
                )
                msg = (
                    f"round {r + 1}: {len(ties)} candidates tie at retention {float(scores[best]):.4f} "
                    f"(layers {', '.join(map(str, ties))}): the budget cannot tell them apart on the primary "
                    f"metric; {how}; more items (--limit) would let the metric decide"
                )
                warnings.append(msg)
                logger.warning(msg)
            if race:
                record["budget"] = {str(c): budget[c] for c in sorted(budget)}
            rounds.append(record)
            seconds.append(time.perf_counter() - started)
            logger.info(
                "round %d: removing layer %d (normalised score %.4f; %d candidates stopped early, %s items, %.1f s)",
                r + 1,
                best,
                float(scores[best]),
                len(stopped),
                items_round if chunked else "-",
                seconds[-1],
            )
    result: dict[str, Any] = {
        "drop": sorted(dropped),
        "order": dropped,
        "baseline": bases[1.0],
        "rounds": rounds,
        "evaluations": evaluations,
        "warnings": warnings,
        "round_seconds": seconds,  # wall time per round (not part of the rounds: a resumed run differs)
    }
    result["search"] = {
        "mode": "race" if race else "exhaustive" if (exhaustive or not chunked) else "exact-elimination",
        "elimination": bool(eliminate),
        "reason": None
        if chunked
        else getattr(objective, "no_bounds_reason", None) or "objective not scored item by item",
        "tie_break": "index" if index_ties else "secondary, then index",
    }
    if chunked and tasks:
        result["search"].update(
            chunk_size=getattr(objective, "chunk_size", None),
            items_per_candidate=total_items,
            items_evaluated=items_evaluated,
            items_exhaustive=items_exhaustive,
            stopped=sum(len(r.get("stopped", {})) for r in rounds),
            score={
                "what": "retention: mean over tasks of the candidate's score / the full model's score",
                "metrics": {t.name: t.metric for t in tasks},
                "items": {t.name: t.n for t in tasks},
            },
        )
    return result


def describe_round(plan: dict[str, Any], record: dict[str, Any]) -> str:
    """One line for a round: the layer, its retention and what that number is."""
    c = record["chosen"]
    score = record["scores"][str(c)]
    what = plan.get("search", {}).get("score")
    line = f"round {record['round'] + 1}: layer {c}, retention {score:.4f}"
    if what:
        parts = [f"{m} on {what['items'][t]} items of {t}" for t, m in what["metrics"].items()]
        line += f" of the full model ({'; '.join(parts)})"
    elif plan.get("method") == "ppl":
        line += " (full-model perplexity / candidate's perplexity)"
    else:
        line += " (mean over tasks of score / full-model score)"
    extra = []
    if record.get("stopped"):
        extra.append(f"{len(record['stopped'])} stopped early")
    if record.get("ties"):
        extra.append(f"{len(record['ties'])}-way tie broken by {record['tie_break']}")
    return line + (f" [{', '.join(extra)}]" if extra else "")


def select_layers(
    model: str,
    method: str = "iterative",
    n: int = 8,
    *,
    tasks: Sequence[str] = DEFAULT_TASKS,
    include_path: str | Path | None = None,
    limit: int | None = 100,
    protect: Sequence[int] = (0,),
    selection_seed: int = DEFAULT_SELECTION_SEED,
    calib: str | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    dtype: str = "float32",
    batch_size: int = 8,
    device: str | None = None,
    out: str | Path | None = None,
    journal: str | Path | None = None,
    plot: str | Path | None = None,
    progress: bool = True,
    race: bool = False,
    exhaustive: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Any]:
    """Choose ``n`` layers to remove from ``model`` and return (and optionally write) the plan.

    Args:
        model: checkpoint directory, Hub id or ``"embedded"``.
        method: ``iterative`` (greedy on lm-eval tasks), ``ppl`` (greedy on calibration
            perplexity), ``bi``, ``angular`` or ``last``.
        tasks, limit, selection_seed: the objective for ``iterative``; ``include_path``
            is a folder of extra task YAMLs (as lm-eval's ``--include_path``).
        protect: original layer indices never removed by the greedy methods.
        out: write the plan JSON here (usable as ``drop=plan:PATH``).
        journal: resumable record of every measurement (default: ``<out>.journal.jsonl``).
        plot: write a PNG of the scores here.
        race: successive halving within each greedy round (approximate; see :func:`greedy_search`).
        exhaustive: score every item of every candidate (no early elimination; the same plan).
        chunk_size: items per task scored at a time by the exact search (its stopping granularity).

    Returns:
        The plan: ``model``, ``num_layers``, ``drop``, ``method``, scores and settings.
    """
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    if method not in method_names():
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(method_names())}")
    chosen_by = get_method(method)
    settings = SelectionSettings(
        model=model,
        method=method,
        n=n,
        tasks=tuple(tasks),
        include_path=str(include_path) if include_path else None,
        limit=limit,
        protect=tuple(sorted(set(protect))),
        selection_seed=selection_seed,
        calib=calib,
        calib_samples=calib_samples,
        dtype=dtype,
        batch_size=batch_size,
        chunk_size=chunk_size,
    )
    if journal is None and out is not None:
        journal = Path(str(out) + ".journal.jsonl")
    if out is not None:  # before any work: never over an input, nor over a file that is not a plan
        guard_output(out, inputs=[model, calib, include_path], overwrite=True, owned=owned_json("drop", "num_layers"))
    lm = PrunedHFLM(pretrained=model, dtype=dtype, batch_size=batch_size, device=device)
    num_layers = arch_num_layers(lm.model.config)
    for p in settings.protect:
        if not 0 <= p < num_layers:
            raise ValueError(f"protected layer {p} is out of range (the model has {num_layers} layers)")
    if not 1 <= n < num_layers:
        raise ValueError(f"n={n} must be between 1 and {num_layers - 1}")

    plan: dict[str, Any] = {"model": model, "num_layers": num_layers, "method": method}
    if chosen_by.kind != "greedy":  # one pass, in this model's own layer numbers
        states = None
        if chosen_by.needs_states:
            states = calibration_states(lm.model, lm.tokenizer, Calibration.of(calib, calib_samples))
        drop, scores = choose_layers(chosen_by, num_layers, n, states)
        plan["drop"] = list(drop)
        if scores is not None:
            plan["scores"] = scores
    else:
        jr = Journal.open(journal, settings)
        if chosen_by.objective == "tasks":
            objective: Any = TaskObjective(lm, settings.tasks, limit, selection_seed, include_path, chunk_size)
        else:
            texts = load_calibration_texts(calib, calib_samples)
            objective = PerplexityObjective(lm.model, lm.tokenizer, texts)
        result = greedy_search(
            objective,
            num_layers,
            n,
            settings.protect,
            jr,
            objective.higher_is_better,
            progress=progress,
            race=race,
            exhaustive=exhaustive,
        )
        plan.update(result)
    plan["settings"] = asdict(settings)
    plan = PruningPlan.from_dict(plan, source="the selected plan").to_dict()  # the one plan layout
    if out is not None:
        PruningPlan.from_dict(plan).save(out, folder=False)  # written beside, then renamed: atomic
    if plot is not None:
        plot_plan(plan, plot)
    return plan


def plot_plan(plan: dict[str, Any], path: str | Path) -> None:
    """PNG: per-round normalised scores by layer (greedy), or the metric profile (one-pass)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'lmeval-layerprune[plot]'") from None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    n_layers = plan["num_layers"]
    if plan.get("rounds"):
        cmap = plt.get_cmap("viridis", max(len(plan["rounds"]), 2))
        for r in plan["rounds"]:
            xs = sorted(int(k) for k in r["scores"])
            ax.plot(
                xs,
                [r["scores"][str(x)] for x in xs],
                marker="o",
                ms=3,
                color=cmap(r["round"]),
                label=f"round {r['round'] + 1}: drop {r['chosen']}",
            )
            ax.plot([r["chosen"]], [r["scores"][str(r["chosen"])]], marker="*", ms=12, color=cmap(r["round"]))
        ax.set_ylabel("score / full-model score")
        ax.legend(fontsize=7, ncol=2)
    elif plan.get("scores"):
        xs = list(range(len(plan["scores"])))
        colors = ["tab:red" if x in plan["drop"] else "tab:blue" for x in xs]
        ax.bar(xs, plan["scores"], color=colors)
        kind = get_method(plan["method"]).kind if plan["method"] in method_names() else "per-layer"
        ax.set_ylabel(f"{plan['method']} score" + (" (block start)" if kind == "block" else ""))
    else:
        ax.bar(range(n_layers), [1 if i in plan["drop"] else 0 for i in range(n_layers)], color="tab:red")
        ax.set_ylabel("removed")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer index (original model)")
    ax.set_title(f"{plan['method']}: removing {plan['drop']} of {n_layers} layers", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
