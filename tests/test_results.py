"""results.py against real files written by the stock ``lm_eval`` CLI (``--log_samples``), read
independently here with plain ``json``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny

from lmeval_layerprune.errors import ResultsError
from lmeval_layerprune.lmeval.results import load_run, load_runs, merge_runs, parse_model_args, parse_results

GEN = "arith_probe_add_1d"
GROUP = "arith_probe_mc"


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    parent = save_tiny("llama", root / "parent")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = ["--model", "pruned-hf", "--model_args", f"pretrained={parent},drop=[2,3],dtype=float32"]
    argv += ["--tasks", f"{GEN},{GROUP}", "--limit", "3", "--device", "cpu", "--log_samples"]
    argv += ["--output_path", str(root / "out")]
    code = (
        "import sys; from lm_eval.__main__ import cli_evaluate; sys.argv = ['lm_eval', *sys.argv[1:]]; cli_evaluate()"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [p.parent for p in (root / "out").rglob("results_*.json")]
    return folder


def _raw(folder: Path) -> dict:
    (f,) = folder.glob("results_*.json")
    return json.loads(f.read_text())


def test_scores_equal_the_file(lm_eval_run) -> None:
    raw = _raw(lm_eval_run)
    run = load_run(lm_eval_run.parent.parent)  # the --output_path folder: searched recursively
    expected = {}
    for section in ("results", "groups"):
        for task, metrics in raw.get(section, {}).items():
            for key, value in metrics.items():
                name, _, filt = key.partition(",")
                if filt and not name.endswith("_stderr") and isinstance(value, float):
                    expected[(task, name, filt)] = (value, metrics.get(f"{name}_stderr,{filt}"))
    got = {(s.task, s.metric, s.filter): (s.value, s.stderr) for s in run.scores}
    assert got == expected
    gen = run.score(GEN)
    assert (gen.metric, gen.filter, gen.output_type, gen.n) == ("exact_match", "first-integer", "generate_until", 3)
    assert gen.num_fewshot == raw["n-shot"][GEN] and gen.higher_is_better is True and gen.kind == "generative"
    group = run.score(GROUP, "acc")
    assert group.group and group.kind == "likelihood"
    assert group.n == 3 * len(raw["group_subtasks"][GROUP])  # every member's items
    assert run.groups == raw["group_subtasks"] and run.top_tasks == [GEN, GROUP]
    assert run.score(GEN, "nope") is None and run.score("nope") is None
    # the model arguments as the CLI parsed them (the bracketed list stays one value)
    assert run.model_args["drop"] == [2, 3] and run.drop_spec == [2, 3]
    assert run.backend == "pruned-hf" and run.model == raw["model_name"] and run.limit == 3
    assert run.lm_eval_version == raw["lm_eval_version"]


def test_items_come_from_the_samples_files_and_average_to_the_score(lm_eval_run) -> None:
    run = load_run(lm_eval_run)
    assert run._samples == {}  # nothing read yet
    items = run.items(GEN)
    assert sorted(items) == [0, 1, 2]
    assert sum(items.values()) / len(items) == pytest.approx(run.score(GEN).value)
    member = run.groups[GROUP][0]
    acc = run.items(member, "acc")
    assert sum(acc.values()) / len(acc) == pytest.approx(run.score(member, "acc").value)
    # independently: the jsonl lines of that task
    (f,) = lm_eval_run.glob(f"samples_{member}_*.jsonl")
    lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    assert acc == {r["doc_id"]: float(r["acc"]) for r in lines}
    assert run.items(GROUP, "acc") is None  # groups have no samples file


def test_plan_from_the_results_config_and_in_memory_results(lm_eval_run, tmp_path) -> None:
    raw = _raw(lm_eval_run)
    plan = {"base_model": "org/m", "num_layers": 6, "drop": [2, 3], "kept": [0, 1, 4, 5], "method": "explicit"}
    raw["config"]["layer_pruning"] = plan
    f = tmp_path / "results_x.json"
    f.write_text(json.dumps(raw))
    assert load_run(f).plan == plan
    recorded = load_run(lm_eval_run).plan  # what pruned-hf put into the results config (provenance)
    assert recorded["drop"] == [2, 3] and recorded["kept"] == [0, 1, 4, 5] and recorded["num_layers"] == 6
    # what lm_eval.evaluator.evaluate returns (select reads this): primary metric per leaf task
    primary = parse_results(raw).primary_scores()
    assert primary[GEN] == raw["results"][GEN]["exact_match,first-integer"]
    assert set(primary) == set(raw["configs"])


def test_many_folders_and_errors(lm_eval_run, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    for i in range(5):
        shutil.copytree(lm_eval_run, sweep / f"run{i}" / "model")
    runs = load_runs([sweep])
    assert [r.path.parent.parent.name for r in runs] == [f"run{i}" for i in range(5)]
    with pytest.raises(ResultsError, match="holds 5 lm-eval runs"):
        load_run(sweep)
    merged = merge_runs(runs)
    assert merged.score(GEN) == runs[-1].score(GEN) and len(merged.scores) == len(runs[0].scores)
    with pytest.raises(ResultsError, match="do not exist"):
        load_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no lm-eval results"):
        load_runs([tmp_path / "empty"])
    bad = tmp_path / "results_bad.json"
    bad.write_text('{"x": 1}')
    with pytest.raises(ResultsError, match="not an lm-eval results file"):
        load_run(bad)


def test_model_args_strings_parse_like_the_lm_eval_cli() -> None:
    from lm_eval._cli.utils import MergeDictAction  # noqa: F401  (the parser the CLI uses exists)

    assert parse_model_args("pretrained=a/b,drop=[3,5],dtype=float32,trust_remote_code=True") == {
        "pretrained": "a/b",
        "drop": [3, 5],
        "dtype": "float32",
        "trust_remote_code": True,
    }
    assert parse_model_args({"pretrained": "x"}) == {"pretrained": "x"}
    assert parse_model_args(None) == {} and parse_model_args("") == {}
    with pytest.raises(ResultsError, match="key=value"):
        parse_model_args("pretrained")
