"""Seeded generator for the ``arith_probe`` tasks (offline, deterministic).

lm-eval calls each ``custom_dataset`` function with the task's ``metadata`` as
keyword arguments, so ``--metadata '{"seed": 7, "n": 500}'`` changes the items.
Few-shot examples come from a disjoint seed.
"""

from __future__ import annotations

import random
from typing import Any

import datasets

_OPS = {"add": ("plus", lambda a, b: a + b), "sub": ("minus", lambda a, b: a - b)}


def _problems(op: str, digits: int, n: int, seed: int, avoid: set[tuple[int, int]] | None = None) -> list[dict]:
    rng = random.Random(f"{op}-{digits}-{seed}")
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    word, fn = _OPS[op]
    seen: set[tuple[int, int]] = set(avoid or ())
    capacity = (hi - lo + 1) ** 2 - len(seen)
    if n > capacity:
        raise ValueError(f"{op} with {digits} digit(s) has only {capacity} distinct problems left; asked for {n}")
    out = []
    while len(out) < n:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        out.append({"a": a, "b": b, "op": word, "answer": str(fn(a, b))})
    return out


def make_dataset(
    op: str, digits: int, n: int = 100, seed: int = 1234, fewshot_seed: int = 4321, eval_seed: int = 1234, **_: Any
):
    """``seed`` picks the items; any seed other than ``eval_seed`` (the evaluation split) gives a
    split disjoint from it, e.g. the selection split ``lmeval-prune select`` uses."""
    taken: set[tuple[int, int]] = set()
    if seed != eval_seed:
        taken = {(d["a"], d["b"]) for d in _problems(op, digits, n, eval_seed)}
    test = _problems(op, digits, n, seed, avoid=taken)
    fewshot = _problems(op, digits, 10, fewshot_seed, avoid=taken | {(d["a"], d["b"]) for d in test})
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(test), "fewshot": datasets.Dataset.from_list(fewshot)}
    )


def add_2d(**kwargs: Any):
    return make_dataset("add", 2, **kwargs)


def sub_2d(**kwargs: Any):
    return make_dataset("sub", 2, **kwargs)


def add_1d(**kwargs: Any):
    return make_dataset("add", 1, **kwargs)


def sub_1d(**kwargs: Any):
    return make_dataset("sub", 1, **kwargs)
