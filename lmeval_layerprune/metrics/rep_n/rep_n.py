"""``evaluate`` module ``rep_n`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("rep_n"))``; the
computation is :func:`lmeval_layerprune.metrics.compute.rep_n` (shared with the lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import rep_n

_DESCRIPTION = """
Rep-n (seq-rep-n): within each response, 1 - unique n-grams / n-grams over the
lower-cased NLTK word tokens, as the layer-pruning paper's analysis computes it. Responses
with fewer than n tokens are not scorable: they are left out of the mean, and ``rep_<n>_n``
says how many responses were scored (``rep_<n>`` is nan when none was).
"""

_KWARGS_DESCRIPTION = """
predictions: list of generated texts.
n: an integer or a list of them (default 2, 3, 4).
Returns rep_<n> (0..1, higher is more repetitive) and rep_<n>_n for each n.
"""

_CITATION = """Welleck et al. 2019, Neural Text Generation with Unlikelihood Training"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RepN(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string")

    def _compute(self, predictions, n=(2, 3, 4)):
        return rep_n(predictions, n=n)
