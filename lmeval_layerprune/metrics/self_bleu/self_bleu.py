"""``evaluate`` module ``self_bleu`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("self_bleu"))``; the
computation is :func:`lmeval_layerprune.metrics.compute.self_bleu` (shared with the lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import self_bleu

_DESCRIPTION = """
Intra-response Self-BLEU: each response is lower-cased and split into sentences (Punkt
with NLTK's English model, shipped in the package; NLTK 3.9.2's algorithm, no download) and
NLTK word tokens; every sentence of at least `order` tokens is scored with BLEU-`order`
(NLTK sentence_bleu, smoothing method1) against the other such sentences, and the scores are
averaged. Responses without two such sentences are not scorable: left out of the mean and
counted by ``self_bleu_n``.
"""

_KWARGS_DESCRIPTION = """
predictions: list of generated texts.
order: BLEU order (default 4).
Returns self_bleu (0..1, higher repeats itself more; nan when no response is scorable) and self_bleu_n.
"""

_CITATION = """Zhu et al. 2018, Texygen"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SelfBleu(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string")

    def _compute(self, predictions, order=4):
        return self_bleu(predictions, order=order)
