"""Layer selection: the greedy loop, resuming from the journal, perplexity reuse, plans and plots."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction

import pytest
import torch
from conftest import tiny_model

from lmeval_layerprune.core.journal import Journal
from lmeval_layerprune.lmeval.hf import PrunedHFLM
from lmeval_layerprune.methods.capture import load_calibration_texts
from lmeval_layerprune.search.greedy import (
    GreedySettings,
    certainly_beaten,
    greedy_search,
    normalized,
    pick_best,
    retention_bounds,
)
from lmeval_layerprune.search.objectives import PerplexityObjective, TaskObjective
from lmeval_layerprune.search.protocols import ItemObjective, ItemTask, Objective
from lmeval_layerprune.search.select import SelectionSettings, select_layers


def search(objective, num_layers, n, journal, **options):
    """The greedy loop with layer 0 protected and no progress bar (``options``: race, exhaustive)."""
    return greedy_search(objective, num_layers, journal, GreedySettings(n, protect=(0,), progress=False, **options))


class Counting(Objective):
    """A synthetic objective: layer i is worth weights[i]; removing it costs that much."""

    higher_is_better = True

    def __init__(self, weights, fail_after=None):
        self.weights, self.calls, self.fail_after = weights, 0, fail_after

    def __call__(self, drop):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return {"t1": 1.0 - sum(self.weights[i] for i in drop), "t2": 2.0}


def test_greedy_picks_cheapest_with_ties_to_higher_index_and_protects() -> None:
    weights = [0.0, 0.3, 0.1, 0.1, 0.5, 0.2]
    result = search(Counting(weights), 6, 3, Journal(None, "k"))
    # layer 0 is free but protected; 2 and 3 tie -> 3 first, then 2, then 5
    assert result["order"] == [3, 2, 5]
    assert result["drop"] == [2, 3, 5]
    assert result["baseline"] == {"t1": 1.0, "t2": 2.0}
    assert result["rounds"][0]["scores"]["3"] == pytest.approx(((1 - 0.1) / 1 + 1) / 2)
    with pytest.raises(ValueError, match="n=6 must be between"):
        search(Counting(weights), 6, 6, Journal(None, "k"))


def test_normalization() -> None:
    assert normalized({"a": 0.5, "b": 0.0}, {"a": 1.0, "b": 0.0}, True) == pytest.approx(0.25)
    assert normalized({"perplexity": 20.0}, {"perplexity": 10.0}, False) == pytest.approx(0.5)
    # a task whose metric is better when lower (e.g. lambada's perplexity) is inverted on its own
    mixed = normalized({"acc": 0.5, "ppl": 20.0}, {"acc": 1.0, "ppl": 10.0}, True, {"ppl"})
    assert mixed == pytest.approx((0.5 + 0.5) / 2)


def test_resume_after_a_kill_gives_the_same_plan(tmp_path) -> None:
    weights = [0.0, 0.3, 0.1, 0.15, 0.5, 0.2, 0.05, 0.4]
    settings = SelectionSettings(model="m", n=4)
    full = search(Counting(weights), 8, 4, Journal(None, "x"))

    path = tmp_path / "journal.jsonl"
    for kill_at in (0, 3, 9, 14):
        path.unlink(missing_ok=True)
        with pytest.raises(KeyboardInterrupt):
            search(Counting(weights, fail_after=kill_at), 8, 4, Journal.open(path, settings))
        with open(path, "a") as fh:
            fh.write('{"settings_key": "trunc')  # a write cut short by the kill
        # killed again after two more measurements, cut short again, then resumed to the end
        with pytest.raises(KeyboardInterrupt):
            search(Counting(weights, fail_after=2), 8, 4, Journal.open(path, settings))
        with open(path, "a") as fh:
            fh.write('{"settings_')
        again = Counting(weights)
        resumed = search(again, 8, 4, Journal.open(path, settings))
        assert resumed["drop"] == full["drop"] and resumed["rounds"] == full["rounds"]
        assert again.calls == 1 + 7 + 6 + 5 + 4 - kill_at - 2  # only what was not recorded yet

    with pytest.raises(ValueError, match="written with other settings"):
        Journal.open(path, SelectionSettings(model="m", n=5))


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "qwen3"])
def test_perplexity_reuse_equals_full_recompute(model_type, tokenizer) -> None:
    model = tiny_model(model_type)
    texts = load_calibration_texts(limit=3)
    fast, slow = PerplexityObjective(model, tokenizer, texts), PerplexityObjective(model, tokenizer, texts)
    slow.reuse.enabled = False
    for obj in (fast, slow):
        obj.start_round([2])
    # the search's order (deepest first), then shallower-after-deeper and a race-style subset
    for c, fraction in [(5, 1.0), (4, 1.0), (3, 1.0), (1, 1.0), (4, 1.0), (3, 0.5)]:
        a, b = fast([2, c], fraction=fraction), slow([2, c], fraction=fraction)
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)
    assert fast.reuse.hits > 0 and slow.reuse.hits == 0  # the reuse path really ran
    # and the model is left exactly as it was
    assert model.config.num_hidden_layers == 6 and not hasattr(model.config, "layer_pruning")
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_model(model_type)(ids).logits)


def test_select_ppl_writes_a_usable_plan_and_plot(llama_dir, tmp_path) -> None:
    out = tmp_path / "plan.json"
    settings = SelectionSettings(str(llama_dir), "ppl", 2, calib_samples=4)
    plan = select_layers(settings, out=out, plot=tmp_path / "plan.png", progress=False)
    saved = json.loads(out.read_text())
    assert saved["drop"] == plan["drop"] and len(plan["drop"]) == 2 and 0 not in plan["drop"]
    assert saved["num_layers"] == 6 and saved["method"] == "ppl" and len(saved["rounds"]) == 2
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plan.json.journal.jsonl").is_file()
    lm = PrunedHFLM(pretrained=str(llama_dir), drop=f"plan:{out}")
    assert lm.model.config.layer_pruning["drop"] == plan["drop"]


@pytest.mark.parametrize("method", ["bi", "angular", "last"])
def test_one_pass_methods_agree_with_drop_specs(llama_dir, tmp_path, method) -> None:
    settings = SelectionSettings(str(llama_dir), method, 2)
    plan = select_layers(settings, out=tmp_path / "p.json", plot=tmp_path / "p.png", progress=False)
    lm = PrunedHFLM(pretrained=str(llama_dir), drop=f"{method}:2")
    assert plan["drop"] == list(lm.drop)
    assert (tmp_path / "p.png").is_file()


def test_iterative_search_runs_lm_eval_on_a_disjoint_selection_split(llama_dir, tmp_path) -> None:
    from lm_eval.tasks import TaskManager, get_task_dict

    def docs(tm, name):
        task = get_task_dict([name], tm)[name]
        return {(d["a"], d["b"]) for d in task.test_docs()}

    for name in ("arith_probe_add_1d", "arith_probe_sub_1d", "arith_probe_add_2d", "arith_probe_sub_2d"):
        selection, evaluation = docs(TaskManager(metadata={"seed": 777}), name), docs(TaskManager(), name)
        assert len(selection) == len(evaluation) > 0 and selection.isdisjoint(evaluation), name
    settings = SelectionSettings(str(llama_dir), "iterative", 1, tasks=["arith_probe_add_1d"], limit=2)
    plan = select_layers(settings, out=tmp_path / "p.json", progress=False)
    assert len(plan["drop"]) == 1 and set(plan["baseline"]) == {"arith_probe_add_1d"}
    # every candidate sees the same items and few-shot examples: repeated measurements agree
    lm = PrunedHFLM(pretrained=str(llama_dir), dtype="float32")
    objective = TaskObjective(lm, ["arith_probe_add_1d"], 3, 777)
    first = objective([1])
    objective([2], fraction=0.5)
    assert objective([1]) == first
    assert sorted(map(int, plan["rounds"][0]["scores"])) == [1, 2, 3, 4, 5]  # layer 0 protected


class Noisy(Counting):
    """Low budgets see a noisy version of the truth (fixed per candidate and budget)."""

    cost = 0.0  # in full-budget evaluations

    def __call__(self, drop, fraction=1.0):
        self.cost += fraction
        raw = super().__call__(drop)
        if fraction < 1.0:
            raw["t1"] += 0.02 * ((sum(drop) * 7 + int(fraction * 100)) % 5 - 2) * (1 - fraction)
        return raw


def test_race_finds_the_exact_plan_with_fewer_evaluations(tmp_path) -> None:
    weights = [0.0, 0.31, 0.12, 0.15, 0.52, 0.21, 0.05, 0.43, 0.27, 0.09, 0.36, 0.18]
    exact_obj, race_obj = Noisy(weights), Noisy(weights)
    exact = search(exact_obj, 12, 4, Journal(None, "e"))
    raced = search(race_obj, 12, 4, Journal(None, "r"), race=True)
    assert raced["drop"] == exact["drop"]
    assert race_obj.cost < 0.6 * exact_obj.cost
    assert sorted(set(raced["rounds"][0]["budget"].values())) == pytest.approx([1 / 9, 1 / 3, 1.0])
    # resuming a race from its journal repeats nothing
    path = tmp_path / "race.jsonl"
    settings = SelectionSettings(model="m", n=4)
    search(Noisy(weights), 12, 4, Journal.open(path, settings), race=True)
    again = Noisy(weights)
    assert search(again, 12, 4, Journal.open(path, settings), race=True)["drop"] == exact["drop"]
    assert again.calls == 0


_LL_TASKS = {
    "ll_words.py": """
