"""Scorers of the paper's generative suite that lm-eval 0.4.13 has no task for.

* :func:`math_verify` scores GSM8K as the paper does, with math-verify (lm-eval offers
  math-verify only for MATH: ``minerva_math*``'s ``math_verify`` metric). The gold answer is the
  number after GSM8K's ``####``; the response is parsed whole (a ``\\boxed{}`` answer first, else
  the last expression), so the model needs no particular answer format.
* :func:`rouge_l` scores XSum summaries: ROUGE-L F1 of ``rouge_score`` (a dependency of lm-eval)
  with the settings of Hugging Face ``evaluate``'s ``rouge`` metric (no stemming, its default
  tokenizer: lower-cased alphanumeric runs). The task aggregates with ``mean``; ``evaluate``'s
  default aggregation reports a bootstrap estimate of that mean instead.

Both are lm-eval metric functions (``references``, ``predictions``) for a task YAML's
``metric_list``; see ``tasks/layerprune_paper/``. math-verify is the ``paper`` extra
(``pip install "lmeval-layerprune[paper]"``, which is ``lm-eval[math]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any


def gsm8k_final_answer(reference: str) -> str:
    """The final answer of a GSM8K solution: the text after its last ``####`` (the whole
    reference when it has none).

    >>> gsm8k_final_answer("She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\\n#### 18")
    '18'
    """
    return reference.rsplit("####", 1)[-1].strip()


@lru_cache(maxsize=1)
def _math_verify_module() -> Any:
    try:
        import math_verify as mv
    except ImportError as e:
        raise ImportError(
            'math-verify is needed for the paper\'s GSM8K scoring: pip install "lmeval-layerprune[paper]" '
            '(or "lm-eval[math]")'
        ) from e
    return mv


def math_verify(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: 1.0 when math-verify finds the response's answer equal to the reference's
    final answer (GSM8K's ``#### N``), else 0.0. Named like ``minerva_math``'s metric, so both
    tasks report ``math_verify``.

    >>> math_verify(["... #### 1,000"], ["So the total is \\\\boxed{1000} dollars."])
    1.0
    """
    mv = _math_verify_module()
    gold = mv.parse(gsm8k_final_answer(references[0]))
    answer = mv.parse(predictions[0])
    return 1.0 if gold and answer and mv.verify(gold, answer) else 0.0


@lru_cache(maxsize=1)
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(references: Sequence[str], predictions: Sequence[str]) -> float:
    """lm-eval metric: ROUGE-L F1 of the response against the reference summary, 0..1.

    >>> round(rouge_l(["the cat sat on the mat"], ["The cat lay on a mat."]), 4)
    0.6667
    """
    return float(_rouge_l_scorer().score(references[0], predictions[0])["rougeL"].fmeasure)


__all__ = ["gsm8k_final_answer", "math_verify", "rouge_l"]
