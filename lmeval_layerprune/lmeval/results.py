"""lm-eval results, read once, for everyone: typed scores, model arguments, provenance, per-item values.

A *run* is one ``results_*.json`` file written by ``lm_eval --output_path`` (or by
:func:`lm_eval.simple_evaluate` and saved by us), with the ``samples_<task>_<date>.jsonl`` files
that ``--log_samples`` writes beside it. ::

    run = load_run("out/")                      # a results file, or a folder holding one run
    run.score("arith_probe_add_1d")             # the task's primary metric (first declared, first filter)
    run.score("arith_probe_mc", "acc").stderr   # groups too
    run.items("arith_probe_add_1d", "exact_match")   # {doc_id: value} from the samples file, read on demand
    run.plan                                    # the pruning plan lm-eval recorded (``config["layer_pruning"]``)
    runs = load_runs(["sweep/"])                # every run under a tree, oldest first per folder

Reading is cheap: only the results JSON is parsed when loading; samples files are located by
name and parsed the first time :meth:`Run.items` asks for them.

Metric keys follow lm-eval's ``"<metric>,<filter>"`` convention (``"acc,none"``,
``"exact_match,first-integer"``) with the standard error under ``"<metric>_stderr,<filter>"``;
``Score.filter`` keeps lm-eval's filter name (``"none"`` when unfiltered). Model arguments given as
a string are parsed with lm-eval's own CLI parser (bracket-aware: ``drop=[3,5]`` stays one value).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import RESULTS_GLOB, RESULTS_KEY
from lmeval_layerprune.errors import ResultsError

GENERATIVE = "generative"
LIKELIHOOD = "likelihood"
_GENERATIVE_TYPES = ("generate_until",)
#: the key under which the pruned-hf model records its plan in lm-eval's results ``config``
PROVENANCE_KEY = RESULTS_KEY


@dataclass(frozen=True)
class Score:
    """One metric of one task (or group) in an lm-eval run.

    ``n`` is the number of items the value was computed on (``n-samples.effective`` for a task;
    the group's sample count, or the sum over its members, for a group).
    """

    task: str
    metric: str
    filter: str | None
    value: float
    stderr: float | None
    n: int | None
    output_type: str | None
    num_fewshot: int | None
    higher_is_better: bool | None
    group: bool = False

    @property
    def key(self) -> str:
        """lm-eval's key of this score in ``results[task]``: ``"metric,filter"``."""
        return f"{self.metric},{self.filter or 'none'}"

    @property
    def label(self) -> str:
        """``metric`` or ``metric (filter)`` for display."""
        return self.metric if not self.filter or self.filter == "none" else f"{self.metric} ({self.filter})"

    @property
    def kind(self) -> str:
        """``generative`` (generate_until) or ``likelihood`` (multiple choice, loglikelihood)."""
        return GENERATIVE if self.output_type in _GENERATIVE_TYPES else LIKELIHOOD


def parse_model_args(args: Any) -> dict[str, Any]:
    """lm-eval model arguments as a dict: a dict as given, or a ``k=v,k2=v2`` string parsed the way
    the ``lm_eval`` CLI parses ``--model_args`` (commas inside brackets or quotes do not split)."""
    if isinstance(args, dict):
        return dict(args)
    if args is None or not str(args).strip():
        return {}
    text = str(args).strip()
    try:
        from lm_eval._cli.utils import key_val_to_dict, try_parse_json
    except ImportError:  # an lm-eval without the new CLI: its Python-side parser
        from lm_eval.utils import simple_parse_args_string

        return simple_parse_args_string(text)
    parsed = try_parse_json(text)
    if isinstance(parsed, dict):
        return parsed
    try:
        return key_val_to_dict(text)
    except ValueError as e:
        raise ResultsError(f"model arguments {text!r} are not key=value pairs: {e}") from None


def metric_name(entry: Any) -> str:
    """The metric name of a ``metric_list`` entry as lm-eval writes it into the results config
    (a ``!function`` metric arrives as its source code: its ``def`` name is the metric)."""
    name = entry.get("metric") if isinstance(entry, dict) else entry
    name = name if isinstance(name, str) else getattr(name, "__name__", str(name))
    defined = re.match(r"\s*def\s+(\w+)", name)
    return defined.group(1) if defined else name


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _date_id(results_file: Path) -> str:
    """The timestamp lm-eval puts in both the results and the samples file names."""
    stem = results_file.stem
    return stem[stem.rfind("_") + 1 :] if "_" in stem else stem


@dataclass
class Run:
    """One lm-eval run: its scores, configuration and (lazily) its per-item samples.

    ``model`` is the evaluated model's name (``pretrained`` for Hugging Face models); ``backend``
    is lm-eval's model type (``hf``, ``pruned-hf``, ``vllm`` ...). ``plan`` is the pruning plan the
    model recorded in the results ``config`` (``config["layer_pruning"]``: base model, layers removed
    and kept, method, spec ...) when there is one; otherwise ``None`` (see :attr:`drop_spec`).
    """

    path: Path | None
    model: str | None
    model_args: dict[str, Any]
    plan: dict[str, Any] | None
    scores: list[Score]
    configs: dict[str, dict[str, Any]]
    groups: dict[str, list[str]]
    backend: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    lm_eval_version: str | None = None
    date: float | None = None
    chat_template: bool = False
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None
    samples_files: dict[str, Path] = field(default_factory=dict, repr=False)
    _samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- lookups

    @property
    def tasks(self) -> list[str]:
        """Every task and group with a score, in the file's order."""
        return list(dict.fromkeys(s.task for s in self.scores))

    @property
    def top_tasks(self) -> list[str]:
        """The tasks and groups that are not a member of a group in this run (what was asked for)."""
        members = {t for v in self.groups.values() for t in v}
        return [t for t in self.tasks if t not in members]

    @property
    def leaf_tasks(self) -> list[str]:
        """Tasks (not groups) with a score."""
        return [t for t in self.tasks if t not in self.groups]

    @property
    def limit(self) -> float | None:
        return _number(self.config.get("limit"))

    @property
    def drop_spec(self) -> Any:
        """The drop spec as given in the model arguments (``None`` for an unpruned ``hf`` run)."""
        return self.model_args.get("drop")

    def primary_metric(self, task: str) -> str | None:
        """The task's first declared metric (for a group: its first aggregate metric)."""
        cfg = self.configs.get(task) or {}
        metrics = cfg.get("metric_list")
        if metrics:
            return metric_name(metrics[0])
        first = next((s for s in self.scores if s.task == task), None)
        return first.metric if first else None

    def score(self, task: str, metric: str | None = None, filter: str | None = None) -> Score | None:
        """The score of ``task`` for ``metric`` (default: the primary metric) under ``filter``
        (default: the first filter that reports it), or ``None`` when the run has none."""
        metric = metric or self.primary_metric(task)
        for s in self.scores:
            if s.task == task and s.metric == metric and (filter is None or s.filter == filter):
                return s
        return None

    def scores_of(self, task: str) -> list[Score]:
        return [s for s in self.scores if s.task == task]

    def primary_scores(self) -> dict[str, float]:
        """Each leaf task's primary metric (first declared, first filter): ``task -> value``.

        Raises :class:`ResultsError` when a task reported no value for its primary metric."""
        out = {}
        for task in self.configs:
            s = self.score(task)
            if s is None:
                got = sorted({x.key for x in self.scores_of(task)})
                raise ResultsError(f"task {task!r} reported no {self.primary_metric(task)!r} metric (got {got})")
            out[task] = s.value
        return out

    # ---------------------------------------------------------------- per-item samples

    def samples(self, task: str) -> list[dict[str, Any]] | None:
        """The ``--log_samples`` records of ``task`` (parsed on first use), or ``None``."""
        if task in self._samples:
            return self._samples[task]
        path = self.samples_files.get(task)
        if path is None:
            return None
        with open(path, encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        self._samples[task] = records
        return records

    def items(self, task: str, metric: str | None = None, filter: str | None = None) -> dict[int, float] | None:
        """Per-item values of ``metric`` (default: the primary one), keyed by ``doc_id``, from the
        samples file; ``filter`` defaults to the filter of :meth:`score`. ``None`` when the run has
        no samples for the task or the metric's per-item values are not numbers (corpus metrics)."""
        records = self.samples(task)
        if records is None:
            return None
        metric = metric or self.primary_metric(task)
        if filter is None:
            s = self.score(task, metric)
            filter = s.filter if s is not None else None
        out: dict[int, float] = {}
        for r in records:
            if filter is not None and r.get("filter", "none") != filter:
                continue
            v = _number(r.get(metric))
            if v is not None:
                out[int(r["doc_id"])] = v
        return out or None


def _n_items(task: str, data: dict[str, Any], metric_key: str, groups: dict[str, list[str]]) -> int | None:
    n_samples = data.get("n-samples") or {}
    if task in n_samples:
        eff = (n_samples[task] or {}).get("effective")
        return int(eff) if eff is not None else None
    entry = (data.get("groups") or {}).get(task) or (data.get("results") or {}).get(task) or {}
    count = (entry.get("sample_count") or {}).get(metric_key)
    if isinstance(count, int):
        return count
    parts = [_n_items(t, data, metric_key, groups) for t in groups.get(task, [])]
    return sum(p for p in parts if p) or None


def _output_type(task: str, configs: dict[str, Any], groups: dict[str, list[str]]) -> str | None:
    if task in configs:
        return configs[task].get("output_type")
    kinds = {_output_type(t, configs, groups) for t in groups.get(task, [])} - {None}
    if len(kinds) == 1:
        return kinds.pop()
    return "generate_until" if "generate_until" in kinds else (sorted(kinds)[0] if kinds else None)


def _plan_of(config: dict[str, Any]) -> dict[str, Any] | None:
    plan = config.get(PROVENANCE_KEY)
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except json.JSONDecodeError:
            return None
    return dict(plan) if isinstance(plan, dict) else None


def parse_results(data: dict[str, Any], path: str | Path | None = None) -> Run:
    """A :class:`Run` from an lm-eval results mapping (a results file's content, or what
    :func:`lm_eval.simple_evaluate` / :func:`lm_eval.evaluator.evaluate` return; in-memory
    ``samples`` are used by :meth:`Run.items`)."""
    where = str(path) if path is not None else "the results"
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ResultsError(f"{where} is not an lm-eval results file (it has no 'results' mapping)")
    configs = {k: v for k, v in (data.get("configs") or {}).items() if isinstance(v, dict)}
    groups = {k: list(v) for k, v in (data.get("group_subtasks") or {}).items()}
    hib = data.get("higher_is_better") or {}
    shots = data.get("n-shot") or {}
    merged: dict[str, dict[str, Any]] = {}
    for section in ("results", "groups"):
        for task, metrics in (data.get(section) or {}).items():
            if isinstance(metrics, dict):
                merged.setdefault(task, {}).update(metrics)
    scores: list[Score] = []
    for task, metrics in merged.items():
        for key, raw in metrics.items():
            if "," not in key:
                continue
            metric, filt = key.split(",", 1)
            value = _number(raw)
            if metric.endswith("_stderr") or value is None:
                continue
            shot = shots.get(task)
            scores.append(
                Score(
                    task=task,
                    metric=metric,
                    filter=filt,
                    value=value,
                    stderr=_number(metrics.get(f"{metric}_stderr,{filt}")),
                    n=_n_items(task, data, key, groups),
                    output_type=_output_type(task, configs, groups),
                    num_fewshot=int(shot) if isinstance(shot, int | float) and not isinstance(shot, bool) else None,
                    higher_is_better=(hib.get(task) or {}).get(metric),
                    group=task in groups,
                )
            )
    config = dict(data.get("config") or {})
    model_args = parse_model_args(config.get("model_args"))
    model = data.get("model_name") or model_args.get("pretrained")
    run = Run(
        path=Path(path) if path is not None else None,
        model=str(model) if model is not None else None,
        model_args=model_args,
        plan=_plan_of(config),
        scores=scores,
        configs=configs,
        groups=groups,
        backend=config.get("model") or data.get("model_source"),
        config=config,
        lm_eval_version=data.get("lm_eval_version"),
        date=_number(data.get("date")),
        chat_template=bool(data.get("chat_template")),
        fewshot_as_multiturn=bool(data.get("fewshot_as_multiturn")),
        system_instruction=data.get("system_instruction") or None,
    )
    samples = data.get("samples")
    if isinstance(samples, dict):
        run._samples.update({k: list(v) for k, v in samples.items()})
    return run


def _read_file(path: Path, siblings: Sequence[str] | None = None) -> Run:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not a readable lm-eval results JSON file: {e}") from None
    run = parse_results(data, path)
    date = _date_id(path)
    names = siblings if siblings is not None else os.listdir(path.parent)
    suffix = f"_{date}.jsonl"
    for name in names:
        if name.startswith("samples_") and name.endswith(suffix):
            run.samples_files[name[len("samples_") : -len(suffix)]] = path.parent / name
    return run


def _walk(root: Path) -> Iterable[tuple[Path, list[str]]]:
    """(folder, file names) for every folder under ``root`` that holds a results file."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if any(f.startswith("results_") and f.endswith(".json") for f in files):
            yield Path(folder), files


def load_runs(paths: str | Path | Sequence[str | Path]) -> list[Run]:
    """Every run in ``paths``: results files as given, folders searched recursively for
    ``results_*.json`` (the ``lm_eval --output_path`` layout). Runs of one folder come oldest first
    (lm-eval's timestamps sort); folders in path order. Raises :class:`ResultsError` for a path
    that does not exist or a folder without any results file."""
    if isinstance(paths, str | Path):
        paths = [paths]
    runs: list[Run] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_file():
            runs.append(_read_file(p))
            continue
        if not p.is_dir():
            raise ResultsError(f"lm-eval results {str(p)!r} do not exist (give a results_*.json file or its folder)")
        found = False
        for folder, files in _walk(p):
            for name in sorted(f for f in files if f.startswith("results_") and f.endswith(".json")):
                runs.append(_read_file(folder / name, files))
                found = True
        if not found:
            raise ResultsError(f"no lm-eval {RESULTS_GLOB} files under {str(p)!r}")
    return runs


def load_run(path: str | Path) -> Run:
    """The one run in ``path``: a results file, or a folder (searched recursively) holding exactly
    one results file. Several runs in the folder is an error naming them (use :func:`load_runs`)."""
    runs = load_runs([path])
    if len(runs) > 1:
        names = ", ".join(str(r.path.relative_to(path)) if r.path else "?" for r in runs[:5])
        raise ResultsError(
            f"{str(path)!r} holds {len(runs)} lm-eval runs ({names}{', ...' if len(runs) > 5 else ''}); "
            "pass one results file, or read them all with load_runs"
        )
    return runs[0]


def merge_runs(runs: Sequence[Run]) -> Run:
    """One run from several runs of the same model (e.g. tasks evaluated separately): scores
    are united, a later run's score of the same task and metric replacing an earlier one's."""
    if not runs:
        raise ResultsError("no lm-eval runs to merge")
    last = runs[-1]
    by_key: dict[tuple[str, str], Score] = {}
    configs: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    samples_files: dict[str, Path] = {}
    for r in runs:
        for s in r.scores:
            by_key.pop((s.task, s.key), None)
            by_key[(s.task, s.key)] = s
        configs.update(r.configs)
        groups.update(r.groups)
        samples_files.update(r.samples_files)
    merged = Run(
        path=last.path,
        model=last.model,
        model_args=dict(last.model_args),
        plan=next((r.plan for r in reversed(runs) if r.plan), None),
        scores=list(by_key.values()),
        configs=configs,
        groups=groups,
        backend=last.backend,
        config=dict(last.config),
        lm_eval_version=next((r.lm_eval_version for r in reversed(runs) if r.lm_eval_version), None),
        date=last.date,
        chat_template=any(r.chat_template for r in runs),
        fewshot_as_multiturn=any(r.fewshot_as_multiturn for r in runs),
        system_instruction=next((r.system_instruction for r in reversed(runs) if r.system_instruction), None),
        samples_files=samples_files,
    )
    return merged
