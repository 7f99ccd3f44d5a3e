"""Conformance of every bundled task: discovered from ``tasks/``, so a new task is covered
without anyone editing this file.

For every task YAML: it loads through lm-eval's TaskManager, declares its metrics, builds
the same documents and few-shot prompts twice, honours the ``seed`` / ``eval_seed``
contract when it declares one (another seed gives items disjoint from the evaluation
items, which ``lmeval-prune select`` relies on), and runs end to end on a tiny model with
``limit`` reporting every metric it declares. For every group YAML: it runs end to end
and reports its members and its aggregate metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmeval_layerprune.resources import tasks_dir

TASKS_DIR = tasks_dir()
LIMIT = 2


class _Loader(yaml.SafeLoader):
    """Reads task YAMLs without importing anything: ``!function x.y`` stays a string."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def _read(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_Loader)
    include = data.get("include")
    if include:  # lm-eval resolves includes relative to the including file
        data = {**_read(path.parent / include), **data}
    return data


def _discover() -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    tasks, groups = [], []
    for path in sorted(TASKS_DIR.rglob("*.yaml")):
        if path.name.startswith("_"):
            continue  # templates pulled in with `include:`
        data = _read(path)
        if isinstance(data.get("group"), str):
            groups.append((data["group"], path))
        elif isinstance(data.get("task"), str):
            tasks.append((data["task"], path))
        else:
            raise AssertionError(f"{path}: neither a task nor a group (templates must start with '_')")
    return tasks, groups


ALL_TASKS, GROUPS = _discover()
#: the paper's suites and the paper's own GSM8K / XSum tasks: their data comes from the Hub, so they
#: cannot run here; tests/test_presets.py checks that every member resolves, that the paper's
#: settings reach it, and runs the two tasks on local stand-ins of their datasets.
PRESETS_DIR = TASKS_DIR / "layerprune_paper"
TASKS = [(name, path) for name, path in ALL_TASKS if PRESETS_DIR not in path.parents]
RUNNABLE_GROUPS = [(name, path) for name, path in GROUPS if PRESETS_DIR not in path.parents]


def _ids(entries: list[tuple[str, Path]]) -> list[str]:
    return [name for name, _ in entries]


def test_discovery_finds_the_bundled_probes() -> None:
    names = set(_ids(TASKS)) | set(_ids(GROUPS))
    assert {"arith_probe_add_1d", "arith_probe_mul_3d", "arith_probe_mc_sub_5d", "arith_first_digit"} <= names
    assert {"arith_word_cot", "arith_probe", "arith_probe_mc", "layerprune_probes"} <= names
    assert len(set(_ids(ALL_TASKS))) == len(ALL_TASKS), "two YAMLs declare the same task name"


def _manager(metadata: dict[str, Any] | None = None):
    """A TaskManager over the bundled folder only (indexing lm-eval's own tasks takes ~20 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False, include_path=str(TASKS_DIR), metadata=metadata)


def _build(name: str, metadata: dict[str, Any] | None = None):
    from lm_eval.tasks import get_task_dict

    return get_task_dict([name], _manager(metadata))[name]


def _digest(names: list[str]) -> dict[str, str]:
    """A hash of every task's documents and first few-shot prompts."""
    import hashlib

    out = {}
    for name in names:
        task = _build(name)
        task.set_fewshot_seed(1234)
        docs = list(task.eval_docs)
        blob = [_key(d) for d in docs] + [task.fewshot_context(d, task.config.num_fewshot or 0) for d in docs[:3]]
        out[name] = hashlib.sha256("\n".join(blob).encode()).hexdigest()
    return out


