"""``bi``: block influence (ShortGPT, Men et al. 2024)."""

from __future__ import annotations

from collections.abc import Sequence

from lmeval_layerprune.methods.registry import BoundaryStates, LayerMethod, register_method
from lmeval_layerprune.methods.similarity import cosine_per_token


def block_influence(states: Sequence[BoundaryStates]) -> list[float]:
    """ShortGPT's block influence per layer: ``1 - cos(input, output)``, averaged over every token."""
    n = len(states[0]) - 1
    return [1.0 - float(cosine_per_token(states, i, i + 1).mean()) for i in range(n)]


@register_method
class BlockInfluence(LayerMethod):
    name = "bi"
    kind = "per-layer"
    description = "lowest block influence, 1 - cos(input, output), on calibration text"
    citation = "ShortGPT, Men et al. 2024"
    url = "https://arxiv.org/abs/2403.03853"
    definition = "BI_i = 1 - mean over all tokens of cos(x_i, x_{i+1}); the K layers with the lowest BI are removed"

    def scores(self, states: Sequence[BoundaryStates], count: int) -> list[float]:
        return block_influence(states)
