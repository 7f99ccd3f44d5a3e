"""Text-degeneration metrics for generations: repetition rate and intra-response Self-BLEU.

* ``rep_n`` (Welleck et al., 2019, "seq-rep-n"): within one response,
  ``1 - unique n-grams / n-grams`` over word tokens; 0 for a response without a repeated
  n-gram, close to 1 for a loop ("the the the ..."). Responses shorter than ``n`` tokens score 0.
* ``self_bleu`` (intra-response Self-BLEU-4): the response is split into sentences, each
  sentence is scored with BLEU-4 (sacrebleu, exponential smoothing) against the other
  sentences of the same response as references, and the scores are averaged; 0..1, high
  when the response keeps saying the same thing. Responses with fewer than two sentences score 0.

Use them in any generative task's ``metric_list`` (they read the raw generation, so keep a
filter pipeline that only does ``take_first``)::

    metric_list:
      - metric: !function lmeval_layerprune.probes.degeneration.rep_2
        aggregation: mean
        higher_is_better: false
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")


def tokens(text: str) -> list[str]:
    """Word and punctuation tokens, lower-cased (``"Hi, you!"`` -> ``["hi", ",", "you", "!"]``)."""
    return _TOKEN_RE.findall(text.lower())


def ngram_repetition(seq: Sequence[Any], n: int) -> float:
    """``1 - |unique n-grams| / |n-grams|`` of any sequence (words, token ids); 0 when shorter than ``n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def rep_n(text: str, n: int) -> float:
    """Rep-n of ``text``'s word and punctuation tokens (:func:`ngram_repetition`)."""
    return ngram_repetition(tokens(text), n)


def sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``, ``!``, ``?`` and at line breaks; empty ones dropped."""
    return [s.strip() for s in _SENTENCE_RE.split(text) if s.strip()]


def self_bleu_text(text: str) -> float:
    """Intra-response Self-BLEU-4 of ``text``, 0..1 (see the module docstring)."""
    from sacrebleu.metrics import BLEU

    sents = sentences(text)
    if len(sents) < 2:
        return 0.0
    bleu = BLEU(effective_order=True)
    scores = [bleu.sentence_score(s, sents[:i] + sents[i + 1 :]).score for i, s in enumerate(sents)]
    return min(1.0, sum(scores) / len(scores) / 100.0)


def rep_2(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: Rep-2 of the response."""
    return rep_n(predictions[0], 2)


def rep_3(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: Rep-3 of the response."""
    return rep_n(predictions[0], 3)


def rep_4(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: Rep-4 of the response."""
    return rep_n(predictions[0], 4)


def self_bleu(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: intra-response Self-BLEU-4 of the response."""
    return self_bleu_text(predictions[0])
