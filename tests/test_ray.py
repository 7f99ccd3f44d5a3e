"""sweep --executor ray on a local Ray cluster (CPU, 2 workers): the same cells as in process, faults.

Ray is an optional extra; the tests that start a cluster skip without it. Each starts Ray's own
local cluster (``ray.init`` with this machine's 2 CPUs) and checks that no token is left under ~/.ray.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import without_weights

from lmeval_layerprune.core.cluster import Cluster
from lmeval_layerprune.errors import ClusterError
from lmeval_layerprune.sweep.run import run_sweep
from lmeval_layerprune.sweep.settings import ExecutorSettings, SweepSettings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TASKS = ("arith_probe_mc_add_1d", "arith_probe_add_1d")
LIMIT = 3
TOKEN = Path.home() / ".ray" / "auth_token"

# one xdist worker runs every Ray test: one local cluster at a time on the 2 cores
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("ray")]


def _settings(model: Path, **kw) -> SweepSettings:
    base = dict(model=str(model), methods=("last", "bi"), ratios=(0.0, 0.2, 0.4), tasks=TASKS, limit=LIMIT)
    return SweepSettings(**{**base, **kw})


def _cells(out: Path) -> dict[str, Path]:
    """cell -> its one results file (a cell with two results files fails here)."""
    found = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "checkpoints"):
        files = list(d.glob("*/results_*.json"))
        assert len(files) == 1, f"{d} holds {len(files)} results files"
        found[d.name] = files[0]
    return found


def _outputs(results: Path) -> dict:
    """What a cell produced: scores, plan, and every sample's responses and metrics, per task."""
    data = json.loads(results.read_text())
    scores = {t: {k: v for k, v in m.items() if "," in k} for t, m in data["results"].items()}
    samples = {}
    for task in data["configs"]:
        (path,) = results.parent.glob(f"samples_{task}_*.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        keep = ("doc_id", "resps", "filtered_resps", "acc", "exact_match", "target")
        samples[task] = [{k: r.get(k) for k in keep} for r in rows]
    return {"scores": scores, "plan": data["config"]["layer_pruning"]["drop"], "samples": samples}


def _token_state() -> tuple[bool, float | None]:
    return TOKEN.exists(), TOKEN.stat().st_mtime if TOKEN.exists() else None


# ------------------------------------------------------------------ no Ray needed


@pytest.mark.parametrize("command", ["sweep", "select"])
def test_without_ray_the_executor_is_one_line_naming_the_extra(command: str, llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / ("o" if command == "sweep" else "p.json")
    grid = ["--methods", "last", "--ratios", "0"] if command == "sweep" else ["--method", "iterative", "--n", "1"]
    argv = [command, str(llama_dir), *grid, "--tasks", "arith_probe_add_1d", "--limit", "2", "--out", str(out)]
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from lmeval_layerprune.cli import main\n"
        f"sys.exit(main({[*argv, '--executor', 'ray']!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "lmeval-prune: error: the ray executor needs Ray, which is not installed: pip install 'lmeval-layerprune[ray]'"
    )
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("p.json*"))  # select: no journal started


def test_workers_that_cannot_fit_are_refused_before_any_start() -> None:
    cpu_node = Cluster(ray=None, cpus=2, gpus=0, nodes=1, started=True)
    assert cpu_node.fit_workers(None, gpus=0, threads=1) == 2  # as many as the resources allow
    assert cpu_node.fit_workers(None, gpus=0, threads=2) == 1
    assert cpu_node.fit_workers(3, gpus=0, threads=1) == 3  # asked for: the third waits for a free CPU
    with pytest.raises(ClusterError, match=r"needs 1 CPU thread\(s\) and 1 GPU\(s\), but the Ray cluster has 2 CPUs"):
        cpu_node.fit_workers(None, gpus=1, threads=1)
    with pytest.raises(ClusterError, match="needs 4 CPU thread"):
        cpu_node.fit_workers(1, gpus=0, threads=4)
    eight_gpus = Cluster(ray=None, cpus=64, gpus=8, nodes=1, started=False)
    assert eight_gpus.fit_workers(None, gpus=1, threads=4) == 8
    assert eight_gpus.fit_workers(None, gpus=0.5, threads=2) == 16


# --------------------------------------------------------------------- with Ray


