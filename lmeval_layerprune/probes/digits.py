"""Next-token digit probe: the model's distribution over the ten digits right after a prompt.

lm-eval has no request type for "the next-token distribution", but a ``multiple_choice``
task whose choices are ``"0"`` ... ``"9"`` asks for exactly the ten log-likelihoods
``log p(" " + d | prompt)``. With the digits split into single tokens (Llama 2/3, SmolLM2,
Qwen, Mistral: ``" 7"`` is the token ``" "`` then ``"7"``; GPT-2-style vocabularies have one
token ``" 7"``), every choice shares the same prefix tokens, so their log-likelihoods differ
only by ``log p(d | prompt, " ")``. Hence

* the argmax over the ten choices is the argmax of the next token restricted to digit tokens;
* a log-softmax over the ten log-likelihoods is the log-probability of each digit under the
  next-token distribution restricted to (renormalised over) the digit tokens, whatever the
  probability of the shared prefix.

:func:`digit_process_results` reports both as ``acc`` and ``logprob_digit``.

A vocabulary that merges the space with *some* digits but not others (GPT-2-style BPE
trained without digit splitting, like the tiny test tokenizer) breaks the shared prefix:
the scores are then the likelihoods of the ten digit strings, close to but not exactly the
restricted next-token distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DIGITS = tuple(str(d) for d in range(10))


def restricted_logprobs(lls: Sequence[float]) -> list[float]:
    """Log-softmax of per-choice log-likelihoods: log-probabilities renormalised over the choices."""
    top = max(lls)
    log_z = top + math.log(sum(math.exp(x - top) for x in lls))
    return [x - log_z for x in lls]


def digit_process_results(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, float]:
    """lm-eval ``process_results`` for a multiple-choice task over the ten digits.

    ``doc["label"]`` is the index of the right digit (0-9). Returns ``acc`` (the argmax over
    digits is right) and ``logprob_digit`` (log-probability of the right digit under the
    next-token distribution restricted to digits; 0 is certain, ``log(1/10)`` is uniform).
    """
    lls = [float(ll) for ll, _ in results]
    if len(lls) != len(DIGITS):
        raise ValueError(f"expected log-likelihoods for the 10 digits, got {len(lls)}")
    gold = int(doc["label"])
    logp = restricted_logprobs(lls)
    return {"acc": float(max(range(10), key=lambda i: lls[i]) == gold), "logprob_digit": logp[gold]}
