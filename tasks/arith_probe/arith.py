"""Seeded generator for the ``arith_probe`` and ``arith_probe_mc`` tasks (offline, deterministic).

lm-eval calls each ``custom_dataset`` function with the task's ``metadata`` as keyword
arguments, so ``--metadata '{"seed": 7, "n": 500}'`` changes the items:

* ``n``: number of evaluation items; ``seed``: which items (a seed other than
  ``eval_seed`` gives items disjoint from the evaluation split, which is how
  ``lmeval-prune select`` gets its selection split); ``fewshot_seed``: the few-shot
  examples, disjoint from both.
* ``n_choices`` (multiple-choice twin only): options per item, the right answer among
  ``n_choices - 1`` distractors from :mod:`lmeval_layerprune.probes.distractors`.

Both twins draw the same problems for the same metadata, and every document carries
``choices`` and ``label``, so the generative and the multiple-choice task ask
exactly the same questions.
"""

from __future__ import annotations

import random
from typing import Any

import datasets

from lmeval_layerprune.probes.distractors import OPERATIONS, multiple_choice
from lmeval_layerprune.probes.splits import SplitSettings, disjoint_splits

WORDS = {"add": "plus", "sub": "minus", "mul": "times"}
#: operation -> digit counts that have a task
DIGITS = {"add": (1, 2, 3, 4, 5), "sub": (1, 2, 3, 4, 5), "mul": (1, 2, 3)}


def _operand_range(digits: int) -> tuple[int, int]:
    return (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1


def make_dataset(
    op: str,
    digits: int,
    n: int = 100,
    seed: int = 1234,
    fewshot_seed: int = 4321,
    eval_seed: int = 1234,
    n_choices: int = 4,
    **_: Any,
) -> datasets.DatasetDict:
    """``n`` problems ``a op b`` with ``digits``-digit operands (1-digit operands include 0).

    ``seed`` picks the items; any seed other than ``eval_seed`` (the evaluation split) gives a
    split disjoint from it, e.g. the selection split ``lmeval-prune select`` uses.
    """
    if op not in DIGITS or digits not in DIGITS[op]:
        valid = ", ".join(f"{o}: {list(d)}" for o, d in DIGITS.items())
        raise ValueError(f"no arithmetic task for op={op!r} digits={digits!r}; valid: {valid}")
    if not isinstance(n_choices, int) or n_choices < 2:
        raise ValueError(f"n_choices must be an integer >= 2, got {n_choices!r}")
    lo, hi = _operand_range(digits)
    fn = OPERATIONS[op]

    def draw(rng: random.Random) -> dict[str, Any]:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return {"a": a, "b": b, "op": WORDS[op], "answer": str(fn(a, b))}

    def options(doc: dict[str, Any]) -> dict[str, Any]:
        choices, label = multiple_choice(doc["a"], doc["b"], op, k=n_choices - 1)
        return {"choices": choices, "label": label}

    return disjoint_splits(
        draw,
        lambda d: (d["a"], d["b"]),
        f"{op}-{digits}",
        SplitSettings(n=n, seed=seed, eval_seed=eval_seed, fewshot_seed=fewshot_seed),
        capacity=(hi - lo + 1) ** 2,
        extra=options,
    )


def _task(op: str, digits: int):
    def build(**kwargs: Any) -> datasets.DatasetDict:
        return make_dataset(op, digits, **kwargs)

    build.__name__ = f"{op}_{digits}d"
    build.__doc__ = f"The {op} problems with {digits}-digit operands (metadata as in :func:`make_dataset`)."
    return build


# One function per task, referenced from the YAMLs as ``!function arith.add_1d`` etc.
add_1d = _task("add", 1)
add_2d = _task("add", 2)
add_3d = _task("add", 3)
add_4d = _task("add", 4)
add_5d = _task("add", 5)
sub_1d = _task("sub", 1)
sub_2d = _task("sub", 2)
sub_3d = _task("sub", 3)
sub_4d = _task("sub", 4)
sub_5d = _task("sub", 5)
mul_1d = _task("mul", 1)
mul_2d = _task("mul", 2)
mul_3d = _task("mul", 3)
