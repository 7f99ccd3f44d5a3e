"""The objectives of ``select``'s greedy search (:mod:`lmeval_layerprune.search.greedy`).

* :class:`TaskObjective` (method ``iterative``): each lm-eval task's primary metric on a *selection*
  split (for the bundled tasks a different generator seed than the evaluation items), run through
  lm-eval itself. Where every task's primary metric is a mean of per-item values in a known range
  (:data:`BOUNDED_METRICS`), it is an :class:`~lmeval_layerprune.search.protocols.ItemObjective`:
  it scores items chunk by chunk (the exact early elimination), each item with a continuous
  secondary score that costs no extra pass (the log-probability of the reference answer as far as
  greedy generation followed it, or of the gold choice), the tie-break.
* :class:`PerplexityObjective` (method ``ppl``): SLEB-style calibration perplexity.

Both reuse, within a round, the hidden states entering each layer (:class:`HiddenStateReuse`), so a
candidate only recomputes the layers after the one it removes.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.metrics import mean
from lm_eval.api.registry import is_higher_better
from lm_eval.defaults import DEFAULT_OTHER_SEED
from lm_eval.evaluator import evaluate
from lm_eval.evaluator_utils import get_sample_size
from lm_eval.tasks import TaskManager, get_task_dict

from lmeval_layerprune.lmeval.results import parse_results
from lmeval_layerprune.methods.capture import DEFAULT_CALIB_MAX_TOKENS
from lmeval_layerprune.search.protocols import ItemObjective, ItemTask, Objective
from lmeval_layerprune.search.reuse import HiddenStateReuse

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


class TaskObjective(ItemObjective):
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
    metrics = getattr(task.config, "metric_list", None) or [{"metric": "acc"}]
    first = metrics[0]
    if "higher_is_better" in first:
        return bool(first["higher_is_better"])
    name = first["metric"] if isinstance(first["metric"], str) else first["metric"].__name__
    return is_higher_better(name) is not False


def primary_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Each leaf task's first declared metric (under its first filter), read by :mod:`.results`."""
    return parse_results(results).primary_scores()


class PerplexityObjective(Objective):
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
