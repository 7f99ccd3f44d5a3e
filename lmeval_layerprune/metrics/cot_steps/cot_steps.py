"""``evaluate`` module ``cot_steps`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("cot_steps"))``; the
computation is :func:`lmeval_layerprune.metrics.compute.cot_steps` (shared with the lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import cot_steps

_DESCRIPTION = """
Calculation errors in chains of thought: every written `a op b = c` step is evaluated
exactly and compared with the written result. cot_step_error pools wrong steps over all steps
of all responses (responses without a step are not scorable; cot_step_error_n counts those
with one); cot_steps is the mean number of steps per response.
"""

_KWARGS_DESCRIPTION = """
predictions: list of generated solutions.
Returns cot_step_error (nan when no response writes a step), cot_step_error_n, cot_steps.
"""

_CITATION = """"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CotSteps(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string")

    def _compute(self, predictions):
        return cot_steps(predictions)
