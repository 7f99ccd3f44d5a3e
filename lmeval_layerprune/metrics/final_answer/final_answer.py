"""``evaluate`` module ``final_answer`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("final_answer"))``; the
computation is :func:`lmeval_layerprune.metrics.compute.final_answer` (shared with the lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import final_answer

_DESCRIPTION = """
Final-answer exact match for worked solutions: the number after the last "answer is" (else the
last number), canonicalised (thousands separators, signs, trailing zeros), against the
reference's (a number or a worked solution ending in "The answer is N").
"""

_KWARGS_DESCRIPTION = """
predictions: list of generated solutions.
references: list of gold answers or gold solutions.
Returns final_answer_match (0..1).
"""

_CITATION = """"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FinalAnswer(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string", references="string")

    def _compute(self, predictions, references):
        return final_answer(predictions, references)
