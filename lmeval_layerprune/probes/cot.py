"""Arithmetic in chains of thought: find every ``a op b = c`` step and check it.

A pruned model often still writes a plausible chain of thought whose individual
calculations are wrong. :func:`extract_steps` finds every written calculation
(``12 + 7 = 19``, ``5 x 3 = 15``, ``(3 + 4) * 2 = 14``, ``$23 - $15 = $8``, chains such
as ``12 + 7 = 19 - 5 = 14``), :func:`check_step` evaluates its left side exactly and
compares it with the written result, and the lm-eval metrics below report, separately
from final-answer accuracy:

* ``cot_step_error``: the share of all steps, over all responses, whose arithmetic is
  wrong (lower is better). A response that writes no step is not scorable for it (its
  per-item value is ``(0, 0)``), and the rate is ``nan`` when no response writes a step;
* ``cot_step_error_n``: the number of responses that write at least one step (the scorable
  ones), by the shared rule of :mod:`lmeval_layerprune.probes.scoring`;
* ``cot_steps``: the mean number of steps per response (defined for every response).

They read the raw generation, so use them in a filter pipeline that only does
``take_first`` (lm-eval's default ``none`` pipeline), e.g. on ``gsm8k_cot``::

    filter_list:                       # keep the task's own pipelines and add:
      - name: raw
        filter: [{function: take_first}]
    metric_list:
      - metric: !function lmeval_layerprune.probes.cot.cot_step_error
        aggregation: !function lmeval_layerprune.probes.scoring.pooled_ratio
        higher_is_better: false
      - metric: !function lmeval_layerprune.probes.cot.cot_step_error_n
        aggregation: !function lmeval_layerprune.probes.scoring.count_scorable
        higher_is_better: true
      - metric: !function lmeval_layerprune.probes.cot.cot_steps
        aggregation: mean
        higher_is_better: true
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from lmeval_layerprune.probes.scoring import pooled_ratio

_NUM = r"\$?\d+(?:,\d{3})*(?:\.\d+)?"
_OPERAND = rf"[(\s]*-?{_NUM}[)\s]*"
_OP = r"(?:[-+*/\u00d7\u00f7\u2212]|(?<=\s)[xX](?=\s))"
# operand (op operand)+ = result; not glued to a preceding word or number ("COVID-19", "3.5")
_STEP_RE = re.compile(rf"(?<![\w.$,])(?P<lhs>{_OPERAND}(?:{_OP}{_OPERAND})+)=\s*(?P<rhs>-?{_NUM})(?![\d])")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class Step:
    """One written calculation: ``expression = written`` and whether it is right."""

    expression: str
    written: str
    value: Fraction | None  # the exact value of ``expression`` (None: division by zero)
    correct: bool


def _number(text: str) -> Fraction:
    return Fraction(text.replace("$", "").replace(",", ""))


def _evaluate(expression: str) -> Fraction | None:
    """Exact value of an expression of numbers, + - * / and parentheses; ValueError if it is not one."""
    python = expression.replace("\u2212", "-").replace("\u00d7", "*").replace("\u00f7", "/")
    python = re.sub(r"(?<=\s)[xX](?=\s)", "*", python)
    python = re.sub(_NUM, lambda m: f"_N('{m.group(0).replace('$', '').replace(',', '')}')", python)
    try:
        tree = ast.parse(python.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from exc

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_N":
            return Fraction(node.args[0].value)  # type: ignore[attr-defined]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ZeroDivisionError
            return _BINOPS[type(node.op)](left, right)
        raise ValueError(f"not an arithmetic expression: {expression!r}")

    try:
        return ev(tree)
    except ZeroDivisionError:
        return None


def check_step(expression: str, written: str) -> Step:
    """Evaluate ``expression`` exactly and compare it with the ``written`` result.

    A written decimal counts as right when it is the exact value rounded to the decimals
    written (``10 / 3 = 3.33`` is right, ``10 / 3 = 3`` is wrong). Raises ValueError when
    ``expression`` is not arithmetic.
    """
    value = _evaluate(expression)
    target = _number(written.strip())
    if value is None:
        correct = False
    else:
        decimals = len(written.split(".")[1]) if "." in written else 0
        scale = Fraction(10) ** decimals
        correct = value == target or (decimals > 0 and abs(value * scale - target * scale) <= Fraction(1, 2))
    return Step(expression.strip(), written.strip(), value, correct)


def extract_steps(text: str) -> list[Step]:
    """Every calculation ``a op b [op c ...] = c`` written in ``text``, in order, checked.

    In a chain ``12 + 7 = 19 - 5 = 14`` each link is a step (``12 + 7 = 19``, ``19 - 5 = 14``).
    Matches that are not well-formed expressions (unbalanced parentheses) are skipped.
    """
    steps: list[Step] = []
    pos = 0
    while (m := _STEP_RE.search(text, pos)) is not None:
        lhs = m["lhs"]
        # a parenthesis opened before or closed after the match's own ones is not part of it
        while lhs.count("(") > lhs.count(")") and lhs.lstrip().startswith("("):
            lhs = lhs.lstrip()[1:]
        try:
            steps.append(check_step(lhs, m["rhs"]))
        except ValueError:
            pass
        pos = m.start("rhs")  # the result may start the next link of a chain
    return steps


def cot_step_error(references: Sequence[str], predictions: Sequence[str]) -> tuple[int, int]:
    """lm-eval metric (per response): ``(wrong steps, steps)``; aggregate with
    :func:`~lmeval_layerprune.probes.scoring.pooled_ratio` (``(0, 0)`` is not scorable)."""
    steps = extract_steps(predictions[0])
    return sum(not s.correct for s in steps), len(steps)


def cot_step_error_n(references: Sequence[str], predictions: Sequence[str]) -> tuple[int, int]:
    """lm-eval metric: :func:`cot_step_error`'s value, to count the responses that write a step
    (aggregate with :func:`~lmeval_layerprune.probes.scoring.count_scorable`)."""
    return cot_step_error(references, predictions)


def step_error_rate(items: Sequence[tuple[int, int]]) -> float:
    """lm-eval aggregation: wrong steps / all steps over all responses (``nan`` when there are none).

    The shared :func:`~lmeval_layerprune.probes.scoring.pooled_ratio` under its older name.
    """
    return pooled_ratio(items)


def cot_steps(references: Sequence[str], predictions: Sequence[str]) -> int:
    """lm-eval metric (per response): the number of calculations written; aggregate with ``mean``."""
    return len(extract_steps(predictions[0]))
