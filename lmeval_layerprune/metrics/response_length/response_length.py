"""``evaluate`` module ``response_length`` from lmeval-layerprune: the numbers its lm-eval tasks report.

Load it offline with ``evaluate.load(lmeval_layerprune.metrics.metric_path("response_length"))``;
the computation is :func:`lmeval_layerprune.metrics.compute.response_length` (shared with the
lm-eval tasks).
"""

import evaluate

from lmeval_layerprune.metrics import metric_info
from lmeval_layerprune.metrics.compute import response_length

_DESCRIPTION = """
Average response length in NLTK word tokens, as the layer-pruning paper's analysis counts it
("Avg Tokens"): nltk.word_tokenize of each response as written (not lower-cased), with NLTK
3.9.2's tokenizer and English Punkt model shipped in the package (no download). Every response
counts, an empty one as 0.
"""

_KWARGS_DESCRIPTION = """
predictions: list of generated texts.
Returns response_length (mean tokens per response; nan for no responses) and response_length_n.
"""

_CITATION = """Shrestha et al. 2026, On the Limits of Layer Pruning for Generative Reasoning in LLMs"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ResponseLength(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string")

    def _compute(self, predictions):
        return response_length(predictions)
