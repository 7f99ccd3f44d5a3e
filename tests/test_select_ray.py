"""select --executor ray on a local Ray cluster (CPU, 2 workers): the in-process plan, resumes, a killed worker.

A greedy round's candidates are measured on Ray workers that each hold the model; the driver keeps the
bounds, the journal and the choice. Ray is an optional extra: the tests that start a cluster skip
without it. Each starts Ray's own local cluster and checks that no token is left under ~/.ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer, without_weights

from lmeval_layerprune.core.cluster import ClusterSettings
from lmeval_layerprune.errors import ClusterError
from lmeval_layerprune.search.select import SelectionSettings, select_layers

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TOKEN = Path.home() / ".ray" / "auth_token"
RAY2 = ClusterSettings("ray", workers=2)

# one xdist worker runs every Ray test: one local cluster at a time on the 2 cores
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("ray")]

# a multiple-choice task whose answer a tiny model with strong layers gets right or wrong differently without
# each layer: the primary metric decides the rounds and the exact search stops candidates that cannot win
WORDS_PY = """
import datasets

WORDS = ["apple", "river", "stone", "cloud", "tiger", "paper", "glass", "music", "candle", "forest", "lemon", "sugar"]


def docs(**kwargs):
    rows = [{"ctx": " ".join(WORDS[(i * 7 + j * 5) % 12] for j in range(4)),
             "choices": [" " + WORDS[(i + 3 * j) % 12] for j in range(4)], "label": i % 4} for i in range(24)]
    return {"test": datasets.Dataset.from_list(rows)}
"""
WORDS_MC = """task: words_mc
custom_dataset: !function words.docs
test_split: test
output_type: multiple_choice
doc_to_text: "{{ctx}}"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _token_state() -> tuple[bool, float | None]:
    return TOKEN.exists(), TOKEN.stat().st_mtime if TOKEN.exists() else None


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The tiny llama with every layer's residual writes 8x stronger: removing any layer changes answers."""
    m = tiny_model("llama", seed=0)
    with torch.no_grad():
        for layer in m.model.layers:
            layer.mlp.down_proj.weight.mul_(8)
            layer.self_attn.o_proj.weight.mul_(8)
    path = tmp_path_factory.mktemp("strong-llama")
    m.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("words-task")
    (folder / "words.py").write_text(WORDS_PY)
    (folder / "words_mc.yaml").write_text(WORDS_MC)
    return folder


def _iterative(model: Path, words: Path, **kw) -> SelectionSettings:
    base = dict(tasks=("words_mc",), include_path=str(words), limit=None, chunk_size=4, batch_size=8)
    return SelectionSettings(str(model), "iterative", 3, **{**base, **kw})


def _same_plan(mine: dict, ref: dict, exhaustive: dict) -> None:
    """The same layers in the same order, the same ties and tie-breaks, and every finalist's score the
    exhaustive search's (candidates stopped early differ with the order results came in)."""
    assert mine["drop"] == ref["drop"] == exhaustive["drop"]
    assert mine["order"] == ref["order"] == exhaustive["order"]
    assert mine["baseline"] == ref["baseline"]
    for a, b, full in zip(mine["rounds"], ref["rounds"], exhaustive["rounds"], strict=True):
        assert a["chosen"] == b["chosen"] == full["chosen"]
        assert a["scores"][str(a["chosen"])] == b["scores"][str(b["chosen"])]
        assert a["scores"] == {k: full["scores"][k] for k in a["scores"]}
        assert (a.get("ties"), a.get("secondary")) == (b.get("ties"), b.get("secondary"))


# ------------------------------------------------------------------ no Ray needed


# --------------------------------------------------------------------- with Ray


@pytest.fixture(scope="module")
def references(model: Path, words: Path, tmp_path_factory) -> dict[str, dict]:
    """The in-process plans: exact elimination (journaled) and exhaustive."""
    folder = tmp_path_factory.mktemp("select-local")
    s = _iterative(model, words)
    exact = select_layers(s, out=folder / "exact.json", progress=False)
    exhaustive = select_layers(s, out=folder / "exhaustive.json", progress=False, mode="exhaustive")
    return {"exact": exact, "exhaustive": exhaustive, "journal": folder / "exact.json.journal.jsonl"}


