"""lmeval-prune sweep on tiny models: layout, plans, scores against separate pruned-hf runs, resume."""

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
import torch

from lmeval_layerprune.core.layout import PLAN_FILE, WRITTEN_MANIFEST
from lmeval_layerprune.errors import OutputError, SweepError
from lmeval_layerprune.methods.registry import method_names
from lmeval_layerprune.sweep.grid import layer_count, parse_methods, parse_ratios, plan_grid
from lmeval_layerprune.sweep.run import run_sweep
from lmeval_layerprune.sweep.settings import SweepSettings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TASKS = ("arith_probe_mc_add_1d", "arith_probe_add_1d")
LIMIT = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(model: Path, **kw) -> SweepSettings:
    base = dict(model=str(model), methods=("last", "bi"), ratios=(0.0, 0.2), tasks=TASKS, limit=LIMIT)
    return SweepSettings(**{**base, **kw})


def _cells(out: Path) -> dict[str, dict]:
    """cell -> results JSON (exactly one results file per cell)."""
    found = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "checkpoints"):
        files = list(d.glob("*/results_*.json"))
        assert len(files) == 1, f"{d} holds {len(files)} results files"
        found[d.name] = json.loads(files[0].read_text())
    return found


def _scores(results: dict) -> dict:
    return {t: {k: v for k, v in m.items() if "," in k} for t, m in results["results"].items()}


# ----------------------------------------------------------------- grid & errors


def test_ratio_to_layer_count_matches_drop_specs() -> None:
    from lmeval_layerprune.methods.resolve import resolve_indices

    for n in (6, 24, 30, 32):
        for r in (0.1, 0.2, 0.25, 0.3, 0.5):
            assert layer_count(r, n) == len(resolve_indices(f"last:{r * 100:g}%", n))
    assert layer_count(0, 30) == 0


def test_grid_errors_name_the_bad_value() -> None:
    valid = ", ".join(method_names())  # the registry's names, in registration order
    assert valid.startswith("last, bi, angular") and "iterative" in valid
    with pytest.raises(SweepError, match=re.escape(f"unknown method(s) 'shortgpt'; valid: {valid}")):
        parse_methods("last,shortgpt")
    with pytest.raises(SweepError, match=r"ratio '1' is outside \[0, 1\)"):
        parse_ratios("0,1")
    with pytest.raises(SweepError, match="'x' is not a number"):
        parse_ratios("0,x")
    assert parse_ratios("0.3,10%,0") == (0.0, 0.1, 0.3)
    with pytest.raises(SweepError, match="removes 6 of 6 layers, i.e. every layer"):
        layer_count(0.95, 6)
    with pytest.raises(SweepError, match="rounds to 0"):
        layer_count(0.01, 30)
    with pytest.raises(SweepError, match="both remove 3 of 30 layers"):
        plan_grid(["last"], [0.1, 0.11], 30)
    cells = plan_grid(["last", "bi"], [0.0, 0.1, 0.2], 30, heal=[("last", 0.2)])
    assert [c.name for c in cells] == ["base", "last-0.1", "last-0.2", "bi-0.1", "bi-0.2", "last-0.2-healed"]
    with pytest.raises(SweepError, match="is not a pruned cell"):
        plan_grid(["last"], [0.0, 0.1], 30, heal=[("bi", 0.1)])


