"""Real command lines in subprocesses: the stock lm_eval CLI, lmeval-prune, and the start-up hook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _exe(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed"
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMEVAL_LAYERPRUNE_NO_AUTOLOAD")}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}, **extra)
    return env


def _run(args: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def _results(out_dir: Path) -> dict:
    files = sorted(out_dir.rglob("results_*.json"))
    assert files, f"no results JSON under {out_dir}"
    return json.loads(files[-1].read_text())


def test_stock_lm_eval_cli_runs_pruned_hf(llama_dir, tmp_path) -> None:
    out = tmp_path / "out"
    proc = _run(
        [
            _exe("lm_eval"),
            "--model",
            "pruned-hf",
            "--model_args",
            f"pretrained={llama_dir},drop=[0,5],dtype=float32",
            "--tasks",
            "arith_probe_add_1d",
            "--limit",
            "3",
            "--device",
            "cpu",
            "--output_path",
            str(out),
            "--log_samples",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "arith_probe_add_1d" in proc.stdout and "exact_match" in proc.stdout
    res = _results(out)
    assert res["config"]["model"] == "pruned-hf"
    assert res["config"]["model_args"]["drop"] == [0, 5]
    assert 0.0 <= res["results"]["arith_probe_add_1d"]["exact_match,first-integer"] <= 1.0
    assert res["n-samples"]["arith_probe_add_1d"]["effective"] == 3


def test_lmeval_prune_eval_works_without_the_startup_hook(llama_dir, tmp_path) -> None:
    args = ["--model", "pruned-hf", "--model_args", f"pretrained={llama_dir},drop=1-2", "--tasks", "arith_probe_sub_1d"]
    args += ["--limit", "2", "--device", "cpu", "--output_path", str(tmp_path / "out")]
    # The stock CLI sees neither our tasks nor pruned-hf when the hook is off ...
    off = _run([_exe("lm_eval"), *args], cwd=tmp_path, LMEVAL_LAYERPRUNE_NO_AUTOLOAD="1")
    assert off.returncode != 0
    assert "Tasks not found: arith_probe_sub_1d" in off.stderr
    # ... and `lmeval-prune eval` registers explicitly.
    on = _run([_exe("lmeval-prune"), "eval", *args], cwd=tmp_path, LMEVAL_LAYERPRUNE_NO_AUTOLOAD="1")
    assert on.returncode == 0, on.stderr[-3000:]
    assert _results(tmp_path / "out")["config"]["model_args"]["drop"] == "1-2"


def test_registry_keeps_builtin_models(tmp_path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from lm_eval.api.registry import get_model, model_registry
        from lmeval_layerprune.lmeval.hf import PrunedHFLM
        from lm_eval.models.huggingface import HFLM
        assert get_model("pruned-hf") is PrunedHFLM
        assert get_model("hf") is HFLM
        for name in ("vllm", "dummy", "local-completions", "sglang"):
            assert name in model_registry, name
        assert get_model("dummy").__name__ == "DummyLM"
        print("ok")
        """
    )
    proc = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_startup_hook_imports_nothing_heavy(tmp_path) -> None:
    code = "import sys; print(sorted(m for m in ('torch', 'lm_eval', 'transformers') if m in sys.modules))"
    proc = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert proc.stderr == ""
    proc = _run(
        [sys.executable, "-c", "import sys; print(any('_Finder' in type(f).__name__ for f in sys.meta_path))"], tmp_path
    )
    assert proc.stdout.strip() == "True", "the start-up hook is not installed (lmeval_layerprune.pth missing?)"


@pytest.mark.parametrize(
    "registry_source",
    [
        "raise ImportError('this lm_eval is broken')",  # lm-eval broken
        "model_registry = None\n",  # lm-eval changed its internals
    ],
)
def test_startup_hook_never_breaks_python(tmp_path, registry_source) -> None:
    fake = tmp_path / "fake" / "lm_eval" / "api"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "registry.py").write_text(registry_source)
    proc = _run([sys.executable, "-c", "print('python works')"], tmp_path, PYTHONPATH=str(tmp_path / "fake"))
    assert proc.returncode == 0 and proc.stdout.strip() == "python works"
    code = "import lm_eval.api.registry as r; print('imported')"
    proc = _run([sys.executable, "-c", code], tmp_path, PYTHONPATH=str(tmp_path / "fake"))
    if "ImportError" in registry_source:
        assert "this lm_eval is broken" in proc.stderr  # lm-eval's own error, untouched
    else:
        assert proc.returncode == 0 and proc.stdout.strip() == "imported"
        assert "could not register with lm-eval" in proc.stderr


