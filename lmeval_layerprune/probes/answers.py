"""Answer extraction for generative numeric tasks.

``first_integer`` reads the answer a model gives right after the prompt ("Answer: 57"),
``final_answer`` the one a chain of thought ends with ("... The answer is 14."). Both
return a canonical string (``"-1234"``, ``"12.5"``) or ``None``, so exact match
compares numbers, not spellings: thousands separators, a Unicode minus, a leading
``$`` or ``+``, leading zeros and a zero fractional part (``"12.0"``) are all normalised.

In a task YAML::

    filter_list:
      - name: first-integer
        filter:
          - function: custom
            filter_fn: !function lmeval_layerprune.probes.answers.first_integer_filter
          - function: take_first
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

# A number: optional sign (not a hyphen glued to a word: "COVID-19" is 19), optional "$",
# then either correctly grouped thousands ("1,234,567") or plain digits, then an optional
# fractional part. A comma not followed by exactly three digits ends the number ("12, 13").
_SIGN = r"(?P<sign>(?<![\w.])[-\u2212\u2013+])?"
_NUMBER_RE = re.compile(
    _SIGN + r"\$?(?P<int>(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d])|(?<![\d.,])\d+)(?P<frac>\.\d+)?(?![\d])"
)
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)


def canonical_number(sign: str | None, integer: str, frac: str | None = None) -> str:
    """Canonical text of a number: no separators, no leading zeros, ``-`` for negatives,
    and no fractional part when it is zero (``"12.50"`` -> ``"12.5"``, ``"3.0"`` -> ``"3"``)."""
    value = str(int(integer.replace(",", "")))
    if frac:
        digits = frac[1:].rstrip("0")
        if digits:
            value = f"{value}.{digits}"
    if sign in ("-", "\u2212", "\u2013") and value.strip("0.") != "":
        value = "-" + value
    return value


def _numbers(text: str) -> Iterable[re.Match[str]]:
    return _NUMBER_RE.finditer(text)


def first_integer(text: str) -> str | None:
    """The first number in ``text``, canonical (see :func:`canonical_number`), or ``None``.

    >>> first_integer(" 1,234 apples"), first_integer(" -7\\n"), first_integer("It is 12.0.")
    ('1234', '-7', '12')
    """
    for m in _numbers(text):
        return canonical_number(m["sign"], m["int"], m["frac"])
    return None


def final_answer(text: str) -> str | None:
    """The answer a worked solution ends with: the number after the last "answer is"
    (or "answer:"), else the last number in ``text``; canonical, or ``None``.

    >>> final_answer("12 + 7 = 19. 19 - 5 = 14. The answer is 14."), final_answer("so 3 + 4 = 7")
    ('14', '7')
    """
    marks = list(_ANSWER_IS_RE.finditer(text))
    if marks:
        found = first_integer(text[marks[-1].end() :])
        if found is not None:
            return found
    last = None
    for m in _numbers(text):
        last = m
    return None if last is None else canonical_number(last["sign"], last["int"], last["frac"])


def _map_filter(fn: Any, resps: Sequence[Sequence[str]]) -> list[list[str]]:
    return [[fn(r) or "" for r in group] for group in resps]


def first_integer_filter(resps: Sequence[Sequence[str]], docs: Sequence[dict] | None = None) -> list[list[str]]:
    """lm-eval ``custom`` filter: every response -> its first number ("" when there is none)."""
    return _map_filter(first_integer, resps)


def final_answer_filter(resps: Sequence[Sequence[str]], docs: Sequence[dict] | None = None) -> list[list[str]]:
    """lm-eval ``custom`` filter: every response -> its final answer ("" when there is none)."""
    return _map_filter(final_answer, resps)


def final_answer_match(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: 1.0 when the prediction's final answer equals the reference's.

    The reference may be a bare number or a worked solution ending in "The answer is N"
    (a chain-of-thought task's target), so the same metric serves both. Use it on the
    unfiltered generation (no ``filter_list``, or one that only does ``take_first``).
    """
    gold, pred = final_answer(references[0]), final_answer(predictions[0])
    return float(gold is not None and gold == pred)
