"""Bracket analysis: the Python classifier against CPython's own parser messages, and the scanner."""

from __future__ import annotations

import pytest

from lmeval_layerprune.probes.brackets import (
    PrependFieldFilter,
    classify_python,
    closing_sequence,
    closure_scores,
    is_balanced,
    python_bracket_error,
    scan,
)

# (source, expected kind); CPython's message is the independent reference checked below.
CASES = [
    ("x = (1, 2", "unclosed"),
    ("x = 1)", "unmatched"),
    ("x = [1, 2)", "mismatched"),
    ('x = {"a": [1, (2,]}', "mismatched"),
    ("def f(a, b:\n    return a\n", "unclosed"),
    ("a = (\n  1,\n  2\n", "unclosed"),
    ('s = "(" + \'[\' + "{"', "ok"),  # brackets inside strings
    ('s = f"{a[0]}({b})" + f"{{"', "ok"),  # f-string fields and escaped braces
    ("x = 1  # ( [ {\n", "ok"),  # brackets inside a comment
    ('s = """ ( [ \n ] ) }"""\n', "ok"),
    ('s = ")" + (1', "unclosed"),  # a closer in a string does not close anything
    ('x = f"{a}" + ]', "unmatched"),
    ('s = """abc', "syntax"),  # unterminated string: not a bracket error
    ('s = "abc', "syntax"),
    ("if x\n    y = 1\n", "syntax"),
    ("def f():\nreturn 1\n", "syntax"),
    ("x = (1 +)", "syntax"),  # balanced but invalid
    ("print(len([1, 2]))\n", "ok"),
]
PARSER_SAYS = {
    "unclosed": "was never closed",
    "unmatched": "unmatched",
    "mismatched": "does not match",
}


@pytest.mark.parametrize(("source", "kind"), CASES)
def test_classify_python(source: str, kind: str) -> None:
    report = classify_python(source)
    assert report.kind == kind, report
    try:
        compile(source, "<case>", "exec")
        parser_msg = None
    except SyntaxError as exc:
        parser_msg = exc.msg
    if kind == "ok":
        assert parser_msg is None
    else:
        assert parser_msg is not None
        said = PARSER_SAYS.get(kind)
        # CPython names the bracket problem whenever it reports one first
        if said and "def f(a, b:" not in source:
            assert said in parser_msg, parser_msg
        if kind == "syntax":
            assert not any(s in parser_msg for s in PARSER_SAYS.values()), parser_msg
    assert report.is_bracket_error == (kind in PARSER_SAYS)


def test_unclosed_report_lists_open_brackets() -> None:
    report = classify_python("x = foo([1, {'a': (2")
    assert report.kind == "unclosed" and report.open == ["(", "[", "{", "("]


def test_scan_languages() -> None:
    assert closing_sequence("( [ ] { (", "dyck", sep=" ") == ") } )"
    assert closing_sequence("f(a, [1, {'k': g('(')", "python") == "}])"
    assert closing_sequence('f(a, [1, {k: "}"', "js") == "}])"
    assert closing_sequence("f('''(\n''', [x  # (\n", "python") == "])"
    assert closing_sequence("g(`${a}(`, [x // (\n", "js") == "])"
    assert scan("( ]").error == "mismatched" and scan(")").error == "unmatched"
    assert is_balanced("x = f('(')", "python") and not is_balanced("x = f('(')", "dyck")
    with pytest.raises(ValueError, match="unknown bracket language 'rust'"):
        scan("(", "rust")
    with pytest.raises(ValueError, match="unmatched"):
        closing_sequence("a)")


@pytest.mark.parametrize(
    ("prefix", "generation", "lang", "exact", "balanced"),
    [
        ("( [ ] { (", ") } )", "dyck", 1.0, 1.0),
        ("( [ ] { (", ")})\nInput: (", "dyck", 1.0, 1.0),  # only the first line counts
        ("( [ ] { (", ") }", "dyck", 0.0, 0.0),
        ("( [ ] { (", "( ) ) } )", "dyck", 0.0, 1.0),  # balanced, but not the shortest closing
        ("( [ ] { (", ") ) }", "dyck", 0.0, 0.0),
        ("x = f([1, g(2", "))]) # closes", "python", 0.0, 0.0),
        ("x = f([1, g(2", ")]) # ) done", "python", 1.0, 1.0),  # comment ignored
        ("x = f([1, g(2", ") + 1])", "python", 1.0, 1.0),
        ('x = f("(", [1', "])", "python", 1.0, 1.0),
    ],
)
def test_closure_scores(prefix: str, generation: str, lang: str, exact: float, balanced: float) -> None:
    assert closure_scores(prefix, generation, lang) == {"exact_closure": exact, "balanced": balanced}


def test_lm_eval_helpers() -> None:
    docs = [{"prompt": "def f(x):\n    return (x"}, {"prompt": "def f(x):\n    return x"}]
    programs = PrependFieldFilter().apply([[" + 1"], [" + 1\n"]], docs)
    assert programs == [["def f(x):\n    return (x + 1"], ["def f(x):\n    return x + 1\n"]]
    assert python_bracket_error([None], programs[0]) == 1.0
    assert python_bracket_error([None], programs[1]) == 0.0
