"""``evaluate`` module ``first_digit`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("first_digit"))``; the
computation is :func:`lmeval_layerprune.metrics.compute.first_digit` (shared with the lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import first_digit

_DESCRIPTION = """
Next-token digit probe (arith_first_digit): from the log-likelihoods of the ten digits after
a prompt, acc is 1 when the argmax is the right first digit, and logprob_digit is the
log-probability of the right digit under the distribution renormalised over the digits
(0 is certain, log(0.1) uniform).
"""

_KWARGS_DESCRIPTION = """
predictions: per item, the ten log-likelihoods of "0".."9".
references: the right first digit (0-9).
Returns acc and logprob_digit (means).
"""

_CITATION = """"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FirstDigit(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="float64[]", references="int64")

    def _compute(self, predictions, references):
        return first_digit(predictions, references)
