"""Text-degeneration metrics for generations: repetition rate, intra-response Self-BLEU and length.

All three follow the paper's analysis script (``analysis/calc_self_bleu.py`` in
safal312/on-the-limits-of-layer-pruning), including which responses it leaves out; tokens and
sentences are NLTK 3.9.2's with NLTK's English Punkt model, computed without downloads and
independently of the installed NLTK (:mod:`lmeval_layerprune.probes.text`).

* ``rep_n`` (Welleck et al., 2019, "seq-rep-n"): the response is lower-cased and split into
  NLTK word tokens; ``1 - |unique n-grams| / |n-grams|``. 0 for a response without a repeated
  n-gram, close to 1 for a loop. A response with fewer than ``n`` tokens is **not scorable**
  (``nan``). The paper reports it x100 (a percentage); we report the fraction.
* ``self_bleu`` (intra-response Self-BLEU-4): the lower-cased response is split into sentences
  and each sentence into word tokens; every sentence of at least 4 tokens is scored with BLEU-4
  (NLTK's ``sentence_bleu`` definition: uniform weights, clipped counts over several
  references, brevity penalty against the closest reference length, smoothing "method1" with
  epsilon 0.1) against the *other* sentences of at least 4 tokens as references, and the scores
  are averaged; 0..1, high when the response keeps saying the same thing. A response without
  two sentences of at least 4 tokens is **not scorable** (``nan``).
* ``response_length`` (the paper's "Avg Tokens"): the number of NLTK word tokens of the response
  as written (*not* lower-cased, so Punkt's case context decides where a period becomes a token
  of its own); every response counts, an empty one as 0. Aggregate with ``mean``.

Not-scorable responses are missing, not zero: aggregate with
:func:`lmeval_layerprune.probes.scoring.mean_scorable` and report the number of scorable
responses beside each value with the ``*_n`` twins (same per-item value, aggregated with
:func:`~lmeval_layerprune.probes.scoring.count_scorable`)::

    metric_list:
      - metric: !function lmeval_layerprune.probes.degeneration.rep_2
        aggregation: !function lmeval_layerprune.probes.scoring.mean_scorable
        higher_is_better: false
      - metric: !function lmeval_layerprune.probes.degeneration.rep_2_n
        aggregation: !function lmeval_layerprune.probes.scoring.count_scorable
        higher_is_better: true

They read the raw generation, so keep a filter pipeline that only does ``take_first``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from lmeval_layerprune.probes.scoring import NOT_SCORABLE
from lmeval_layerprune.probes.text import split_sentences, word_tokens

#: BLEU order of the Self-BLEU metric, and the smoothing constant of NLTK's method1.
SELF_BLEU_ORDER = 4
SMOOTHING_EPSILON = 0.1


def tokens(text: str) -> list[str]:
    """The paper's tokens: ``nltk.word_tokenize(text.lower())`` (no download).

    >>> tokens("Hi, you! It's 5.")
    ['hi', ',', 'you', '!', 'it', "'s", '5', '.']
    """
    return word_tokens(text.lower())


def response_tokens(text: str) -> int:
    """The paper's response length: ``len(nltk.word_tokenize(text))`` of the text as written.

    >>> response_tokens("He met J. Smith in 1. Then he left.")
    11
    """
    return len(word_tokens(text))


def ngram_repetition(seq: Sequence[Any], n: int) -> float:
    """``1 - |unique n-grams| / |n-grams|`` of any sequence (words, token ids); 0 when shorter than ``n``.

    The plain arithmetic, for callers that filter rather than report (``selfgen``'s repetition
    filter); the reported metric is :func:`rep_n`, which says "not scorable" instead of 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def rep_n(text: str, n: int) -> float:
    """Rep-n of ``text`` (see the module docstring); ``nan`` when it has fewer than ``n`` tokens."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    toks = _tokens_cached(text)
    return ngram_repetition(toks, n) if len(toks) >= n else NOT_SCORABLE


@lru_cache(maxsize=4096)
def _tokens_cached(text: str) -> tuple[str, ...]:
    return tuple(tokens(text))


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` (Punkt with NLTK's English model; see :mod:`.text`). The
    metrics split the *lower-cased* text, as the paper does."""
    return split_sentences(text)