def test_cli_errors_are_one_line(llama_dir: Path, tmp_path: Path) -> None:
    for args, msg in [
        (["--methods", "last,foo"], "unknown method(s) 'foo'"),
        (["--ratios", "0,1.5"], "ratio '1.5' is outside [0, 1)"),
        (["--ratios", "0,0.95"], "removes 6 of 6 layers"),
    ]:
        proc = subprocess.run(
            [str(BIN / "lmeval-prune"), "sweep", str(llama_dir), "--out", str(tmp_path / "o"), *args],
            capture_output=True, text=True, env=ENV, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert msg in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing written before the grid is valid


# --------------------------------------------------------------------- the sweep


@pytest.fixture(scope="module")
def swept(llama_dir: Path, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sweep") / "grid"
    run_sweep(_settings(llama_dir), out, progress=False)
    return out


def test_sweep_cells_are_lm_eval_runs_with_plans_and_samples(swept: Path, llama_dir: Path) -> None:
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    cells = _cells(swept)
    assert set(cells) == {"base", "last-0.2", "bi-0.2"}
    # the ratio counts as drop=last:20% does: 1 of 6 layers
    assert cells["last-0.2"]["config"]["layer_pruning"]["drop"] == [5]
    assert cells["base"]["config"]["layer_pruning"]["drop"] == []
    # bi resolves exactly as pruned-hf's own drop=bi:1 does
    lm = PrunedHFLM(pretrained=str(llama_dir), drop="bi:1", dtype="float32", device="cpu")
    assert cells["bi-0.2"]["config"]["layer_pruning"]["drop"] == list(lm.drop)
    for name, res in cells.items():
        assert res["config"]["sweep"]["cell"] == name
        folder = next((swept / name).glob("*/"))
        for task in TASKS:
            lines = next(folder.glob(f"samples_{task}_*.jsonl")).read_text().splitlines()
            assert len(lines) == LIMIT
    # plain lm-eval-layout readers see one run per cell
    from lmeval_layerprune.lmeval.results import load_runs

    assert len(load_runs([swept])) == 3


def test_sweep_scores_equal_separate_pruned_hf_runs(swept: Path, llama_dir: Path) -> None:
    import lm_eval
    from lm_eval.utils import sanitize_list

    from lmeval_layerprune.lmeval.plugin import register

    register()
    cells = _cells(swept)
    for name in ("last-0.2", "bi-0.2"):
        drop = cells[name]["config"]["model_args"]["drop"]
        ref = lm_eval.simple_evaluate(
            model="pruned-hf",
            model_args={"pretrained": str(llama_dir), "drop": drop, "dtype": "float32"},
            tasks=list(TASKS),
            limit=LIMIT,
            device="cpu",
            batch_size=8,
        )
        assert _scores(cells[name]) == _scores(ref)
        folder = next((swept / name).glob("*/"))
        for task in TASKS:
            mine = [json.loads(x) for x in next(folder.glob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
            theirs = json.loads(json.dumps([sanitize_list(s["filtered_resps"]) for s in ref["samples"][task]]))
            assert [s["filtered_resps"] for s in mine] == theirs


def test_rerun_skips_done_cells_and_extends_the_grid(swept: Path, llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(swept, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("results_*.json")}
    manifest = run_sweep(_settings(llama_dir, ratios=(0.0, 0.2, 0.5)), out, progress=False)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("results_*.json")}
    assert all(after[p] == t for p, t in before.items())  # done cells untouched
    assert set(_cells(out)) == {"base", "last-0.2", "bi-0.2", "last-0.5", "bi-0.5"}
    assert manifest["cells"]["last-0.5"]["plan"]["drop"] == [3, 4, 5]
    # other evaluation settings are refused, naming what differs
    with pytest.raises(SweepError, match=r"limit: 3 \(in the folder\) vs 2 \(now\)"):
        run_sweep(_settings(llama_dir, limit=2), out, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    with pytest.raises(SweepError, match="is not a sweep folder"):
        run_sweep(_settings(llama_dir), tmp_path / "other", progress=False)


def test_damaged_cells_are_run_again_with_one_line_each(
    swept: Path, llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated results file or samples file is not a finished cell: the rerun says why and redoes it."""
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(swept, out)
    (results,) = (out / "last-0.2").glob("*/results_*.json")
    results.write_bytes(results.read_bytes()[: results.stat().st_size // 2])
    (samples,) = (out / "bi-0.2").glob("*/samples_arith_probe_add_1d_*.jsonl")
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[:-1]))  # one item short, every line whole
    (base,) = (out / "base").glob("*/results_*.json")
    base_mtime = base.stat().st_mtime_ns
    manifest = run_sweep(_settings(llama_dir), out, progress=False)
    printed = capsys.readouterr().out
    assert (
        f"sweep: cell last-0.2 is incomplete ({results.name} does not parse (truncated or damaged?)); running it again"
        in printed
    )
    short = f"{samples.name} has {LIMIT - 1} of {LIMIT} lines (truncated?)"
    assert f"sweep: cell bi-0.2 is incomplete ({short}); running it again" in printed
    assert "cell base is incomplete" not in printed and base.stat().st_mtime_ns == base_mtime  # a whole cell stays
    assert "1 already done, 2 to run" in printed
    resumed, whole = _cells(out), _cells(swept)
    assert set(resumed) == set(whole) == set(manifest["cells"])
    for name in whole:
        assert _scores(resumed[name]) == _scores(whole[name])
    assert not list(out.glob(".partial-*"))


def test_the_users_files_in_a_sweep_folder_are_never_replaced(swept: Path, llama_dir: Path, tmp_path: Path) -> None:
    """A folder of the user's named like a cell, and a sweep.json the user edited, are refused in one line
    and left as they were; the sweep's own files are recorded as written by it (issue 27)."""
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(swept, out)
    written = json.loads((out / WRITTEN_MANIFEST).read_text())["files"]
    assert "sweep.json" in written
    assert {PLAN_FILE} <= set(json.loads((out / "last-0.2" / WRITTEN_MANIFEST).read_text())["files"])
    mine = out / "last-0.5" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("my notes")
    with pytest.raises(SweepError, match="is named like the sweep cell last-0.5 but is not one"):
        run_sweep(_settings(llama_dir, ratios=(0.0, 0.2, 0.5)), out, progress=False)
    assert mine.read_text() == "my notes"
    shutil.rmtree(mine.parent)
    manifest = out / "sweep.json"
    edited = manifest.read_text().replace('"format"', '"my_note": "keep", "format"', 1)
    manifest.write_text(edited)
    with pytest.raises(OutputError, match="move it away and rerun the same command"):
        run_sweep(_settings(llama_dir), out, progress=False)
    assert manifest.read_text() == edited


def test_a_failed_save_is_not_published(llama_dir: Path, tmp_path: Path) -> None:
    """lm-eval logs "Could not save results" and goes on; under a file-size limit the sweep stops instead,
    in one line naming the cell and the file, and publishes nothing (issue 27)."""
    import resource

    out = tmp_path / "small-disk"
    cmd = [
        str(BIN / "lmeval-prune"), "sweep", str(llama_dir), "--methods", "last", "--ratios", "0",
        "--tasks", ",".join(TASKS), "--limit", str(LIMIT), "--out", str(out), "--no-progress",
    ]  # fmt: skip

    def small_files() -> None:  # results (~10 kB) and the mc samples (~5 kB) do not fit; sweep.json does
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600, preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lmeval-prune: error: lm-eval could not save cell base into {out / 'base'}: results_"), last
    assert "does not parse" in last and "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [WRITTEN_MANIFEST, "sweep.json"]  # no cell, no partial folder
    assert json.loads((out / "sweep.json").read_text())["cells"] == {}


@pytest.mark.slow
def test_iterative_takes_prefixes_of_one_search(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "it"
    settings = _settings(llama_dir, methods=("iterative",), ratios=(0.2, 0.4), tasks=TASKS[:1], search_limit=2, limit=2)
    manifest = run_sweep(settings, out, progress=False)
    search = json.loads((out / "iterative_plan.json").read_text())
    order = search["order"]
    assert len(order) == 2
    assert manifest["cells"]["iterative-0.2"]["plan"]["drop"] == [order[0]]
    assert manifest["cells"]["iterative-0.4"]["plan"]["drop"] == sorted(order)
    assert manifest["cells"]["iterative-0.4"]["plan"]["spec"].endswith("iterative_plan.json@2")


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_without_duplicates(swept: Path, llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    cmd = [
        str(BIN / "lmeval-prune"), "sweep", str(llama_dir), "--methods", "last,bi", "--ratios", "0,0.2",
        "--tasks", ",".join(TASKS), "--limit", str(LIMIT), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        # kill while a later cell is being written: the first cell is complete, the next one partial
        while time.time() < deadline and not (out / "base").is_dir():
            time.sleep(0.2)
        assert (out / "base").is_dir(), "the first cell never finished"
        while time.time() < deadline and not list(out.glob(".partial-*")):
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(_cells(out)) < 3
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stdout
    resumed, whole = _cells(out), _cells(swept)
    assert set(resumed) == set(whole)
    for name in whole:
        assert _scores(resumed[name]) == _scores(whole[name])
        assert resumed[name]["config"]["layer_pruning"]["drop"] == whole[name]["config"]["layer_pruning"]["drop"]
    assert not list(out.glob(".partial-*"))


def test_token_agreement_per_cell_equals_a_separately_pruned_model(llama_dir: Path, tmp_path: Path) -> None:
    """`--token-agreement N`: each cell holds the share of the parent's greedy tokens its model predicts
    as top-1; checked against a model loaded with only the kept layers, fed the same parent text."""
    from lmeval_layerprune.checkpoint.load import load_pruned_model
    from lmeval_layerprune.core.layout import TOKEN_AGREEMENT_FILE
    from lmeval_layerprune.report.write import write_report
    from lmeval_layerprune.speed.speculate import greedy_generate, source_prompts

    out = tmp_path / "ta"
    settings = _settings(llama_dir, methods=("last",), tasks=TASKS[:1], limit=2, token_agreement=3)
    run_sweep(settings, out, progress=False)
    cell = json.loads((out / "last-0.2" / TOKEN_AGREEMENT_FILE).read_text())
    base = json.loads((out / "base" / TOKEN_AGREEMENT_FILE).read_text())
    assert base["agreement"] == 1.0  # the parent agrees with its own greedy text

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    parent = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    pruned = load_pruned_model(str(llama_dir), "5").eval()  # last:20% of 6 layers = layer 5
    matched = total = 0
    with torch.no_grad():
        for p in source_prompts(tok, "bundled", 3):
            r = greedy_generate(parent, torch.tensor([p]), settings.token_agreement_tokens, tok)[0]
            logits = pruned(input_ids=torch.tensor([p + r])).logits[0]
            pred = logits[len(p) - 1 : len(p) + len(r) - 1].argmax(-1).tolist()
            matched += sum(a == b for a, b in zip(pred, r, strict=True))
            total += len(r)
    assert (cell["matched"], cell["tokens"]) == (matched, total)
    report, _ = write_report([out], tmp_path / "rep", iters=100, plots=False)
    shown = {i.label: i.extras.get("token_agreement") for i in report.infos}
    assert (
        shown["last-0.2"] == pytest.approx(matched / total)
        and "token agreement" in (tmp_path / "rep" / "report.md").read_text()
    )


def test_two_recipes_heal_each_cell_twice_on_the_same_prompts(tmp_path: Path) -> None:
    """The paper's recovery comparison as one sweep: selfgen and original responses, same prompts and
    budget; every healed cell names its recipe and the report sets them against the unhealed cell."""
    from test_heal import TINY
    from test_selfgen import save_chat_tiny

    from lmeval_layerprune.core.layout import RECIPE_FILE
    from lmeval_layerprune.core.plan import PruningPlan
    from lmeval_layerprune.lmeval.results import load_runs
    from lmeval_layerprune.report.build import build_report

    model = save_chat_tiny(tmp_path / "tiny-chat")
    out = tmp_path / "recovery"
    recipes = "demo-selfgen-lora,demo-original-lora"
    overrides = (*TINY, "data=mixed", "selfgen.n=12", "budget.tokens=300", "sft.save_steps=2")
    settings = _settings(
        model, methods=("last",), ratios=(0.0, 0.5), tasks=TASKS[:1], limit=4,
        recipe=recipes, heal_cells=(("last", 0.5),), heal_overrides=overrides,
    )  # fmt: skip
    manifest = run_sweep(settings, out, progress=False)
    names = {"base", "last-0.5", "last-0.5-healed-demo-selfgen-lora", "last-0.5-healed-demo-original-lora"}
    assert set(_cells(out)) == names == set(manifest["cells"])
    examples = {}
    for recipe, method in (("demo-selfgen-lora", "selfgen"), ("demo-original-lora", "original")):
        cell = _cells(out)[f"last-0.5-healed-{recipe}"]
        assert cell["config"]["sweep"]["recipe"] == recipe and cell["config"]["sweep"]["healed"]
        ckpt = out / "checkpoints" / f"last-0.5-healed-{recipe}"
        plan = PruningPlan.load(ckpt)
        assert plan.drop == tuple(manifest["cells"]["last-0.5"]["plan"]["drop"])
        assert plan.recovery["method"] == method and plan.recovery["data"] == "mixed"
        assert (ckpt / RECIPE_FILE).is_file()
        examples[method] = plan.recovery["settings"]["examples"]
        assert plan.recovery["training_tokens"] == 300
    assert examples["selfgen"] == examples["original"] == 12  # the same prompts, the same token budget
    report = build_report(load_runs([out]), iters=200)
    healed = {r.healed: r for r in report.recovery}
    assert set(healed) == names - {"base", "last-0.5"}
    assert {r.pruned for r in report.recovery} == {"last-0.5"}
    assert {r.recipe for r in report.recovery} == {"demo-selfgen-lora", "demo-original-lora"}
    (contrast,) = report.contrasts
    assert {contrast.first, contrast.second} == set(healed)
    # a different recipe set is a different experiment: the folder refuses it, naming the field
    with pytest.raises(SweepError, match="recipe"):
        run_sweep(SweepSettings(**{**settings.__dict__, "recipe": "demo-selfgen-lora"}), out, progress=False)
    with pytest.raises(SweepError, match="recipe listed twice"):
        run_sweep(SweepSettings(**{**settings.__dict__, "recipe": "a,a"}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