@pytest.mark.slow
def test_ray_select_gives_the_in_process_and_the_exhaustive_plan(
    model: Path, words: Path, references: dict, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    before = _token_state()
    ref, full = references["exact"], references["exhaustive"]
    assert ref["search"]["stopped"] > 0, "the task should let the exact search stop candidates"
    plan = select_layers(_iterative(model, words), out=tmp_path / "ray.json", progress=False, executor=RAY2)
    _same_plan(plan, ref, full)
    assert plan["search"]["mode"] == "exact-elimination"
    assert plan["search"]["executor"] == {"name": "ray", "workers": 2, "repeated": []}
    assert plan["search"]["items_evaluated"] < full["search"]["items_evaluated"]
    # the driver alone wrote the journal: one record per measurement
    ids = [json.loads(line)["id"] for line in (tmp_path / "ray.json.journal.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and "baseline#0" in ids
    # a whole-candidate objective (perplexity), exact and raced: the in-process plans too
    ppl = SelectionSettings(str(model), "ppl", 2, calib_samples=4)
    for mode in ("exact", "race"):
        here = select_layers(ppl, progress=False, mode=mode)
        there = select_layers(ppl, progress=False, mode=mode, executor=RAY2)
        assert there["order"] == here["order"] and there["rounds"] == here["rounds"], mode
    assert _token_state() == before, "a Ray token was written under ~/.ray"


@pytest.mark.slow
def test_ray_select_resumes_a_killed_searchs_journal(
    model: Path, words: Path, references: dict, tmp_path: Path
) -> None:
    """The journal is append-only: its first lines are what a search killed (kill -9) then had kept."""
    pytest.importorskip("ray")
    lines = references["journal"].read_text().splitlines(keepends=True)
    journal = tmp_path / "p.json.journal.jsonl"
    keep = len(lines) // 2
    journal.write_text("".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])  # a half-written last line
    plan = select_layers(_iterative(model, words), out=tmp_path / "p.json", progress=False, executor=RAY2)
    _same_plan(plan, references["exact"], references["exhaustive"])
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a measurement in the journal was measured again"
    assert ids[:keep] == [json.loads(line)["id"] for line in lines[:keep]]


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_is_one_error(model: Path, tmp_path: Path) -> None:
    """Config readable (the driver counts the layers), weights missing: one error, no hang, no plan."""
    pytest.importorskip("ray")
    broken = without_weights(model, tmp_path / "no-weights")
    settings = SelectionSettings(str(broken), "ppl", 1, calib_samples=2)
    with pytest.raises(ClusterError, match=r"^Ray worker w\d could not load ") as e:
        select_layers(settings, out=tmp_path / "p.json", progress=False, executor=RAY2)
    assert str(broken) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "p.json").exists()


def _search_workers(tag: str) -> list[int]:
    """Process ids of this test's Ray search workers (their environment carries ``tag``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes()
            if b"SearchWorker" in title and tag.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _cli(model: Path, words: Path, out: Path) -> list[str]:
    return [
        str(BIN / "lmeval-prune"), "select", str(model), "--method", "iterative", "--n", "3", "--tasks", "words_mc",
        "--include-path", str(words), "--limit", "24", "--chunk-size", "4", "--out", str(out),
        "--executor", "ray", "--workers", "2",
    ]  # fmt: skip


def _journal_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_cli_ray_select_survives_a_killed_worker_and_an_interrupted_run(
    model: Path, words: Path, references: dict, tmp_path: Path
) -> None:
    """The real CLI: kill -9 of a worker mid-round costs only its measurement; Ctrl-C of the whole search,
    then the same command again, resumes from the journal; both end with the in-process plan."""
    pytest.importorskip("ray")
    before = _token_state()
    total = _journal_lines(references["journal"])
    tag = uuid.uuid4().hex
    env = {**ENV, "LAYERPRUNE_TEST_TAG": tag}
    out = tmp_path / "plan.json"
    journal = Path(str(out) + ".journal.jsonl")
    # 1. Ctrl-C once a third of the measurements are journaled
    proc = subprocess.Popen(_cli(model, words, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and _journal_lines(journal) < total // 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    kept = _journal_lines(journal)
    assert proc.returncode != 0 and 0 < kept < total, stderr.decode()[-2000:]
    assert "rerun the same command to resume" in stderr.decode()
    # 2. the same command again; a worker killed (kill -9) in the middle of the rest
    proc = subprocess.Popen(_cli(model, words, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and killed is None:
        workers = _search_workers(tag)
        if len(workers) == 2 and _journal_lines(journal) > kept + 2:
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.02)
    stdout, stderr = (b.decode() for b in proc.communicate(timeout=600))
    assert killed is not None, "no worker was seen measuring"
    assert proc.returncode == 0, stderr[-3000:]
    assert "ray: 2 worker(s); 1 measurement(s) repeated after a worker died" in stdout, stdout
    plan = json.loads(out.read_text())
    _same_plan(plan, references["exact"], references["exhaustive"])
    ids = [json.loads(line)["id"] for line in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids))
    deadline = time.time() + 60  # Ray ends its workers as the session closes, asynchronously
    while _search_workers(tag) and time.time() < deadline:
        time.sleep(0.5)
    assert not _search_workers(tag), "a Ray worker outlived the search"
    assert _token_state() == before