import datasets

WORDS = ["apple", "river", "stone", "cloud", "tiger", "paper", "glass", "music", "candle", "forest"]


def docs(**kwargs):
    rows = [{"ctx": " ".join(WORDS[i:i + 4]), "cont": " " + WORDS[(i + 5) % 10], "label": i % 3} for i in range(10)]
    return {"test": datasets.Dataset.from_list(rows)}
""",
    "ll_ppl.yaml": """task: ll_ppl
custom_dataset: !function ll_words.docs
test_split: test
output_type: loglikelihood
doc_to_text: "{{ctx}}"
doc_to_target: "{{cont}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
""",
    "ll_mc.yaml": """task: ll_mc
custom_dataset: !function ll_words.docs
test_split: test
output_type: multiple_choice
doc_to_text: "{{ctx}}"
doc_to_choice: [" apple", " river", " stone"]
doc_to_target: label
metric_list:
  - metric: acc
""",
}


def test_loglikelihood_objective_reuses_hidden_states_with_identical_scores(llama_dir, tmp_path) -> None:
    for name, text in _LL_TASKS.items():
        (tmp_path / name).write_text(text)
    lm = PrunedHFLM(pretrained=str(llama_dir), dtype="float32", batch_size=4)
    fast = TaskObjective(lm, ["ll_ppl", "ll_mc"], None, 777, include_path=tmp_path)
    slow = TaskObjective(lm, ["ll_ppl", "ll_mc"], None, 777, include_path=tmp_path)
    slow.reuse.enabled = False
    assert fast.lower_is_better == {"ll_ppl"}
    for obj in (fast, slow):
        obj.start_round([2])
    for c in (5, 4, 3, 1):
        a, b = fast([2, c]), slow([2, c])
        assert a.keys() == b.keys() == {"ll_ppl", "ll_mc"}
        assert a["ll_ppl"] == pytest.approx(b["ll_ppl"], rel=1e-5) and a["ll_mc"] == b["ll_mc"]
    assert fast.reuse.hits > 0 and slow.reuse.hits == 0
    # the unmodified model and HFLM come back afterwards
    assert "_model_call" not in vars(lm) and lm.model.config.num_hidden_layers == 6
    with pytest.raises(ValueError, match="unknown task.*no_such_task"):
        TaskObjective(lm, ["no_such_task"], None, 777)


# ------------------------------------------------------------ exact early elimination


def test_elimination_rule_bounds_ties_and_a_zero_baseline() -> None:
    tasks = [ItemTask("a", "acc", 4), ItemTask("z", "acc", 2)]
    base = {"a": Fraction(1, 2), "z": Fraction(0)}
    # nothing seen: "a" can end anywhere in [0, 1/(1/2)]; "z" (baseline 0) always counts 0
    assert retention_bounds({}, {}, tasks, base) == (0, 1)
    # two items of "a" seen, one right: between 1/4 / (1/2) and 3/4 / (1/2), halved over two tasks
    lo, hi = retention_bounds({"a": Fraction(1)}, {"a": 2}, tasks, base)
    assert (lo, hi) == (Fraction(1, 4), Fraction(3, 4))
    complete = retention_bounds({"a": Fraction(3), "z": Fraction(1)}, {"a": 4, "z": 2}, tasks, base)
    assert complete[0] == complete[1] == Fraction(3, 4)
    # strictly below another candidate's certain score: stopped, by the best such candidate
    assert certainly_beaten(3, Fraction(1, 2), {1: Fraction(2, 3), 2: Fraction(3, 5)}, index_ties=False) == 1
    # equal: with index ties only a higher index wins; with a secondary score nobody does yet
    assert certainly_beaten(3, Fraction(1, 2), {5: Fraction(1, 2)}, index_ties=True) == 5
    assert certainly_beaten(3, Fraction(1, 2), {2: Fraction(1, 2)}, index_ties=True) is None
    assert certainly_beaten(3, Fraction(1, 2), {5: Fraction(1, 2)}, index_ties=False) is None
    assert certainly_beaten(3, Fraction(1, 2), {3: Fraction(1)}, index_ties=True) is None  # not against itself
    # the total order: primary, then secondary among the tied, then the higher index
    scores = {1: Fraction(1, 2), 2: Fraction(1, 2), 4: Fraction(1, 3)}
    assert pick_best(scores) == (2, [1, 2], {})
    assert pick_best(scores, {1: -0.5, 2: -0.9}.get) == (1, [1, 2], {1: -0.5, 2: -0.9})
    assert pick_best(scores, {1: -0.5, 2: -0.5}.get)[0] == 2
    assert pick_best(scores, {1: -0.5, 2: None}.get) == (2, [1, 2], {})  # incomplete: index order


def _bit(*key) -> float:
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class Streams(ItemObjective):
    """Crafted per-item score streams: item i of task t is right with probability that falls
    with the weight of the removed layers; a task may be one the full model always fails."""

    higher_is_better = True

    def __init__(self, weights, seed, tasks, chunk_size, secondary=True, levels=1):
        self.weights, self.seed, self.item_tasks, self.chunk_size = weights, seed, tasks, chunk_size
        self.has_secondary, self.levels, self.items, self.calls = secondary, levels, 0, 0

    @property
    def num_chunks(self):
        return max(-(-t.n // self.chunk_size) for t in self.item_tasks)

    def value(self, drop, t, i):
        if t.name == "never":
            return 0.0
        p = max(0.0, 0.9 - sum(self.weights[j] for j in drop))
        u = _bit(self.seed, tuple(sorted(drop)), t.name, i)
        if self.levels == 1:
            return float(u < p)
        return min(self.levels, int(u * p * 2 * self.levels)) / self.levels  # partial credit, still in [0, 1]

    def chunk(self, drop, k):
        self.calls += 1
        out = {}
        for t in self.item_tasks:
            for i in range(k * self.chunk_size, min((k + 1) * self.chunk_size, t.n)):
                out[f"{t.name}|{i}"] = self.value(drop, t, i)
                self.items += 1
                if self.has_secondary:
                    out[f"{t.name}|{i}|s"] = -_bit(self.seed, tuple(sorted(drop)), t.name, i, "s")
        return out


@pytest.mark.parametrize("seed", range(6))
def test_elimination_gives_the_exhaustive_plan_on_crafted_streams(seed) -> None:
    weights = [0.0, 0.31, 0.02, 0.05, 0.5, 0.03, 0.02, 0.4, 0.27, 0.01, 0.36, 0.02]
    layouts = [
        [ItemTask("a", "acc", 12)],
        [ItemTask("a", "acc", 9), ItemTask("b", "exact_match", 5)],
        [ItemTask("a", "acc", 6), ItemTask("never", "acc", 4)],  # a zero baseline
    ]
    stopped_any = False
    for tasks in layouts:
        for secondary in (True, False):
            for chunk_size, levels in ((1, 1), (3, 1), (4, 3)):
                runs = {}
                for exhaustive in (True, False):
                    obj = Streams(weights, seed, tasks, chunk_size, secondary, levels)
                    res = search(obj, 12, 4, Journal(None, "s"), exhaustive=exhaustive)
                    runs[exhaustive] = (res, obj.items)
                (ex, ex_items), (el, el_items) = runs[True], runs[False]
                assert el["order"] == ex["order"], (tasks, secondary, chunk_size)
                for a, b in zip(ex["rounds"], el["rounds"], strict=True):
                    assert a["chosen"] == b["chosen"]
                    if secondary:  # ties stay open until measured: the same ties are reported
                        assert a.get("ties") == b.get("ties")
                    else:  # a tied lower index may be stopped on equality (it would lose anyway)
                        assert set(b.get("ties", [b["chosen"]])) <= set(a.get("ties", [a["chosen"]]))
                    assert a.get("secondary") == b.get("secondary")
                    # every candidate elimination measured fully has the exhaustive score; the rest are stopped
                    assert {k: a["scores"][k] for k in b["scores"]} == b["scores"]
                    assert set(b["scores"]) | set(b.get("stopped", {})) == set(a["scores"])
                    for c, stop in b.get("stopped", {}).items():
                        assert a["scores"][c] < a["scores"][str(a["chosen"])] or (
                            not secondary and a["scores"][c] == a["scores"][str(a["chosen"])] and int(c) < a["chosen"]
                        )
                        assert stop["bound"] <= a["scores"][str(stop["by"])] + 1e-12
                assert el_items <= ex_items and el["search"]["items_evaluated"] == el_items - sum(
                    t.n for t in tasks
                )  # minus the baseline
                stopped_any |= el_items < ex_items
                if any(t.name == "never" for t in tasks):
                    assert any("scores 0 on never" in w for w in el["warnings"])
    assert stopped_any


def test_an_all_tied_search_reports_its_ties_and_breaks_them_by_the_secondary_score() -> None:
    tasks = [ItemTask("never", "acc", 3)]
    obj = Streams([0.0] * 6, 0, tasks, 2, secondary=True)
    res = search(obj, 6, 2, Journal(None, "t"))
    r0 = res["rounds"][0]
    assert r0["ties"] == [1, 2, 3, 4, 5] and r0["tie_break"] == "secondary"
    assert r0["chosen"] == int(max(r0["secondary"], key=lambda c: (r0["secondary"][c], int(c))))
    assert len(set(r0["secondary"].values())) == 5  # a continuous score: no tie left for the index
    assert any("5 candidates tie" in w and "cannot tell them apart" in w for w in res["warnings"])
    assert any("scores 0 on never" in w for w in res["warnings"])
    # without a secondary score the higher index wins; elimination knows it before measuring
    obj = Streams([0.0] * 6, 0, tasks, 2, secondary=False)
    res = search(obj, 6, 2, Journal(None, "t"), exhaustive=True)
    assert res["order"] == [5, 4] and res["rounds"][0]["tie_break"] == "index"
    res = search(obj, 6, 2, Journal(None, "t"))
    assert res["order"] == [5, 4] and {s["items"] for s in res["rounds"][0]["stopped"].values()} == {0}


def test_a_killed_eliminating_search_resumes_with_the_same_eliminations(tmp_path) -> None:
    weights = [0.0, 0.31, 0.02, 0.05, 0.5, 0.03, 0.02, 0.4, 0.27, 0.01]
    tasks = [ItemTask("a", "acc", 8), ItemTask("b", "acc", 5)]
    settings = SelectionSettings(model="m", n=3)
    full = search(Streams(weights, 3, tasks, 2), 10, 3, Journal(None, "x"))
    assert sum(len(r.get("stopped", {})) for r in full["rounds"]) > 0

    class Killed(Streams):
        def __init__(self, *a, fail_after):
            super().__init__(*a)
            self.fail_after = fail_after

        def chunk(self, drop, k):
            if self.calls >= self.fail_after:
                raise KeyboardInterrupt("killed")
            return super().chunk(drop, k)

    path = tmp_path / "journal.jsonl"
    for kill_at in (1, 7, 30):
        path.unlink(missing_ok=True)
        with pytest.raises(KeyboardInterrupt):
            search(Killed(weights, 3, tasks, 2, fail_after=kill_at), 10, 3, Journal.open(path, settings))
        again = Streams(weights, 3, tasks, 2)
        resumed = search(again, 10, 3, Journal.open(path, settings))
        assert resumed["rounds"] == full["rounds"] and resumed["order"] == full["order"]
        fresh = Streams(weights, 3, tasks, 2)
        search(fresh, 10, 3, Journal(None, "y"))
        assert again.calls == fresh.calls - kill_at  # only what was not recorded yet
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert len(ids) == len(set(ids)) and any(i.endswith("#stop") for i in ids)


_ITEM_TASKS = {
    **_LL_TASKS,
    "parity.py": """