def test_resolve_and_archs_commands(llama_dir, tmp_path) -> None:
    proc = _run([_exe("lmeval-prune"), "resolve", str(llama_dir), "--drop", "last:50%"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["drop"] == [3, 4, 5]
    bad = _run([_exe("lmeval-prune"), "resolve", str(llama_dir), "--drop", "4-9"], tmp_path)
    assert bad.returncode == 2
    assert "layer 6 is out of range (the model has 6 layers, 0..5)" in bad.stderr
    assert "Traceback" not in bad.stderr
    archs = _run([_exe("lmeval-prune"), "archs"], tmp_path)
    assert archs.returncode == 0 and "qwen3" in archs.stdout and "gemma3_text" in archs.stdout


def test_output_piped_into_a_reader_that_leaves_is_not_an_error(tmp_path) -> None:
    """`lmeval-prune methods | head -1`: the reader is gone before the command writes; exit 0, no error line."""
    proc = subprocess.Popen(
        [_exe("lmeval-prune"), "methods"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # long before the command has started up and printed anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""


def test_lm_eval_cli_for_every_architecture(tmp_path) -> None:
    """lm-eval's own CLI entry point evaluates pruned-hf on a tiny model of each family.

    One subprocess calls ``lm_eval.__main__.cli_evaluate`` (what the ``lm_eval`` console script
    runs) once per architecture, so imports are paid once; so is lm-eval's scan of its task
    folders (the index of thousands of YAMLs is the same for every call and is memoized).
    """
    from conftest import ARCH_CASES, save_tiny

    dirs = {mt: save_tiny(mt, tmp_path / mt) for mt in sorted(ARCH_CASES)}
    script = textwrap.dedent(
        """
        import json, sys
        from lm_eval.__main__ import cli_evaluate
        from lm_eval.tasks._index import TaskIndex

        _build, _seen = TaskIndex.build, {}
        def build(self, paths, *a, **k):
            key = tuple(map(str, paths))
            if key not in _seen:
                _seen[key] = _build(paths, *a, **k)
            return dict(_seen[key])
        TaskIndex.build = build
        for model_type, path in json.loads(sys.argv[1]).items():
            sys.argv = ["lm_eval", "--model", "pruned-hf", "--model_args", f"pretrained={path},drop=0+5",
                        "--tasks", "arith_probe_add_1d", "--limit", "2", "--device", "cpu",
                        "--output_path", f"{path}/out"]
            cli_evaluate()
        """
    )
    args = [sys.executable, "-c", script, json.dumps({k: str(v) for k, v in dirs.items()})]
    proc = _run(args, tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for model_type, path in dirs.items():
        res = _results(path / "out")
        assert res["config"]["model"] == "pruned-hf", model_type
        assert res["n-samples"]["arith_probe_add_1d"]["effective"] == 2, model_type


def test_select_killed_with_sigkill_resumes_to_the_same_plan(llama_dir, tmp_path) -> None:
    """`lmeval-prune select` SIGKILLed mid-search, then rerun: same plan as an uninterrupted run,
    each measurement recorded once."""
    import signal
    import time

    args = ["select", str(llama_dir), "--method", "iterative", "--tasks", "arith_probe_add_1d", "--limit", "3"]
    args += ["--n", "2", "--device", "cpu"]
    whole = _run([_exe("lmeval-prune"), *args, "--out", str(tmp_path / "whole.json")], tmp_path)
    assert whole.returncode == 0, whole.stderr

    out, journal = tmp_path / "killed.json", tmp_path / "killed.json.journal.jsonl"
    cmd = [_exe("lmeval-prune"), *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count("\n") >= 4:  # baseline + 3 candidates
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the search ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    recorded = journal.read_text().count("\n")
    assert 4 <= recorded < 10 and not out.exists()

    resumed = _run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    plan, ref = json.loads(out.read_text()), json.loads((tmp_path / "whole.json").read_text())
    assert plan["drop"] == ref["drop"] and plan["rounds"] == ref["rounds"] and plan["baseline"] == ref["baseline"]
    ids = [json.loads(line)["id"] for line in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 1 + 5 + 4  # baseline, round 1 (layer 0 protected), round 2
