"""``lmeval-prune select``: choose which layers to remove, by a one-pass metric or a greedy search.

:func:`select_layers` takes a :class:`SelectionSettings` (everything that determines the result,
and so the journal) and writes a plan usable as ``drop=plan:PATH``. The method comes from the
registry (:func:`~lmeval_layerprune.methods.registry.get_method`): one-pass methods (``last``,
``bi``, ``angular``, ...) go through :func:`~lmeval_layerprune.methods.resolve.choose_layers`;
greedy ones run :func:`~lmeval_layerprune.search.greedy.greedy_search` on the objective the method
names (``tasks``: :class:`~lmeval_layerprune.search.objectives.TaskObjective`, ``perplexity``:
:class:`~lmeval_layerprune.search.objectives.PerplexityObjective`).

Better than the original code of the paper on each point:

* one loaded model for the whole search: candidates run by swapping the layer list
  (:func:`lmeval_layerprune.core.slicing.layer_subset`), never by writing checkpoints or
  restarting an engine;
* the baseline is computed once; decoding is whatever the task says (greedy for the
  bundled probes);
* the objective runs through lm-eval itself, on a *selection* split: for the bundled
  tasks a different generator seed (``selection_seed``) than the evaluation items;
* within a round, the hidden states entering each layer are reused for ``ppl`` (SLEB-style
  calibration perplexity) and for every loglikelihood forward of a task objective, so a
  candidate only recomputes the layers after the one it removes
  (:class:`~lmeval_layerprune.search.reuse.HiddenStateReuse`);
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
  run restarted with the same arguments continues where it stopped and ends with the same plan;
* with ``executor=ClusterSettings("ray", workers=N)`` each round's candidates are measured on N Ray
  workers that each hold the model (:mod:`lmeval_layerprune.search.parallel`): the same plan.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.cluster import EXECUTORS, ClusterSettings, require_ray
from lmeval_layerprune.core.embedded import resolve_pretrained
from lmeval_layerprune.core.guard import Reads, guard_output, owned_json
from lmeval_layerprune.core.interrupt import keeping
from lmeval_layerprune.core.journal import Journal
from lmeval_layerprune.core.output import check_replace, write_output
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.lmeval.hf import PrunedHFLM
from lmeval_layerprune.methods.capture import (
    DEFAULT_CALIB_SAMPLES,
    Calibration,
    calibration_states,
    load_calibration_texts,
)
from lmeval_layerprune.methods.registry import LayerMethod, get_method, method_names
from lmeval_layerprune.methods.resolve import choose_layers
from lmeval_layerprune.search.greedy import GreedySettings, greedy_search
from lmeval_layerprune.search.objectives import DEFAULT_CHUNK_SIZE, PerplexityObjective, TaskObjective
from lmeval_layerprune.search.parallel import ray_greedy_search
from lmeval_layerprune.search.plot import plot_plan
from lmeval_layerprune.search.protocols import Objective

logger = logging.getLogger(__name__)

DEFAULT_TASKS = ("arith_probe",)
#: how the greedy search runs: exact early elimination (default), every item, or successive halving
MODES = ("exact", "exhaustive", "race")
DEFAULT_SELECTION_SEED = 777


@dataclass
class SelectionSettings:
    """Everything that determines a selection's result (and so its journal).

    ``model``: checkpoint directory, Hub id or ``"embedded"``; ``method``: a registered method
    (``iterative``: greedy on lm-eval tasks, ``ppl``: greedy on calibration perplexity, or a one-pass
    metric such as ``bi``, ``angular``, ``last``); ``n``: layers to remove. ``tasks``, ``limit``,
    ``selection_seed`` and ``include_path`` (a folder of extra task YAMLs, as lm-eval's
    ``--include_path``) define the ``iterative`` objective; ``calib``/``calib_samples`` the calibration
    text of ``ppl`` and of the metrics that score hidden states; ``protect``: original layer indices
    the greedy methods never remove; ``chunk_size``: items per task scored at a time by the exact
    search (its stopping granularity). Sequences become tuples and ``protect`` is sorted, so equal
    settings have equal :meth:`key` however they were spelled.
    """

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

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.include_path = str(self.include_path) if self.include_path else None
        self.protect = tuple(sorted(set(self.protect)))

    def key(self) -> str:
        # race shares the journal with exact runs: full-budget results are the same measurements
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _task_objective(lm: PrunedHFLM, s: SelectionSettings) -> Objective:
    return TaskObjective(lm, s.tasks, s.limit, s.selection_seed, s.include_path, s.chunk_size)


def _perplexity_objective(lm: PrunedHFLM, s: SelectionSettings) -> Objective:
    return PerplexityObjective(lm.model, lm.tokenizer, load_calibration_texts(s.calib, s.calib_samples))


#: a greedy method's ``objective`` (in the registry) -> how to build it on the loaded model
OBJECTIVES: dict[str, Callable[[PrunedHFLM, SelectionSettings], Objective]] = {
    "tasks": _task_objective,
    "perplexity": _perplexity_objective,
}


def _load_model(settings: SelectionSettings, device: str | None) -> PrunedHFLM:
    return PrunedHFLM(pretrained=settings.model, dtype=settings.dtype, batch_size=settings.batch_size, device=device)


def load_objective(settings: SelectionSettings, objective: str, device: str | None) -> Objective:
    """The greedy objective ``objective`` (a key of :data:`OBJECTIVES`) on ``settings.model`` loaded on
    ``device``: what each Ray worker of ``select --executor ray`` builds once."""
    return OBJECTIVES[objective](_load_model(settings, device), settings)


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


def _check_method(settings: SelectionSettings) -> LayerMethod:
    if settings.method not in method_names():
        raise ValueError(f"unknown method {settings.method!r}; expected one of {', '.join(method_names())}")
    method = get_method(settings.method)
    if method.kind == "greedy" and method.objective not in OBJECTIVES:
        raise ValueError(
            f"method {method.name!r} searches on objective {method.objective!r}; select knows {', '.join(OBJECTIVES)}"
        )
    return method


def _check_model(settings: SelectionSettings, num_layers: int) -> None:
    for p in settings.protect:
        if not 0 <= p < num_layers:
            raise ValueError(f"protected layer {p} is out of range (the model has {num_layers} layers)")
    if not 1 <= settings.n < num_layers:
        raise ValueError(f"n={settings.n} must be between 1 and {num_layers - 1}")


def select_layers(
    settings: SelectionSettings,
    *,
    device: str | None = None,
    out: str | Path | None = None,
    journal: str | Path | None = None,
    plot: str | Path | None = None,
    progress: bool = True,
    mode: str = "exact",
    executor: ClusterSettings | None = None,
) -> dict[str, Any]:
    """Choose ``settings.n`` layers to remove from ``settings.model`` and return (and optionally write) the plan.

    The keyword arguments do not change the journal (:meth:`SelectionSettings.key`):

    Args:
        settings: what determines the result (model, method, n, the objective's tasks or calibration).
        device: where to run the model (default: cuda if available, else cpu; Ray workers: their own).
        out: write the plan JSON here (usable as ``drop=plan:PATH``).
        journal: resumable record of every measurement (default: ``<out>.journal.jsonl``).
        plot: write a PNG of the scores here.
        progress: show a progress bar.
        mode: greedy methods: ``exact`` (early elimination, the default), ``exhaustive`` (every item of
            every candidate; the same plan) or ``race`` (successive halving per round, approximate; see
            :func:`~lmeval_layerprune.search.greedy.greedy_search`).
        executor: where a greedy search measures its candidates: in this process (default, or
            ``executor="local"``) or on Ray workers that each hold the model (``ClusterSettings("ray", ...)``;
            :mod:`lmeval_layerprune.search.parallel`). One-pass methods always run in this process.

    Returns:
        The plan: ``model``, ``num_layers``, ``drop``, ``method``, scores and settings.
    """
    method = _check_method(settings)
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES)}")
    executor = executor or ClusterSettings()
    if executor.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor.executor!r}; expected one of {', '.join(EXECUTORS)}")
    on_ray = executor.executor == "ray" and method.kind == "greedy"
    if on_ray:
        require_ray()  # before any work
    if journal is None and out is not None:
        journal = Path(str(out) + ".journal.jsonl")
    _check_outputs(settings, out, journal, plot)
    lm = None if on_ray else _load_model(settings, device)
    config = lm.model.config if lm is not None else AutoConfig.from_pretrained(str(resolve_pretrained(settings.model)))
    num_layers = arch_num_layers(config)
    _check_model(settings, num_layers)

    plan: dict[str, Any] = {"model": settings.model, "num_layers": num_layers, "method": settings.method}
    if method.kind != "greedy":  # one pass, in this model's own layer numbers
        assert lm is not None
        if executor.executor == "ray":
            logger.info("select: %s chooses in one pass, in this process (--executor applies to greedy methods)",
                        method.name)  # fmt: skip
        states = None
        if method.needs_states:
            calibration = Calibration.of(settings.calib, settings.calib_samples)
            states = calibration_states(lm.model, lm.tokenizer, calibration)
        drop, scores = choose_layers(method, num_layers, settings.n, states)
        plan["drop"] = list(drop)
        if scores is not None:
            plan["scores"] = scores
    else:
        assert method.objective is not None
        record = Journal.open(journal, settings)  # a journal of other settings is refused before any work
        search = GreedySettings(
            settings.n, settings.protect, race=mode == "race", exhaustive=mode == "exhaustive", progress=progress
        )
        with keeping(lambda: _kept(record, journal), resume=RESUME):
            if on_ray:
                factory = functools.partial(load_objective, settings, method.objective)
                plan.update(ray_greedy_search(factory, settings.model, num_layers, record, search, executor))
            else:
                assert lm is not None
                plan.update(greedy_search(OBJECTIVES[method.objective](lm, settings), num_layers, record, search))
    plan["settings"] = asdict(settings)
    plan = PruningPlan.from_dict(plan, source="the selected plan").to_dict()  # the one plan layout
    if out is not None:
        PruningPlan.from_dict(plan).save(out, folder=False)  # written beside, then renamed: atomic
    if plot is not None:
        write_output(plot, lambda tmp: plot_plan(plan, tmp), overwrite=True, what="plot", flag="--plot")
    return plan


#: how an interrupted greedy selection resumes (what it kept is :func:`_kept`)
RESUME = "rerun the same command to resume (the measurements in the journal are not repeated)"


def _kept(record: Journal, journal: str | Path | None) -> str:
    """What an interrupted greedy search has kept, for the one line printed on Ctrl-C."""
    n = len(record.records)
    if journal is None or not n:
        return "no measurement was kept" + ("" if journal is None else f" ({journal} holds none yet)")
    return f"{n} candidate measurement{'s' if n != 1 else ''} kept in {journal}"


def _check_outputs(settings: SelectionSettings, out: str | Path | None, journal: str | Path | None,
                   plot: str | Path | None) -> None:  # fmt: skip
    """Before any work: no output over an input or inside a model folder (a task folder is read only for its
    YAMLs: a new file beside them is fine), and no file in the way that is not this tool's."""
    inputs = [settings.model, settings.calib, Reads(settings.include_path) if settings.include_path else None]
    if out is not None:  # its own plan is replaced: select's documented behaviour
        guard_output(out, inputs=inputs, overwrite=True, owned=owned_json("drop", "num_layers"))
    if journal is not None:
        guard_output(journal, inputs=inputs, owned=Journal.is_journal, what="journal", flag="--journal", folder=False)
    if plot is not None:
        guard_output(plot, inputs=inputs, what="plot", flag="--plot", folder=False)
        check_replace(plot, overwrite=True, what="plot", flag="--plot")
