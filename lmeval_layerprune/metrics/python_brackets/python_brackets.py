"""``evaluate`` module ``python_brackets`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("python_brackets"))``; the
computation is :func:`lmeval_layerprune.metrics.compute.python_brackets` (shared with the lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import python_brackets

_DESCRIPTION = """
Why Python programs do not parse (the parse-level buckets of humaneval_brackets), without
running them: bracket_error (a bracket never closed, unmatched or mismatched, outside strings
and comments) or syntax_error (any other reason).
"""

_KWARGS_DESCRIPTION = """
predictions: list of whole programs.
Returns bracket_error and syntax_error (shares of the programs).
"""

_CITATION = """"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PythonBrackets(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string")

    def _compute(self, predictions):
        return python_brackets(predictions)
