"""Choose which layers to remove: one-pass metrics and the greedy search of the paper.

Greedy search (``iterative``, ``ppl``): starting from the full model, every remaining
layer that is not protected is removed in turn (together with the ones already chosen),
the pruned model is scored, each task's score is normalised by the **full model's** score
(0 when that is 0), the normalised scores are averaged, and the best candidate is removed
(ties go to the higher index); repeat until ``n`` layers are gone.

Better than the original code on each point:

* one loaded model for the whole search: candidates run by swapping the layer list
  (:func:`lmeval_layerprune.slicing.layer_subset`), never by writing checkpoints or
  restarting an engine;
* the baseline is computed once; decoding is whatever the task says (greedy for the
  bundled probes);
* the objective runs through lm-eval itself, on a *selection* split: for the bundled
  tasks a different generator seed (``selection_seed``) than the evaluation items;
* within a round, the hidden states entering each layer are reused for ``ppl`` (SLEB-style
  calibration perplexity) and for every loglikelihood forward of a task objective, so a
  candidate only recomputes the layers after the one it removes (:class:`HiddenStateReuse`);
* every candidate's result is appended to a journal as soon as it is known, so a killed
  run restarted with the same arguments continues where it stopped and ends with the same plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from .arch import arch_for
from .importance import DEFAULT_CALIB_MAX_TOKENS, DEFAULT_CALIB_SAMPLES, compute_scores, load_calibration_texts
from .plan import PruningPlan, resolve_drop
from .slicing import _get_layers, keep_from_drop, layer_subset
from .spec import select_by_scores

logger = logging.getLogger(__name__)

METHODS = ("iterative", "ppl", "bi", "angular", "last")
DEFAULT_TASKS = ("arith_probe",)
DEFAULT_SELECTION_SEED = 777
#: memory for the hidden states kept within a round (beyond it, forwards simply recompute)
DEFAULT_REUSE_BYTES = 4 << 30
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

    def key(self) -> str:
        # race shares the journal with exact runs: full-budget results are the same measurements
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


# -------------------------------------------------------------------- journal


@dataclass
class Journal:
    """Append-only JSONL record of every measurement, keyed by the settings."""

    path: Path | None
    settings_key: str
    records: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path | None, settings: SelectionSettings) -> Journal:
        journal = cls(Path(path) if path else None, settings.key())
        if journal.path is None or not journal.path.exists():
            return journal
        data = journal.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A write cut short by a kill: drop the fragment so later appends start on a fresh line.
            data = data[: data.rfind(b"\n") + 1]
            with open(journal.path, "r+b") as fh:
                fh.truncate(len(data))
        lines = data.decode().splitlines()
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{journal.path}:{i + 1} is not valid JSON; the journal is damaged") from None
            if rec.get("settings_key") != journal.settings_key:
                raise ValueError(
                    f"the journal {journal.path} was written with other settings; "
                    "use another --journal (or delete it) to start a new search"
                )
            journal.records[rec["id"]] = rec["raw"]
        return journal

    def get(self, rec_id: str) -> dict[str, float] | None:
        return self.records.get(rec_id)

    def add(self, rec_id: str, raw: dict[str, float], **extra: Any) -> None:
        self.records[rec_id] = raw
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"settings_key": self.settings_key, "id": rec_id, "raw": raw, **extra})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


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
    ) -> None:
        from lm_eval.tasks import TaskManager, get_task_dict

        self.lm = lm
        self.limit = limit
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

    def start_round(self, dropped: Sequence[int]) -> None:
        self.reuse.start_round(dropped)

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
    from .results import parse_results

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
    round's states for slots ``0..q``. Candidates are visited from the deepest slot down, so
    the first full run of a round serves every later candidate, and states no longer needed
    are freed as the round proceeds.

    Used by :class:`PerplexityObjective` (one key per calibration text) and by
    :class:`TaskObjective` for every loglikelihood forward pass lm-eval makes (keyed by the
    exact token batch); generation is never reused.
    """

    def __init__(self, model: torch.nn.Module, max_bytes: int = DEFAULT_REUSE_BYTES) -> None:
        self.model = model
        self.num_layers = int(model.config.num_hidden_layers)
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
            out = self._run_from(q, states[q], run)
            self._bytes -= sum(_nbytes(s) for s in states[q + 1 :])
            del states[q + 1 :]  # later candidates sit at shallower slots
            return out
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

    def _run_from(self, q: int, state: torch.Tensor, run: Callable[[], _T]) -> _T:
        parent, attr, layers = self._layers()
        setattr(parent, attr, torch.nn.ModuleList([*map(_Skip, layers[:q]), *layers[q:]]))

        def inject(_m: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                return (state, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": state}

        handle = layers[q].register_forward_pre_hook(inject, with_kwargs=True)
        try:
            return run()
        finally:
            handle.remove()
            setattr(parent, attr, layers)


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


def greedy_search(
    objective: Callable[..., dict[str, float]],
    num_layers: int,
    n: int,
    protect: Sequence[int],
    journal: Journal,
    higher_is_better: bool = True,
    progress: bool = True,
    race: bool = False,
) -> dict[str, Any]:
    """The greedy loop; returns ``drop``, ``baseline`` and per-round scores.

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

    def measure(rec_id: str, drop: list[int], fraction: float, **extra: Any) -> dict[str, float]:
        rec_id = rec_id if fraction == 1.0 else f"{rec_id}@{fraction:.4f}"
        raw = journal.get(rec_id)
        if raw is None:
            raw = objective(drop) if fraction == 1.0 else objective(drop, fraction=fraction)
            journal.add(rec_id, raw, **extra)
        return raw

    bases = {f: measure("baseline", [], f) for f in rungs}
    dropped: list[int] = []
    rounds = []
    evaluations = 0
    total = sum(candidates_total - r for r in range(n)) if not race else None
    with tqdm(total=total, desc="layer search", disable=not progress, unit="cand") as bar:
        for r in range(n):
            alive = [i for i in range(num_layers) if i not in dropped and i not in protect]
            scores: dict[int, float] = {}
            budget: dict[int, float] = {}
            if start_round is not None:
                start_round(dropped)
            for fraction in rungs:
                # deepest first: the first full forward of a round serves every later candidate
                for c in sorted(alive, reverse=True):
                    raw = measure(_candidate_id([*dropped, c]), sorted([*dropped, c]), fraction, round=r, candidate=c)
                    scores[c] = normalized(raw, bases[fraction], higher_is_better, lower)
                    budget[c] = fraction
                    evaluations += 1
                    bar.set_postfix(round=f"{r + 1}/{n}", layer=c, budget=fraction)
                    bar.update(1)
                if fraction != rungs[-1]:
                    ranked = sorted(alive, key=lambda c: (scores[c], c), reverse=True)
                    alive = ranked[: max(2, -(-len(ranked) // RACE_KEEP))]
            best = max(alive, key=lambda c: (scores[c], c))  # ties go to the higher index
            dropped.append(best)
            record = {"round": r, "chosen": best, "scores": {str(c): scores[c] for c in sorted(scores)}}
            if race:
                record["budget"] = {str(c): budget[c] for c in sorted(budget)}
            rounds.append(record)
            logger.info("round %d: removing layer %d (normalised score %.4f)", r + 1, best, scores[best])
    return {
        "drop": sorted(dropped),
        "order": dropped,
        "baseline": bases[1.0],
        "rounds": rounds,
        "evaluations": evaluations,
    }


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
        race: successive halving within each greedy round (see :func:`greedy_search`).

    Returns:
        The plan: ``model``, ``num_layers``, ``drop``, ``method``, scores and settings.
    """
    from .lm import PrunedHFLM

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
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
    )
    if journal is None and out is not None:
        journal = Path(str(out) + ".journal.jsonl")
    lm = PrunedHFLM(pretrained=model, dtype=dtype, batch_size=batch_size, device=device)
    num_layers = int(lm.model.config.num_hidden_layers)
    for p in settings.protect:
        if not 0 <= p < num_layers:
            raise ValueError(f"protected layer {p} is out of range (the model has {num_layers} layers)")
    if not 1 <= n < num_layers:
        raise ValueError(f"n={n} must be between 1 and {num_layers - 1}")

    plan: dict[str, Any] = {"model": model, "num_layers": num_layers, "method": method}
    if method == "last":
        # the one resolver (config only), in this model's own layer numbers
        cfg = lm.model.config
        plan["drop"] = list(resolve_drop(cfg, f"last:{n}").on_parent(PruningPlan.from_config(cfg)).drop)
    elif method in ("bi", "angular"):
        scores = compute_scores(method, lm.model, lm.tokenizer, n, calib=calib, samples=calib_samples)
        plan["drop"] = list(select_by_scores(method, scores, n, num_layers))
        plan["scores"] = scores
    else:
        jr = Journal.open(journal, settings)
        if method == "iterative":
            objective: Any = TaskObjective(lm, settings.tasks, limit, selection_seed, include_path)
        else:
            texts = load_calibration_texts(calib, calib_samples)
            objective = PerplexityObjective(lm.model, lm.tokenizer, texts)
        result = greedy_search(
            objective, num_layers, n, settings.protect, jr, objective.higher_is_better, progress=progress, race=race
        )
        plan.update(result)
    plan["settings"] = asdict(settings)
    plan = PruningPlan.from_dict(plan, source="the selected plan").to_dict()  # the one plan layout
    if out is not None:
        PruningPlan.from_dict(plan).save(out, folder=False)
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
        ax.set_ylabel("block influence" if plan["method"] == "bi" else "angular distance (block start)")
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
