"""Seeded generator for ``arith_word_cot``: short word problems with worked solutions (offline).

Each problem takes two or three calculations with small numbers (GSM8K-like, easier). The
target is a worked solution that writes every calculation as ``a op b = c`` and ends with
"The answer is N.", so three-shot prompting shows the model the format the CoT step metric
(:mod:`lmeval_layerprune.probes.cot`) reads. Metadata: ``n``, ``seed``, ``eval_seed``,
``fewshot_seed`` as for ``arith_probe`` (a seed other than ``eval_seed`` gives a disjoint split).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import datasets

from lmeval_layerprune.probes.splits import SplitSettings, disjoint_splits

NAMES = ["Tom", "Ana", "Ravi", "Mia", "Sam", "Lena", "Omar", "Kim", "Ben", "Zoe", "Ivan", "Nora"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cards", "shells", "coins"]


def _buy_and_give(rng: random.Random, name: str, item: str) -> tuple[str, list[str], int]:
    a, b = rng.randint(5, 60), rng.randint(2, 40)
    c = rng.randint(1, a + b)
    s1 = a + b
    ans = s1 - c
    q = (
        f"{name} has {a} {item}. {name} gets {b} more and then gives {c} to a friend. "
        f"How many {item} does {name} have now?"
    )
    return q, [f"{name} has {a} + {b} = {s1} {item}.", f"After giving {c} away, {s1} - {c} = {ans}."], ans


def _boxes(rng: random.Random, name: str, item: str) -> tuple[str, list[str], int]:
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    s1 = a * b
    c = rng.randint(1, s1)
    ans = s1 - c
    q = f"{name} buys {a} boxes with {b} {item} in each box, then gives away {c} {item}. How many {item} are left?"
    return q, [f"The boxes hold {a} * {b} = {s1} {item}.", f"{s1} - {c} = {ans} are left."], ans


def _change(rng: random.Random, name: str, item: str) -> tuple[str, list[str], int]:
    a, b = rng.randint(2, 15), rng.randint(2, 6)
    s1 = a * b
    note = next(x for x in (20, 50, 100) if x > s1)
    ans = note - s1
    q = (
        f"{item.capitalize()} cost {a} dollars each. {name} buys {b} and pays with a {note}-dollar note. "
        f"How much change does {name} get?"
    )
    return q, [f"{name} pays {b} * {a} = {s1} dollars.", f"The change is {note} - {s1} = {ans} dollars."], ans


def _reading(rng: random.Random, name: str, item: str) -> tuple[str, list[str], int]:
    a, b = rng.randint(5, 40), rng.randint(5, 40)
    s1 = a + b
    s2 = a * 2
    ans = s1 + s2
    q = (
        f"{name} reads {a} pages on Monday and {b} pages on Tuesday. On Wednesday {name} reads twice "
        f"as many pages as on Monday. How many pages does {name} read in the three days?"
    )
    steps = [
        f"Monday and Tuesday make {a} + {b} = {s1} pages.",
        f"Wednesday is {a} * 2 = {s2} pages.",
        f"In total {s1} + {s2} = {ans} pages.",
    ]
    return q, steps, ans


def _share(rng: random.Random, name: str, item: str) -> tuple[str, list[str], int]:
    b = rng.randint(2, 8)
    s1 = rng.randint(2, 12)
    a = b * s1
    c = rng.randint(1, 9)
    ans = s1 + c
    q = (
        f"{name} shares {a} {item} equally among {b} friends. Then each friend finds {c} more {item}. "
        f"How many {item} does each friend have?"
    )
    return q, [f"Each friend gets {a} / {b} = {s1} {item}.", f"With the ones found, {s1} + {c} = {ans}."], ans


TEMPLATES: list[Callable[[random.Random, str, str], tuple[str, list[str], int]]] = [
    _buy_and_give,
    _boxes,
    _change,
    _reading,
    _share,
]


def _draw(rng: random.Random) -> dict[str, Any]:
    template = rng.choice(TEMPLATES)
    question, steps, answer = template(rng, rng.choice(NAMES), rng.choice(ITEMS))
    return {
        "question": question,
        "solution": " ".join(steps) + f" The answer is {answer}.",
        "answer": str(answer),
    }


def word_problems(
    n: int = 30, seed: int = 1234, fewshot_seed: int = 4321, eval_seed: int = 1234, **_: Any
) -> datasets.DatasetDict:
    """``n`` word problems with ``question``, ``solution`` (worked, ending "The answer is N.") and ``answer``."""
    return disjoint_splits(
        _draw,
        lambda d: d["question"],
        "word-cot",
        SplitSettings(n=n, seed=seed, eval_seed=eval_seed, fewshot_seed=fewshot_seed),
    )
