"""Layer selection: the greedy loop, resuming from the journal, perplexity reuse, plans and plots."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model

from lmeval_layerprune.importance import load_calibration_texts
from lmeval_layerprune.select import (
    Journal,
    PerplexityObjective,
    SelectionSettings,
    greedy_search,
    normalized,
    select_layers,
)


class Counting:
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
    result = greedy_search(Counting(weights), 6, 3, [0], Journal(None, "k"), progress=False)
    # layer 0 is free but protected; 2 and 3 tie -> 3 first, then 2, then 5
    assert result["order"] == [3, 2, 5]
    assert result["drop"] == [2, 3, 5]
    assert result["baseline"] == {"t1": 1.0, "t2": 2.0}
    assert result["rounds"][0]["scores"]["3"] == pytest.approx(((1 - 0.1) / 1 + 1) / 2)
    with pytest.raises(ValueError, match="n=6 must be between"):
        greedy_search(Counting(weights), 6, 6, [0], Journal(None, "k"), progress=False)


def test_normalization() -> None:
    assert normalized({"a": 0.5, "b": 0.0}, {"a": 1.0, "b": 0.0}, True) == pytest.approx(0.25)
    assert normalized({"perplexity": 20.0}, {"perplexity": 10.0}, False) == pytest.approx(0.5)
    # a task whose metric is better when lower (e.g. lambada's perplexity) is inverted on its own
    mixed = normalized({"acc": 0.5, "ppl": 20.0}, {"acc": 1.0, "ppl": 10.0}, True, {"ppl"})
    assert mixed == pytest.approx((0.5 + 0.5) / 2)


def test_resume_after_a_kill_gives_the_same_plan(tmp_path) -> None:
    weights = [0.0, 0.3, 0.1, 0.15, 0.5, 0.2, 0.05, 0.4]
    settings = SelectionSettings(model="m", n=4)
    full = greedy_search(Counting(weights), 8, 4, [0], Journal(None, "x"), progress=False)

    path = tmp_path / "journal.jsonl"
    for kill_at in (0, 3, 9, 14):
        path.unlink(missing_ok=True)
        with pytest.raises(KeyboardInterrupt):
            greedy_search(
                Counting(weights, fail_after=kill_at), 8, 4, [0], Journal.open(path, settings), progress=False
            )
        with open(path, "a") as fh:
            fh.write('{"settings_key": "trunc')  # a write cut short by the kill
        # killed again after two more measurements, cut short again, then resumed to the end
        with pytest.raises(KeyboardInterrupt):
            greedy_search(Counting(weights, fail_after=2), 8, 4, [0], Journal.open(path, settings), progress=False)
        with open(path, "a") as fh:
            fh.write('{"settings_')
        again = Counting(weights)
        resumed = greedy_search(again, 8, 4, [0], Journal.open(path, settings), progress=False)
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
    from lmeval_layerprune.lm import PrunedHFLM

    out = tmp_path / "plan.json"
    plan = select_layers(str(llama_dir), "ppl", 2, out=out, plot=tmp_path / "plan.png", progress=False, calib_samples=4)
    saved = json.loads(out.read_text())
    assert saved["drop"] == plan["drop"] and len(plan["drop"]) == 2 and 0 not in plan["drop"]
    assert saved["num_layers"] == 6 and saved["method"] == "ppl" and len(saved["rounds"]) == 2
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plan.json.journal.jsonl").is_file()
    lm = PrunedHFLM(pretrained=str(llama_dir), drop=f"plan:{out}")
    assert lm.model.config.layer_pruning["drop"] == plan["drop"]


@pytest.mark.parametrize("method", ["bi", "angular", "last"])
def test_one_pass_methods_agree_with_drop_specs(llama_dir, tmp_path, method) -> None:
    from lmeval_layerprune.lm import PrunedHFLM

    plan = select_layers(str(llama_dir), method, 2, out=tmp_path / "p.json", plot=tmp_path / "p.png", progress=False)
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
    plan = select_layers(
        str(llama_dir), "iterative", 1, tasks=["arith_probe_add_1d"], limit=2, out=tmp_path / "p.json", progress=False
    )
    assert len(plan["drop"]) == 1 and set(plan["baseline"]) == {"arith_probe_add_1d"}
    # every candidate sees the same items and few-shot examples: repeated measurements agree
    from lmeval_layerprune.lm import PrunedHFLM
    from lmeval_layerprune.select import TaskObjective

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
    exact = greedy_search(exact_obj, 12, 4, [0], Journal(None, "e"), progress=False)
    raced = greedy_search(race_obj, 12, 4, [0], Journal(None, "r"), progress=False, race=True)
    assert raced["drop"] == exact["drop"]
    assert race_obj.cost < 0.6 * exact_obj.cost
    assert sorted(set(raced["rounds"][0]["budget"].values())) == pytest.approx([1 / 9, 1 / 3, 1.0])
    # resuming a race from its journal repeats nothing
    path = tmp_path / "race.jsonl"
    settings = SelectionSettings(model="m", n=4)
    greedy_search(Noisy(weights), 12, 4, [0], Journal.open(path, settings), progress=False, race=True)
    again = Noisy(weights)
    assert (
        greedy_search(again, 12, 4, [0], Journal.open(path, settings), progress=False, race=True)["drop"]
        == exact["drop"]
    )
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
    from lmeval_layerprune.lm import PrunedHFLM
    from lmeval_layerprune.select import TaskObjective

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
