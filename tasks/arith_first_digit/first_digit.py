"""Seeded generator for ``arith_first_digit`` (offline, deterministic).

Problems in the style of lm-eval's ``arithmetic_1dc`` (GPT-3's "one-digit composite"):
three one-digit numbers and two of the three operations ``+ - *``, the last two in
parentheses, e.g. ``6 + (4 * 8)``. Only problems with a non-negative result are kept, so
the answer starts with a digit. Metadata: ``n``, ``seed``, ``eval_seed``, ``fewshot_seed``
as for ``arith_probe`` (a seed other than ``eval_seed`` gives a disjoint split).
"""

from __future__ import annotations

import operator
import random
from typing import Any

import datasets

from lmeval_layerprune.probes.splits import SplitSettings, disjoint_splits

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _draw(rng: random.Random) -> dict[str, Any]:
    while True:
        a, b, c = (rng.randint(0, 9) for _ in range(3))
        op1, op2 = rng.choice("+-*"), rng.choice("+-*")
        value = _OPS[op1](a, _OPS[op2](b, c))
        if value >= 0:
            break
    answer = str(value)
    return {"problem": f"{a} {op1} ({b} {op2} {c})", "answer": answer, "label": int(answer[0])}


def first_digit(
    n: int = 100, seed: int = 1234, fewshot_seed: int = 4321, eval_seed: int = 1234, **_: Any
) -> datasets.DatasetDict:
    """``n`` problems with their answer and ``label`` (the answer's first digit)."""
    return disjoint_splits(
        _draw,
        lambda d: d["problem"],
        "first-digit",
        SplitSettings(n=n, seed=seed, eval_seed=eval_seed, fewshot_seed=fewshot_seed),
    )
