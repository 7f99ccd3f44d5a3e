"""The probe metrics over a list of predictions, as the ``evaluate`` modules report them.

Each function runs the *same* per-item function as the lm-eval task (``lmeval_layerprune.probes``)
and the same aggregation as the task's YAML (:mod:`lmeval_layerprune.probes.scoring`), so a TRL
callback, a notebook or another harness gets exactly the numbers lm-eval reports. The ``evaluate``
modules next to this file (``metric_path(name)``) are thin wrappers around these functions; they
are also usable directly, without ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmeval_layerprune.probes import answers, brackets, cot, degeneration, digits
from lmeval_layerprune.probes.scoring import count_scorable, mean_scorable, pooled_ratio

_REP = {2: degeneration.rep_2, 3: degeneration.rep_3, 4: degeneration.rep_4}


def _ns(n: int | Sequence[int]) -> list[int]:
    ns = [n] if isinstance(n, int) else list(n)
    if not ns or any(not isinstance(k, int) or k < 1 for k in ns):
        raise ValueError(f"n must be a positive integer or a list of them, got {n!r}")
    return ns


def rep_n(predictions: Sequence[str], n: int | Sequence[int] = (2, 3, 4)) -> dict[str, float]:
    """``rep_<n>`` (mean over responses of at least n tokens; ``nan`` if none) and ``rep_<n>_n``
    (how many) for each ``n``; ``arith_word_cot``'s ``rep_2/3/4`` for n in (2, 3, 4)."""
    out: dict[str, float] = {}
    for k in _ns(n):
        fn = _REP.get(k)
        items = [fn([""], [p]) if fn else degeneration.rep_n(p, k) for p in predictions]
        out[f"rep_{k}"], out[f"rep_{k}_n"] = mean_scorable(items), count_scorable(items)
    return out


def self_bleu(predictions: Sequence[str], order: int = degeneration.SELF_BLEU_ORDER) -> dict[str, float]:
    """``self_bleu`` (intra-response Self-BLEU-``order``, mean over scorable responses) and
    ``self_bleu_n`` (the number of responses with two sentences of at least ``order`` tokens)."""
    if order == degeneration.SELF_BLEU_ORDER:
        items = [degeneration.self_bleu([""], [p]) for p in predictions]
    else:
        items = [degeneration.self_bleu_text(p, order) for p in predictions]
    return {"self_bleu": mean_scorable(items), "self_bleu_n": count_scorable(items)}


def response_length(predictions: Sequence[str]) -> dict[str, float]:
    """``response_length`` (mean NLTK word tokens per response, the paper's "Avg Tokens"; every
    response counts) and ``response_length_n`` (how many responses)."""
    items = [degeneration.response_length([""], [p]) for p in predictions]
    return {"response_length": mean_scorable(items), "response_length_n": count_scorable(items)}


def cot_steps(predictions: Sequence[str]) -> dict[str, float]:
    """``cot_step_error`` (wrong / written ``a op b = c`` steps, pooled), ``cot_step_error_n``
    (responses with at least one step) and ``cot_steps`` (mean steps per response)."""
    pairs = [cot.cot_step_error([""], [p]) for p in predictions]
    steps = [cot.cot_steps([""], [p]) for p in predictions]
    return {
        "cot_step_error": pooled_ratio(pairs),
        "cot_step_error_n": count_scorable(pairs),
        "cot_steps": mean_scorable(steps),
    }


def final_answer(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``final_answer_match``: the share of predictions whose final answer ("The answer is N",
    else the last number) equals the reference's (a number or a worked solution)."""
    _same_length(predictions, references)
    items = [answers.final_answer_match([r], [p]) for p, r in zip(predictions, references, strict=True)]
    return {"final_answer_match": mean_scorable(items)}


def bracket_closure(
    predictions: Sequence[str], references: Sequence[str], lang: str | Sequence[str] = "dyck"
) -> dict[str, float]:
    """``paren_probe``'s ``exact_closure`` and ``balanced`` for generations (``predictions``)
    that should close the open brackets of ``references`` (the prefixes); ``lang`` is
    ``"dyck"``, ``"python"`` or ``"js"``, one for all or one per item."""
    _same_length(predictions, references)
    langs = [lang] * len(predictions) if isinstance(lang, str) else list(lang)
    _same_length(predictions, langs, "lang")
    scores = [brackets.closure_scores(r, p, g) for p, r, g in zip(predictions, references, langs, strict=True)]
    return {k: mean_scorable([s[k] for s in scores]) for k in ("exact_closure", "balanced")}


def first_digit(predictions: Sequence[Sequence[float]], references: Sequence[int]) -> dict[str, float]:
    """``arith_first_digit``'s ``acc`` and ``logprob_digit`` from the ten log-likelihoods of the
    digits ``0``..``9`` per item (``predictions``) and the right first digit (``references``)."""
    _same_length(predictions, references)
    rows = [
        digits.digit_process_results({"label": int(r)}, [(float(x), False) for x in p])
        for p, r in zip(predictions, references, strict=True)
    ]
    return {k: mean_scorable([row[k] for row in rows]) for k in ("acc", "logprob_digit")}


def python_brackets(predictions: Sequence[str]) -> dict[str, float]:
    """The parse-level buckets of ``humaneval_brackets`` for whole programs, without running
    them: ``bracket_error`` (never closed / unmatched / mismatched) and ``syntax_error`` (any
    other reason the program does not parse), as shares of the programs."""
    be = [brackets.python_bracket_error([None], [p]) for p in predictions]
    se = [brackets.python_syntax_error([None], [p]) for p in predictions]
    return {"bracket_error": mean_scorable(be), "syntax_error": mean_scorable(se)}


def _same_length(a: Sequence[Any], b: Sequence[Any], what: str = "references") -> None:
    if len(a) != len(b):
        raise ValueError(f"got {len(a)} predictions but {len(b)} {what}")


#: name -> function; every name is also an ``evaluate`` module (``metric_path(name)``).
COMPUTE = {
    "rep_n": rep_n,
    "self_bleu": self_bleu,
    "response_length": response_length,
    "cot_steps": cot_steps,
    "final_answer": final_answer,
    "bracket_closure": bracket_closure,
    "first_digit": first_digit,
    "python_brackets": python_brackets,
}
