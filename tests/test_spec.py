"""The drop= grammar: what each form resolves to, and the errors for bad specs."""

from __future__ import annotations

import json

import pytest

from lmeval_layerprune.core.spec import DropSpec, format_indices
from lmeval_layerprune.errors import DropSpecError
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_indices


@pytest.mark.parametrize(
    ("text", "n", "want"),
    [
        ("7", 30, (7,)),
        (7, 30, (7,)),
        ("20-25", 30, (20, 21, 22, 23, 24, 25)),
        ("3+7+20-22", 30, (3, 7, 20, 21, 22)),
        ("3-5+4", 30, (3, 4, 5)),  # overlaps are fine
        ([3, 7], 30, (3, 7)),
        (["20-21", 3], 30, (3, 20, 21)),
        ("[3,7]", 30, (3, 7)),
        ('["20-21",3]', 30, (3, 20, 21)),
        ("last:8", 32, tuple(range(24, 32))),
        ("last:25%", 32, tuple(range(24, 32))),
        ("last:25%", 30, tuple(range(22, 30))),  # 7.5 rounds half up to 8
        ("none", 30, ()),
        (None, 30, ()),
        ("0", 2, (0,)),
    ],
)
def test_resolves(text, n, want) -> None:
    assert resolve_indices(text, n) == want


@pytest.mark.parametrize(
    ("text", "n", "match"),
    [
        ("30", 30, r"layer 30 is out of range \(the model has 30 layers, 0..29\)"),
        ("5-3", 30, r"reversed range \(did you mean '3-5'\?\)"),
        ("", 30, "the spec is empty"),
        ("[]", 30, "the list is empty"),
        ("0-29", 30, "it removes every layer"),
        ("last:30", 30, "it removes every layer"),
        ("foo:3", 30, "unknown method 'foo'"),
        ("bi:0", 30, "needs a positive layer count"),
        ("last:x%", 30, "percentage is not a number"),
        ("last:100%", 30, "between 0 and 100"),
        ("3++4", 30, "empty part"),
        ("3,4", 30, "not a layer index"),
        ("a-b", 30, "not a layer index"),
        ("3+last:2", 30, "cannot be combined"),
        ("-1", 30, "not a layer index"),
    ],
)
def test_bad_specs_name_the_problem_and_the_valid_forms(text, n, match) -> None:
    with pytest.raises(ValueError, match=match) as info:
        resolve_indices(text, n)
    assert isinstance(info.value, DropSpecError)
    assert "Valid forms" in str(info.value)
    assert repr(text) in str(info.value) or repr(str(text)) in str(info.value) or "'[]'" in str(info.value)


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(DropSpecError, match=r"unknown method 'foo' \(known: last, bi, angular, angular_all"):
        parse_spec("foo:3")


def test_a_greedy_method_is_not_a_spec_and_says_what_to_run() -> None:
    with pytest.raises(DropSpecError, match=r"greedy search.*lmeval-prune select MODEL --method iterative --n 4"):
        parse_spec("iterative:4")


def test_parsing_reads_no_file_and_knows_no_method(tmp_path) -> None:
    """The grammar alone (core) accepts any METHOD:K and any plan path; the checks are the resolver's."""
    assert DropSpec.parse("foo:3").method == "foo"
    assert DropSpec.parse(f"plan:{tmp_path / 'missing.json'}").path == str(tmp_path / "missing.json")


def test_plan_spec(tmp_path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": "m", "num_layers": 30, "drop": [4, 5, 11], "method": "iterative"}))
    spec = f"plan:{plan}"
    assert resolve_indices(spec, 30) == (4, 5, 11)
    with pytest.raises(DropSpecError, match="made for a model with 30 layers"):
        resolve_indices(spec, 28)
    with pytest.raises(DropSpecError, match="does not exist"):
        parse_spec(f"plan:{tmp_path / 'missing.json'}")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DropSpecError, match="not valid JSON"):
        parse_spec(f"plan:{tmp_path / 'bad.json'}")
    plus = tmp_path / "a+b.json"  # '+' in a plan path is not a union
    plus.write_text(json.dumps({"num_layers": 30, "drop": [1]}))
    assert resolve_indices(f"plan:{plus}", 30) == (1,)
    (tmp_path / "nodrop.json").write_text("{}")
    with pytest.raises(DropSpecError, match="no 'drop' list"):
        parse_spec(f"plan:{tmp_path / 'nodrop.json'}")


def test_metric_specs_pick_from_scores() -> None:
    bi = [0.9, 0.1, 0.5, 0.1, 0.05, 0.8]
    # the two lowest; the tie at 0.1 goes to the higher index
    assert resolve_indices("bi:2", 6, bi) == (3, 4)
    assert resolve_indices("bi:3", 6, bi) == (1, 3, 4)
    ang = [0.3, 0.2, 0.2, 0.4]  # block starts for count=3 in 6 layers; tie -> deeper block
    assert resolve_indices("angular:3", 6, ang) == (2, 3, 4)
    # a share of the layers, rounded half up: 50% of 6 -> 3, 25% of 6 -> 1.5 -> 2
    assert resolve_indices("angular:50%", 6, ang) == (2, 3, 4)
    assert resolve_indices("bi:25%", 6, bi) == (3, 4)
    assert DropSpec.parse("angular:25%").layer_count(30) == 8 == DropSpec.parse("last:25%").layer_count(30)
    assert needs_model("bi:2") and needs_model("angular:2") and not needs_model("last:2") and not needs_model("3")
    with pytest.raises(ValueError, match="needs the layer scores of 'bi'"):
        resolve_indices("bi:2", 6)


def test_format_indices_round_trips() -> None:
    for drop in [(3, 4, 5, 9), (0,), (1, 3, 5), tuple(range(20, 26))]:
        assert resolve_indices(format_indices(drop), 30) == drop
    assert format_indices([3, 4, 5, 9]) == "3-5+9"
