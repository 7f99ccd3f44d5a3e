"""The greedy searches: ``iterative`` (the paper's task-driven search) and ``ppl`` (SLEB-style).

They remove one layer per round, keeping the candidate that scores best on their objective; the
search itself is :mod:`lmeval_layerprune.search` (``lmeval-prune select``).
"""

from __future__ import annotations

from lmeval_layerprune.methods.registry import LayerMethod, register_method


@register_method
class Iterative(LayerMethod):
    name = "iterative"
    kind = "greedy"
    objective = "tasks"
    description = (
        "greedy task-driven search: each round removes the layer whose removal keeps the mean normalised "
        "task score highest"
    )
    citation = "Shrestha et al. 2026, On the Limits of Layer Pruning for Generative Reasoning in LLMs"
    url = "https://arxiv.org/abs/2602.01997"
    definition = "round r removes argmax_c mean_t score_t(model without D_r + {c}) / score_t(full model)"


@register_method
class Perplexity(LayerMethod):
    name = "ppl"
    kind = "greedy"
    objective = "perplexity"
    description = "greedy search on calibration perplexity"
    citation = "SLEB, Song et al. 2024"
    url = "https://arxiv.org/abs/2402.09025"
    definition = "round r removes argmin_c perplexity(model without D_r + {c}) on calibration text"
