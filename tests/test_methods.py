"""The method registry: every registered method works through the grammar, select and a sweep cell,
and a new importance metric is one class in one file (here: this one), with no other module edited."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmeval_layerprune.errors import DropSpecError
from lmeval_layerprune.methods.capture import Calibration, calibration_states
from lmeval_layerprune.methods.registry import (
    LayerMethod,
    get_method,
    method_names,
    register_method,
    registered_methods,
    unregister_method,
)
from lmeval_layerprune.methods.resolve import parse_spec, resolve_drop
from lmeval_layerprune.search.select import SelectionSettings, select_layers
from lmeval_layerprune.sweep.run import SweepSettings, run_sweep

CAL = Calibration(samples=4)
TASKS = ("arith_probe_mc_add_1d",)
ONE_PASS = [name for name, m in registered_methods().items() if m.kind != "greedy"]
GREEDY = [name for name, m in registered_methods().items() if m.kind == "greedy"]

pytestmark = pytest.mark.usefixtures("one_thread")


class ToyRandom(LayerMethod):
    """A toy importance metric: seeded random scores, one per layer (the lowest go)."""

    name = "toy_random"
    kind = "per-layer"
    description = "seeded random scores (a test of the registry)"
    definition = "random.Random(0).random() per layer"

    def scores(self, states, count):
        rng = random.Random(0)
        return [rng.random() for _ in range(len(states[0]) - 1)]


def _toy_choice(num_layers: int, count: int) -> list[int]:
    """What the toy metric must choose, computed here without the registry."""
    rng = random.Random(0)
    scores = [rng.random() for _ in range(num_layers)]
    return sorted(sorted(range(num_layers), key=lambda i: (scores[i], -i))[:count])


@pytest.fixture
def toy():
    register_method(ToyRandom)
    yield get_method("toy_random")
    unregister_method("toy_random")


def test_the_builtins_are_registered_with_their_sources() -> None:
    assert method_names() == ("last", "bi", "angular", "angular_all", "collapse", "iterative", "ppl")
    for name in ("bi", "angular", "collapse", "iterative", "ppl"):
        m = get_method(name)
        assert m.citation and m.url.startswith("https://arxiv.org/") and m.definition, name
    assert get_method("angular").definition.count("last token") == 1


def test_registration_refuses_bad_classes() -> None:
    class NoKind(LayerMethod):
        name = "no_kind"
        description = "x"

    class Grammar(LayerMethod):
        name = "plan"
        kind = "per-layer"
        description = "x"

    for cls, why in ((NoKind, "kind must be one of"), (Grammar, "part of the drop grammar")):
        with pytest.raises(ValueError, match=why):
            register_method(cls)
    with pytest.raises(ValueError, match="already registered"):

        class Twin(LayerMethod):
            name = "bi"
            kind = "per-layer"
            description = "x"

        register_method(Twin)


@pytest.mark.parametrize("name", ONE_PASS)
def test_every_one_pass_method_resolves_through_the_grammar(name, llama_dir) -> None:
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    plan = resolve_drop(str(llama_dir), f"{name}:2", model=model, calibration=CAL)
    assert len(plan.drop) == 2 and plan.method == name and plan.spec == f"{name}:2"
    m = get_method(name)
    if m.needs_states:  # the scores that chose are recorded, and they are the method's own
        states = calibration_states(model, AutoTokenizer.from_pretrained(llama_dir), CAL)
        assert plan.scores == pytest.approx(m.scores(states, 2))
    assert (plan.extra.get("transform") == "merge") == (m.transform == "merge")


@pytest.mark.parametrize("name", GREEDY)
def test_a_greedy_method_is_not_a_spec(name) -> None:
    with pytest.raises(DropSpecError, match=f"lmeval-prune select MODEL --method {name}"):
        parse_spec(f"{name}:2")


@pytest.mark.parametrize("name", [*ONE_PASS, "ppl"])
def test_every_method_runs_through_select(name, llama_dir, tmp_path) -> None:
    settings = SelectionSettings(str(llama_dir), name, 2, calib_samples=4)
    plan = select_layers(settings, out=tmp_path / "plan.json", progress=False)
    assert len(plan["drop"]) == 2 and plan["method"] == name
    assert json.loads((tmp_path / "plan.json").read_text())["drop"] == plan["drop"]


@pytest.mark.slow
def test_the_task_search_runs_through_select(llama_dir, tmp_path) -> None:
    settings = SelectionSettings(str(llama_dir), "iterative", 1, tasks=TASKS, limit=4, calib_samples=4)
    plan = select_layers(settings, out=tmp_path / "plan.json", progress=False)
    assert len(plan["drop"]) == 1 and plan["method"] == "iterative" and len(plan["rounds"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in ONE_PASS if m != "angular_all"])
def test_every_one_pass_method_runs_as_a_sweep_cell(name, llama_dir, tmp_path) -> None:
    _sweep_cell(name, llama_dir, tmp_path)


def test_a_toy_metric_works_through_drop_select_and_a_sweep_cell(toy, llama_dir, tmp_path) -> None:
    assert "toy_random" in method_names("per-layer")
    want = _toy_choice(6, 2)
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    plan = resolve_drop(str(llama_dir), "toy_random:2", model=model, calibration=CAL)
    assert list(plan.drop) == want and plan.method == "toy_random"
    assert (
        select_layers(SelectionSettings(str(llama_dir), "toy_random", 2, calib_samples=4), progress=False)["drop"]
        == want
    )
    assert _sweep_cell("toy_random", llama_dir, tmp_path) == want


def _sweep_cell(name: str, llama_dir: Path, tmp_path: Path) -> list[int]:
    settings = SweepSettings(
        model=str(llama_dir), methods=(name,), ratios=(0.0, 0.34), tasks=TASKS, limit=2, calib_samples=4
    )
    run_sweep(settings, tmp_path / "sweep", progress=False)
    (found,) = (tmp_path / "sweep" / f"{name}-0.34").glob("*/results_*.json")
    plan = json.loads(found.read_text())["config"]["layer_pruning"]
    assert plan["method"] == name and len(plan["drop"]) == 2
    return plan["drop"]
