"""Seeded generator for ``paren_probe`` / ``paren_probe_mc`` (offline, deterministic).

Half the items are Dyck words (``( [ ] { (``), half code-like Python or JavaScript
expressions with open calls, lists and dicts (``total = sum([f(x), {'k': g(1``), some with
brackets inside string literals that must not count. The answer closes every open bracket,
innermost first. lm-eval passes the task ``metadata`` as keyword arguments, so
``--metadata '{"n": 200, "seed": 7}'`` changes the items; few-shot examples come from a
disjoint seed.
"""

from __future__ import annotations

import random
from typing import Any

import datasets

from lmeval_layerprune.probes.brackets import PAIRS, closing_sequence, closure_scores
from lmeval_layerprune.probes.scoring import NOT_SCORABLE

KINDS = tuple(PAIRS)
#: the item styles a per-style metric reports on
STYLES = ("dyck", "code")
_PY_NAMES = ["total", "result", "value", "items", "data", "config", "out"]
_PY_FUNCS = ["sum", "max", "len", "sorted", "compute", "merge", "build", "fetch"]
_JS_FUNCS = ["Math.max", "compute", "merge", "buildList", "fetchData", "Object.keys"]
_KEYS = ["a", "b", "key", "name", "size", "id"]


def _dyck(rng: random.Random, depth: int) -> tuple[str, str]:
    def noise(budget: int) -> list[str]:
        out: list[str] = []
        for _ in range(rng.randint(0, budget)):
            k = rng.choice(KINDS)
            inner = noise(budget - 1) if budget > 1 and rng.random() < 0.4 else []
            out += [k, *inner, PAIRS[k]]
        return out

    tokens: list[str] = []
    for _ in range(depth):
        tokens += noise(2) + [rng.choice(KINDS)]
    tokens += noise(1)
    prefix = " ".join(tokens)
    return prefix, closing_sequence(prefix, "dyck", sep=" ")


def _atom(rng: random.Random, lang: str) -> str:
    q = "'" if lang == "python" else '"'
    return rng.choice(
        [
            str(rng.randint(0, 99)),
            rng.choice(["x", "y", "n", "i"]),
            f"{rng.choice(['f', 'g', 'h'])}({rng.choice(['x', '1', 'y'])})",
            f"xs[{rng.randint(0, 9)}]",
            f"{q}{rng.choice(['(', '[x', '}', 'a{b', 'ok'])}{q}",  # brackets inside a string do not count
        ]
    )


def _code(rng: random.Random, depth: int, lang: str) -> tuple[str, str]:
    py = lang == "python"
    parts = [f"{rng.choice(_PY_NAMES)} = " if py else f"const {rng.choice(_PY_NAMES)} = "]
    for _ in range(depth):
        kind = rng.choice(KINDS)
        before = [_atom(rng, lang) for _ in range(rng.randint(0, 2))]
        if kind == "(":
            parts.append(rng.choice(_PY_FUNCS if py else _JS_FUNCS) + "(" + "".join(a + ", " for a in before))
        elif kind == "[":
            parts.append("[" + "".join(a + ", " for a in before))
        else:
            key = rng.choice(_KEYS)
            done = "".join(
                (f"'{k}': " if py else f"{k}: ") + a + ", " for k, a in zip(_KEYS[::-1], before, strict=False)
            )
            parts.append("{" + done + (f"'{key}': " if py else f"{key}: "))
    parts.append(_atom(rng, lang))
    prefix = "".join(parts)
    return prefix, closing_sequence(prefix, lang)


def _distractors(closing: str, rng: random.Random) -> list[str]:
    """Wrong closings: wrong order, one missing, one of the wrong kind, one extra."""
    sep = " " if " " in closing else ""
    toks = closing.split(" ") if sep else list(closing)
    closers = list(PAIRS.values())
    order: list[list[str]] = []
    if len(toks) > 1:
        i = rng.randrange(len(toks) - 1)
        order = [toks[::-1], toks[:i] + [toks[i + 1], toks[i]] + toks[i + 2 :]]
    missing = [toks[:-1], toks[1:]] if len(toks) > 1 else []
    kind = [toks[:i] + [c] + toks[i + 1 :] for i in range(len(toks)) for c in closers if c != toks[i]]
    extra = [toks + [c] for c in closers]
    for group in (order, missing, kind, extra):
        rng.shuffle(group)
    # one of each kind of mistake first, then whatever is left
    cands = [g[0] for g in (order, missing, kind, extra) if g] + order[1:] + missing[1:] + kind[1:] + extra[1:]
    out: list[str] = []
    for c in cands:
        s = sep.join(c)
        if s and s != closing and s not in out:
            out.append(s)
    return out[:3]


def _items(n: int, seed: int, max_depth: int, avoid: set[str]) -> list[dict]:
    rng = random.Random(f"paren-{seed}")
    out: list[dict] = []
    seen = set(avoid)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise ValueError(f"could not generate {n} distinct bracket items with max_depth={max_depth}")
        depth = rng.randint(1, max_depth)
        style = ("dyck", "python", "js")[len(out) % 4 % 3] if len(out) % 4 != 3 else "dyck"
        prefix, closing = _dyck(rng, depth) if style == "dyck" else _code(rng, depth, style)
        if prefix in seen:
            continue
        seen.add(prefix)
        wrong = _distractors(closing, rng)
        choices = [closing, *wrong]
        rng.shuffle(choices)
        out.append(
            {
                "prefix": prefix,
                "lang": style,
                "closing": closing,
                "depth": depth,
                "choices": choices,
                "label": choices.index(closing),
            }
        )
    return out


def make_dataset(
    n: int = 60, seed: int = 1234, fewshot_seed: int = 4321, eval_seed: int = 1234, max_depth: int = 5, **_: Any
) -> datasets.DatasetDict:
    """``n`` items from ``seed`` (half Dyck words, half code), and 10 few-shot items from
    ``fewshot_seed`` that share no prefix with them. A ``seed`` other than ``eval_seed``
    gives items disjoint from the evaluation split."""
    if n < 1 or max_depth < 1:
        raise ValueError(f"paren_probe needs n >= 1 and max_depth >= 1 (got n={n}, max_depth={max_depth})")
    taken = {d["prefix"] for d in _items(n, eval_seed, max_depth, set())} if seed != eval_seed else set()
    test = _items(n, seed, max_depth, taken)
    fewshot = _items(10, fewshot_seed, max_depth, taken | {d["prefix"] for d in test})
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(test), "fewshot": datasets.Dataset.from_list(fewshot)}
    )


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """``exact_closure`` and ``balanced`` for every item, and ``exact_closure`` per style: an
    item of the other style is not scorable for a style's metric (``nan``; the YAML aggregates
    with ``probes.scoring.mean_scorable``)."""
    scores = closure_scores(doc["prefix"], results[0], doc["lang"])
    group = "dyck" if doc["lang"] == "dyck" else "code"
    per_style = {f"exact_closure_{g}": scores["exact_closure"] if g == group else NOT_SCORABLE for g in STYLES}
    return {**scores, **per_style}