def _ngrams(seq: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


def sentence_bleu(
    references: Sequence[Sequence[str]],
    hypothesis: Sequence[str],
    order: int = SELF_BLEU_ORDER,
    epsilon: float = SMOOTHING_EPSILON,
) -> float:
    """BLEU-``order`` of one tokenized hypothesis against tokenized references, 0..1.

    The definition of ``nltk.translate.bleu_score.sentence_bleu`` with weights ``1/order`` each
    and ``SmoothingFunction(epsilon).method1`` (the paper's setting), written out:
    ``p_k = sum_g min(count_hyp(g), max_ref count_ref(g)) / max(1, #hyp k-grams)``, a zero
    ``p_k`` replaced by ``epsilon / max(1, #hyp k-grams)``; 0 when no unigram matches;
    ``BP = 1`` if the hypothesis is longer than the closest reference length (ties: the
    shorter reference), else ``exp(1 - r / c)`` (0 for an empty hypothesis);
    ``BLEU = BP * exp(sum_k log(p_k) / order)``.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    c = len(hypothesis)
    log_sum = 0.0
    for k in range(1, order + 1):
        hyp = _ngrams(hypothesis, k)
        best: dict[tuple[str, ...], int] = {}
        for ref in references:
            counts = _ngrams(ref, k)
            for g in hyp:
                best[g] = max(best.get(g, 0), counts[g])
        matches = sum(min(cnt, best.get(g, 0)) for g, cnt in hyp.items())
        total = max(1, sum(hyp.values()))
        if k == 1 and matches == 0:
            return 0.0
        log_sum += math.log((matches if matches else epsilon) / total)
    if not references or c == 0:
        return 0.0
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(log_sum / order)


def self_bleu_text(text: str, order: int = SELF_BLEU_ORDER) -> float:
    """Intra-response Self-BLEU-``order`` of ``text``, 0..1; ``nan`` when fewer than two of its
    sentences have at least ``order`` tokens (see the module docstring)."""
    return _self_bleu_cached(text, order)


@lru_cache(maxsize=4096)
def _self_bleu_cached(text: str, order: int) -> float:
    sents = [toks for toks in (word_tokens(s) for s in split_sentences(text.lower())) if len(toks) >= order]
    if len(sents) < 2:
        return NOT_SCORABLE
    scores = [sentence_bleu(sents[:i] + sents[i + 1 :], hyp, order) for i, hyp in enumerate(sents)]
    return math.fsum(scores) / len(scores)


# ---------------------------------------------------------------- lm-eval metric functions
# Each ``<name>_n`` returns the same per-item value as ``<name>``; its aggregation counts the
# scorable items (lm-eval names a metric after its function, hence the twins).


def rep_2(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: Rep-2 of the response (``nan``: fewer than 2 tokens)."""
    return rep_n(predictions[0], 2)


def rep_3(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: Rep-3 of the response (``nan``: fewer than 3 tokens)."""
    return rep_n(predictions[0], 3)


def rep_4(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: Rep-4 of the response (``nan``: fewer than 4 tokens)."""
    return rep_n(predictions[0], 4)


def self_bleu(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: intra-response Self-BLEU-4 (``nan``: fewer than two sentences of 4+ tokens)."""
    return self_bleu_text(predictions[0])


def response_length(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: the response's length in NLTK word tokens (aggregate with ``mean``)."""
    return float(response_tokens(predictions[0]))


def rep_2_n(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: :func:`rep_2`'s value, to count the scorable responses."""
    return rep_2(references, predictions)


def rep_3_n(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: :func:`rep_3`'s value, to count the scorable responses."""
    return rep_3(references, predictions)


def rep_4_n(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: :func:`rep_4`'s value, to count the scorable responses."""
    return rep_4(references, predictions)


def self_bleu_n(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: :func:`self_bleu`'s value, to count the scorable responses."""
    return self_bleu(references, predictions)
