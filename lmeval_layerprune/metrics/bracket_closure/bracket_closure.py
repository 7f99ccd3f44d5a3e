"""``evaluate`` module ``bracket_closure`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("bracket_closure"))``; the
computation is :func:`lmeval_layerprune.metrics.compute.bracket_closure` (shared with the lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import bracket_closure

_DESCRIPTION = """
Bracket closing (the paren_probe task): exact_closure is 1 when the brackets of the first line
of the generation (outside strings and comments) are exactly the sequence that closes the
prefix; balanced is 1 when prefix + that line is balanced.
"""

_KWARGS_DESCRIPTION = """
predictions: list of generations.
references: list of prefixes with open brackets.
lang: "dyck", "python" or "js", one for all or a list (default "dyck").
Returns exact_closure and balanced (0..1).
"""

_CITATION = """"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BracketClosure(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string", references="string")

    def _compute(self, predictions, references, lang="dyck"):
        return bracket_closure(predictions, references, lang=lang)
