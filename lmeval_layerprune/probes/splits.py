"""Seeded, disjoint test / few-shot splits for generated tasks.

A task's generator draws documents from a seeded random stream and keeps the first ``n``
distinct ones. The task metadata holds ``seed`` (which items), ``eval_seed`` (the seed of
the published evaluation split) and ``fewshot_seed``. Any ``seed`` other than
``eval_seed`` yields items disjoint from the evaluation split (``lmeval-prune select``
scores candidates on such a *selection* split), and the few-shot examples are disjoint
from both.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import datasets

from lmeval_layerprune.errors import SplitTooLarge

Draw = Callable[[random.Random], dict[str, Any]]
Key = Callable[[dict[str, Any]], Hashable]


def draw_distinct(
    draw: Draw,
    key: Key,
    n: int,
    stream: str,
    *,
    avoid: set[Hashable] | None = None,
    capacity: int | None = None,
    max_tries: int = 10_000_000,
) -> list[dict[str, Any]]:
    """The first ``n`` documents of the random stream ``stream`` whose ``key`` is new (and not in ``avoid``).

    ``capacity`` (the number of distinct keys that exist), when known, turns an impossible
    request into an immediate error instead of a long search.
    """
    seen: set[Hashable] = set(avoid or ())
    if capacity is not None and n > capacity - len(seen):
        raise SplitTooLarge(
            f"{stream}: only {capacity - len(seen)} distinct items are left (of {capacity}); asked for {n}"
        )
    rng = random.Random(stream)
    out: list[dict[str, Any]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            raise SplitTooLarge(
                f"{stream}: found only {len(out)} distinct items after {max_tries} draws; asked for {n}"
            )
        doc = draw(rng)
        k = key(doc)
        if k in seen:
            continue
        seen.add(k)
        out.append(doc)
    return out


@dataclass(frozen=True)
class SplitSettings:
    """Which items a generated task draws, from its metadata: ``n`` test items from the stream of
    ``seed``, ``n_fewshot`` few-shot items from ``fewshot_seed``; ``eval_seed`` names the published
    evaluation split (any other ``seed`` avoids its items)."""

    n: int
    seed: int
    eval_seed: int
    fewshot_seed: int
    n_fewshot: int = 10


def disjoint_splits(
    draw: Draw,
    key: Key,
    tag: str,
    settings: SplitSettings,
    *,
    capacity: int | None = None,
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> datasets.DatasetDict:
    """A ``DatasetDict`` with ``test`` (``settings.n`` items from ``settings.seed``) and ``fewshot``
    (``settings.n_fewshot`` items from ``settings.fewshot_seed``).

    The stream of a split is named ``f"{tag}-{seed}"``; when ``seed != eval_seed`` the evaluation
    items (``n`` from ``eval_seed``) are excluded first, and the few-shot items avoid both.
    ``capacity`` (how many distinct keys exist) turns an impossible request into an immediate
    error; ``extra(doc)`` adds derived fields (e.g. multiple-choice options) to every document.
    """
    n, seed, eval_seed = settings.n, settings.seed, settings.eval_seed
    for name, value in (("n", n), ("n_fewshot", settings.n_fewshot)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{tag}: metadata {name} must be a positive integer, got {value!r}")
    taken: set[Hashable] = set()
    if seed != eval_seed:
        taken = {key(d) for d in draw_distinct(draw, key, n, f"{tag}-{eval_seed}", capacity=capacity)}
    test = draw_distinct(draw, key, n, f"{tag}-{seed}", avoid=taken, capacity=capacity)
    fewshot = draw_distinct(
        draw,
        key,
        settings.n_fewshot,
        f"{tag}-{settings.fewshot_seed}",
        avoid=taken | {key(d) for d in test},
        capacity=capacity,
    )
    if extra is not None:
        test = [{**d, **extra(d)} for d in test]
        fewshot = [{**d, **extra(d)} for d in fewshot]
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(test), "fewshot": datasets.Dataset.from_list(fewshot)}
    )