def test_every_task_is_visible_to_the_stock_task_manager() -> None:
    """Through the start-up hook, next to lm-eval's own tasks, with no name clash."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    for name, path in ALL_TASKS + GROUPS:
        assert name in manager.all_tasks, name
        assert Path(manager.task_index[name].yaml_path).resolve() == path.resolve(), (name, "shadowed")


def test_documents_are_the_same_in_another_process() -> None:
    """Generators must not depend on hash randomisation, dict order of sets, or global state."""
    import os
    import subprocess
    import sys

    names = _ids(TASKS)
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "import test_task_conformance as t; "
        f"print(json.dumps(t._digest({names!r})))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=TASKS_DIR.parent, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == _digest(names)


def _metric_names(task: Any) -> list[str]:
    return [m["metric"] if isinstance(m["metric"], str) else m["metric"].__name__ for m in task.config.metric_list]


def _key(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, default=str)


@pytest.mark.parametrize(("name", "path"), TASKS, ids=_ids(TASKS))
def test_task_loads_and_is_deterministic(name: str, path: Path) -> None:
    first, second = _build(name), _build(name)
    assert first.config.task == name
    assert first.config.metric_list, f"{path}: declare metric_list (with aggregation and higher_is_better)"
    for m in first.config.metric_list:
        assert "aggregation" in m and "higher_is_better" in m, f"{path}: metric {m['metric']} lacks them"
    assert first.has_test_docs() or first.has_validation_docs()
    docs1, docs2 = list(first.eval_docs), list(second.eval_docs)
    assert len(docs1) > 0 and [_key(d) for d in docs1] == [_key(d) for d in docs2]
    shots1, shots2 = first.fewshot_docs(), second.fewshot_docs()
    assert [_key(d) for d in shots1 or []] == [_key(d) for d in shots2 or []]
    shots = first.config.num_fewshot or 0
    contexts = []
    for task in (first, second):
        task.set_fewshot_seed(1234)
        contexts.append([task.fewshot_context(d, shots) for d in docs1[:3]])
    assert contexts[0] == contexts[1]
    # the few-shot examples never include the item being asked
    for doc, ctx in zip(docs1[:3], contexts[0], strict=True):
        question = first.doc_to_text(doc)
        assert ctx.count(question) == 1, f"{name}: the evaluated item appears among its own few-shot examples"


@pytest.mark.parametrize(("name", "path"), TASKS, ids=_ids(TASKS))
def test_selection_seed_gives_disjoint_items(name: str, path: Path) -> None:
    meta = _read(path).get("metadata") or {}
    if "eval_seed" not in meta:
        pytest.skip(f"{name} declares no eval_seed (no selection split)")
    evaluation = {_key(d) for d in _build(name).eval_docs}
    other_seed = int(meta["eval_seed"]) + 1
    selection = {_key(d) for d in _build(name, {"seed": other_seed}).eval_docs}
    assert len(selection) == len(evaluation) > 0
    assert selection.isdisjoint(evaluation)


@pytest.fixture(scope="module")
def tiny_lm(llama_dir):
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    # max_length above the tiny config's 256 positions (RoPE has no hard limit): code tasks ask for
    # 512 new tokens, which lm-eval refuses on a model it believes holds only 256
    return PrunedHFLM(pretrained=str(llama_dir), drop="1", dtype="float32", batch_size=8, max_length=1024)


def _run(lm: Any, name: str, leaves: set[str], limit: int) -> dict[str, Any]:
    from lm_eval import simple_evaluate

    paths = dict(TASKS)
    unsafe = any(_read(paths[leaf]).get("unsafe_code") for leaf in leaves)
    return simple_evaluate(
        model=lm,
        tasks=[name],
        limit=limit,
        task_manager=_manager(),
        bootstrap_iters=0,
        log_samples=False,
        confirm_run_unsafe_code=bool(unsafe),
        verbosity="ERROR",
    )


def _reported(values: dict[str, Any], metric: str) -> list[Any]:
    return [v for k, v in values.items() if k.split(",")[0] == metric and not k.endswith("_stderr")]


@pytest.mark.parametrize(("name", "path"), TASKS, ids=_ids(TASKS))
def test_task_runs_end_to_end_and_reports_its_metrics(tiny_lm, name: str, path: Path) -> None:
    results = _run(tiny_lm, name, {name}, LIMIT)
    assert results["n-samples"][name]["effective"] == LIMIT
    values = results["results"][name]
    for metric in _metric_names(_build(name)):
        found = _reported(values, metric)
        assert found, f"{name} declares {metric!r} but reported only {sorted(values)}"
        assert all(isinstance(v, int | float) for v in found), (metric, found)
        assert all(math.isnan(v) or math.isfinite(v) for v in found)
    # `lmeval-prune select` can read the primary (first declared) metric
    from lmeval_layerprune.search.objectives import primary_metrics

    assert name in primary_metrics(results)


def _leaves(group: str, by_name: dict[str, Path]) -> set[str]:
    data = _read(by_name[group])
    out: set[str] = set()
    for member in data["task"]:
        member = member if isinstance(member, str) else member.get("task") or member.get("group")
        out |= _leaves(member, by_name) if member in dict(GROUPS) else {member}
    return out


@pytest.mark.parametrize(("name", "path"), RUNNABLE_GROUPS, ids=_ids(RUNNABLE_GROUPS))
def test_group_runs_end_to_end(tiny_lm, name: str, path: Path) -> None:
    by_name = dict(GROUPS)
    leaves = _leaves(name, by_name)
    assert leaves and leaves <= set(_ids(TASKS)), f"{name}: members that are not bundled tasks"
    results = _run(tiny_lm, name, leaves, 1)
    assert leaves <= set(results["results"]), sorted(leaves - set(results["results"]))
    for agg in _read(path).get("aggregate_metric_list") or []:
        assert _reported(results["results"][name], agg["metric"]), f"{name}: no aggregate {agg['metric']}"