import datasets

WORDS = ["apple", "river", "stone", "cloud", "tiger", "paper", "glass", "music", "candle", "forest"]


def docs(**kwargs):
    rows = [{"q": " ".join(WORDS[i:i + 3]) + " ?", "answer": "AB"[i % 2]} for i in range(10)]
    return {"test": datasets.Dataset.from_list(rows)}


def parity(resps, docs=None):
    # a random tiny model's text, mapped to a class: about half right, and sensitive to every layer
    return [["AB"[len(r) % 2] for r in rs] for rs in resps]
""",
    "gen_parity.yaml": """task: gen_parity
custom_dataset: !function parity.docs
test_split: test
output_type: generate_until
doc_to_text: "{{q}}"
doc_to_target: "{{answer}}"
target_delimiter: " "
generation_kwargs:
  until: ["\\n"]
  do_sample: false
  max_gen_toks: 5
filter_list:
  - name: parity
    filter:
      - function: custom
        filter_fn: !function parity.parity
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""",
}


def _write_item_tasks(folder):
    for name, text in _ITEM_TASKS.items():
        (folder / name).write_text(text)
    return folder


def test_item_scores_equal_lm_evals_own_scores(llama_dir, tmp_path) -> None:
    folder = _write_item_tasks(tmp_path)
    lm = PrunedHFLM(pretrained=str(llama_dir), dtype="float32", batch_size=10)
    obj = TaskObjective(lm, ["gen_parity", "ll_mc"], None, 777, include_path=folder, chunk_size=10)
    assert [t.n for t in obj.item_tasks] == [10, 10] and obj.has_secondary and obj.num_chunks == 1
    for drop in ([], [3], [1, 4]):
        items = obj.chunk(drop, 0)
        reference = obj(drop)  # lm-eval's evaluate() on the same items, in the same batch
        for task in ("gen_parity", "ll_mc"):
            values = [items[f"{task}|{i}"] for i in range(10)]
            assert sum(values) / 10 == reference[task]
            assert all(isinstance(items[f"{task}|{i}|s"], float) and items[f"{task}|{i}|s"] < 0 for i in range(10))
    # perplexity has no known range: the objective says so and is scored whole
    ppl = TaskObjective(lm, ["ll_ppl"], None, 777, include_path=folder)
    assert ppl.item_tasks is None and "perplexity" in ppl.no_bounds_reason


@pytest.mark.slow
def test_elimination_gives_the_exhaustive_plan_on_tiny_models(llama_dir, tmp_path) -> None:
    """Random models (seeds); a generative and a multiple-choice task together, then one alone."""
    folder = _write_item_tasks(tmp_path)
    lm = PrunedHFLM(pretrained=str(llama_dir), dtype="float32", batch_size=4)
    for tasks, seeds in ((["gen_parity", "ll_mc"], (0, 1)), (["ll_mc"], (2,))):
        obj = TaskObjective(lm, tasks, 6, 777, include_path=folder, chunk_size=2)
        for seed in seeds:
            lm.model.load_state_dict(tiny_model("llama", seed=seed).state_dict())
            ex = search(obj, 6, 2, Journal(None, "e"), exhaustive=True)
            el = search(obj, 6, 2, Journal(None, "l"))
            assert el["order"] == ex["order"], (seed, tasks)
            assert ex["search"]["mode"] == "exhaustive" and el["search"]["mode"] == "exact-elimination"
            for a, b in zip(ex["rounds"], el["rounds"], strict=True):
                assert a.get("ties") == b.get("ties") and a.get("secondary") == b.get("secondary")
                assert b["scores"] == {k: a["scores"][k] for k in b["scores"]}
            assert el["search"]["items_evaluated"] <= ex["search"]["items_evaluated"]
    # random tiny models mostly tie (ties are what this checks on real lm-eval tasks); that the
    # elimination stops candidates is shown on the crafted streams above
