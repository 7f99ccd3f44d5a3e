"""Plausible wrong answers for integer arithmetic, for multiple-choice twins of generative tasks.

Every distractor is a mistake a person (or a pruned model) plausibly makes:

* ``carry``: the column-wise result with carries (or borrows) dropped, e.g. 47 + 38 -> 75;
  for multiplication the partial products without their carries, or a neighbour in the times
  table for one-digit factors (7 * 8 -> 49 or 64);
* ``swap``: two adjacent digits of the answer exchanged (85 -> 58);
* ``off-by-one``: the answer plus or minus one; ``off-by-ten``: plus or minus ten;
* ``sign``: the negated answer (subtraction only).

:func:`arith_distractors` is deterministic for a problem (it seeds itself from the
operands), so every task that shows the same problem shows the same choices.
"""

from __future__ import annotations

import random
from collections.abc import Callable

OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
}


def _digits(n: int) -> list[int]:
    """Least significant digit first."""
    return [int(c) for c in reversed(str(abs(n)))]


def _from_digits(ds: list[int]) -> int:
    return int("".join(str(d) for d in reversed(ds)) or "0")


def no_carry_add(a: int, b: int) -> int:
    """Column-wise sum of two non-negative integers, every carry dropped (47 + 38 -> 75)."""
    da, db = _digits(a), _digits(b)
    width = max(len(da), len(db))
    da, db = da + [0] * (width - len(da)), db + [0] * (width - len(db))
    return _from_digits([(x + y) % 10 for x, y in zip(da, db, strict=True)])


def no_borrow_sub(a: int, b: int) -> int:
    """Column-wise "smaller from larger" subtraction, the classic borrow error (52 - 38 -> 26).

    Applied to the magnitudes, with the answer's sign kept (so 38 - 52 -> -26).
    """
    hi, lo = max(a, b), min(a, b)
    dh, dl = _digits(hi), _digits(lo)
    dl = dl + [0] * (len(dh) - len(dl))
    value = _from_digits([abs(x - y) for x, y in zip(dh, dl, strict=True)])
    return -value if a < b else value


def no_carry_mul(a: int, b: int) -> int:
    """Long multiplication with every carry dropped: only the last digit of each digit product
    is kept, ``sum((x * y) % 10 * 10 ** (i + j))`` (47 * 3 -> 21 instead of 141)."""
    return sum(((x * y) % 10) * 10 ** (i + j) for i, x in enumerate(_digits(a)) for j, y in enumerate(_digits(b)))


def _swaps(n: int) -> list[int]:
    s = str(abs(n))
    out = []
    for i in range(len(s) - 1):
        if s[i] != s[i + 1] and not (i == 0 and s[i + 1] == "0"):
            t = s[:i] + s[i + 1] + s[i] + s[i + 2 :]
            out.append(int(t) * (-1 if n < 0 else 1))
    return out


def candidate_errors(a: int, b: int, op: str) -> dict[str, list[int]]:
    """Wrong answers to ``a op b`` by kind of mistake (may contain the right answer or repeats)."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}; expected one of {sorted(OPERATIONS)}")
    ans = OPERATIONS[op](a, b)
    kinds: dict[str, list[int]] = {}
    if op == "add":
        kinds["carry"] = [no_carry_add(a, b)]
    elif op == "sub":
        kinds["carry"] = [no_borrow_sub(a, b)]
        kinds["sign"] = [-ans]
    else:
        kinds["carry"] = [no_carry_mul(a, b)] if max(a, b) >= 10 else []
        kinds["carry"] += [a * (b + 1), a * (b - 1), (a + 1) * b, (a - 1) * b]
    kinds["swap"] = _swaps(ans)
    kinds["off-by-one"] = [ans + 1, ans - 1]
    kinds["off-by-ten"] = [ans + 10, ans - 10]
    kinds["fallback"] = [ans + d for d in (2, -2, 3, -3, 100, -100, 20, -20, 5, -5)]
    return kinds


def arith_distractors(a: int, b: int, op: str, k: int = 3) -> list[int]:
    """``k`` distinct wrong answers to ``a op b``, at most one per kind of mistake while kinds last.

    Kinds are visited in a random order seeded by the problem (so the right answer is not the
    one in the middle of a predictable pattern), and ``+1`` and ``-1`` never appear together
    unless nothing else is left. Answers that can only be non-negative (sums and products of
    non-negative numbers) get non-negative distractors.
    """
    ans = OPERATIONS[op](a, b) if op in OPERATIONS else None
    kinds = candidate_errors(a, b, op)
    rng = random.Random(f"distractors-{op}-{a}-{b}")
    nonneg = op != "sub" and a >= 0 and b >= 0

    def ok(x: int, chosen: list[int]) -> bool:
        return x != ans and x not in chosen and (x >= 0 or not nonneg)

    chosen: list[int] = []
    order = [kind for kind in kinds if kind != "fallback"]
    rng.shuffle(order)
    for kind in order:  # one of each kind first
        options = [x for x in kinds[kind] if ok(x, chosen)]
        if options and len(chosen) < k:
            chosen.append(rng.choice(options))
    # then fill up; the symmetric kinds last, so "ans + 1" and "ans - 1" rarely flank the answer
    symmetric = ("off-by-one", "off-by-ten")
    for kind in [*(k_ for k_ in order if k_ not in symmetric), "fallback", *symmetric]:
        for x in kinds[kind]:
            if len(chosen) < k and ok(x, chosen):
                chosen.append(x)
    if len(chosen) < k:
        raise ValueError(f"could not find {k} distractors for {a} {op} {b}")
    return chosen


def multiple_choice(a: int, b: int, op: str, k: int = 3) -> tuple[list[str], int]:
    """The right answer among ``k`` distractors, shuffled deterministically: (choices, label)."""
    ans = OPERATIONS[op](a, b)
    choices = [ans, *arith_distractors(a, b, op, k)]
    random.Random(f"order-{op}-{a}-{b}").shuffle(choices)
    return [str(c) for c in choices], choices.index(ans)