@pytest.fixture(scope="module")
def in_process(llama_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "grid"
    run_sweep(_settings(llama_dir), out, progress=False)
    return out


@pytest.mark.slow
def test_ray_sweep_equals_the_in_process_sweep(in_process: Path, llama_dir: Path, tmp_path: Path) -> None:
    """2 methods x 2 ratios + baseline: identical per-sample generations and scores, identical plans."""
    pytest.importorskip("ray")
    before = _token_state()
    out = tmp_path / "ray"
    manifest = run_sweep(_settings(llama_dir), out, progress=False, executor=ExecutorSettings("ray", workers=2))
    mine, theirs = _cells(out), _cells(in_process)
    assert set(mine) == set(theirs) == {"base", "last-0.2", "last-0.4", "bi-0.2", "bi-0.4"}
    for name in theirs:
        assert _outputs(mine[name]) == _outputs(theirs[name]), name
    # the manifest is rebuilt from the folders, as in process
    local = json.loads((in_process / "sweep.json").read_text())
    assert {k: v["plan"]["drop"] for k, v in manifest["cells"].items()} == {
        k: v["plan"]["drop"] for k, v in local["cells"].items()
    }
    assert not list(out.glob(".partial-*"))
    assert _token_state() == before, "a Ray token was written under ~/.ray"


def _partial_pid(out: Path) -> int | None:
    for p in out.glob(".partial-*"):
        m = re.search(r"-(\d+)$", p.name)
        if m:
            return int(m.group(1))
    return None


@pytest.mark.slow
def test_worker_killed_mid_cell_costs_that_cell_only(in_process: Path, llama_dir: Path, tmp_path: Path) -> None:
    """kill -9 of a worker while it writes a cell: the cell is re-run on a new worker, none lost or doubled."""
    pytest.importorskip("ray")
    before = _token_state()
    out = tmp_path / "killed"
    cmd = [
        str(BIN / "lmeval-prune"), "sweep", str(llama_dir), "--methods", "last,bi", "--ratios", "0,0.2,0.4",
        "--tasks", ",".join(TASKS), "--limit", str(LIMIT), "--out", str(out), "--no-progress",
        "--executor", "ray", "--workers", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and killed is None:
        pid = _partial_pid(out) if out.is_dir() else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # a worker (Ray actor) process, in the middle of a cell
            killed = pid
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "no cell was seen in progress"
    assert proc.returncode == 0, stderr[-3000:]
    assert "1 cell run(s) repeated after a worker died or timed out" in stdout, stdout[-3000:]
    mine, theirs = _cells(out), _cells(in_process)
    assert set(mine) == set(theirs)  # none lost; _cells fails on a doubled results file
    for name in theirs:
        assert _outputs(mine[name]) == _outputs(theirs[name]), name
    assert not list(out.glob(".partial-*"))
    assert set(json.loads((out / "sweep.json").read_text())["cells"]) == set(theirs)
    assert _token_state() == before


HANG_YAML = """\
task: hang_probe
custom_dataset: !function hang.docs
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{q}}\\nAnswer:"
doc_to_choice: ["yes", "no"]
doc_to_target: 0
process_results: !function hang.process_results
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
HANG_PY = """\
import os, time
from pathlib import Path

import datasets


def docs(**kwargs):
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"q": f"is {i} a number?"} for i in range(3)])})


def process_results(doc, results):
    marker = Path(__file__).with_name("hung-once")
    try:  # the first call anywhere hangs (as a stuck kernel or a dead file system would); later calls go on
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        time.sleep(3600)
    except FileExistsError:
        pass
    lls = [r[0] for r in results]
    return {"acc": float(lls.index(max(lls)) == 0)}
"""


@pytest.mark.slow
def test_a_hanging_cell_is_killed_and_run_again(llama_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "hang_probe.yaml").write_text(HANG_YAML)
    (tasks / "hang.py").write_text(HANG_PY)
    out = tmp_path / "hang"
    settings = _settings(
        llama_dir, methods=("last",), ratios=(0.0, 0.2), tasks=("hang_probe",), include_path=str(tasks)
    )
    executor = ExecutorSettings("ray", workers=1, cell_timeout=40)
    t0 = time.time()
    manifest = run_sweep(settings, out, progress=False, executor=executor)
    assert (tasks / "hung-once").exists(), "the hook never ran"
    assert set(_cells(out)) == set(manifest["cells"]) == {"base", "last-0.2"}
    assert time.time() - t0 < 600  # the hang (an hour) was cut short
    assert not list(out.glob(".partial-*"))


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_is_one_error(llama_dir: Path, tmp_path: Path) -> None:
    """Config readable (the driver plans the grid), weights missing: one line, no hang, nothing published."""
    pytest.importorskip("ray")
    broken = without_weights(llama_dir, tmp_path / "no-weights")
    cmd = [
        str(BIN / "lmeval-prune"), "sweep", str(broken), "--methods", "last", "--ratios", "0,0.2",
        "--tasks", TASKS[1], "--limit", "2", "--out", str(tmp_path / "o"), "--no-progress", "--executor", "ray",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"lmeval-prune: error: Ray worker w\d could not load ", last) and str(broken) in last, last
    assert "Traceback" not in proc.stderr
    assert set(_cells(tmp_path / "o")) == set()
