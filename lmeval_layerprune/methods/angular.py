"""``angular``: the block whose input and output are closest in angle (Gromov et al. 2024).

``angular`` is the paper's definition: the angular distance at the **last token** of each text
(the position that predicts the next token), averaged over texts. ``angular_all`` averages over
every token instead, a steadier variant that is not the cited method.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmeval_layerprune.methods.registry import BoundaryStates, LayerMethod, register_method
from lmeval_layerprune.methods.similarity import cosine_last_token, cosine_per_token, mean_angle


def angular_distances(states: Sequence[BoundaryStates], block: int, *, last_token: bool = True) -> list[float]:
    """``arccos(cos(x_l, x_{l+block})) / pi`` for every block start ``l``, at each text's last token
    (Gromov et al.) or averaged over every token (``last_token=False``)."""
    n = len(states[0]) - 1
    cosine = cosine_last_token if last_token else cosine_per_token
    return [mean_angle(cosine(states, start, start + block)) for start in range(n - block + 1)]


@register_method
class Angular(LayerMethod):
    name = "angular"
    kind = "block"
    description = "the contiguous block with the smallest angular distance between its input and output, last token"
    citation = "Gromov et al. 2024, The Unreasonable Ineffectiveness of the Deeper Layers"
    url = "https://arxiv.org/abs/2403.17887"
    definition = (
        "d(l, K) = arccos(cos(x_l, x_{l+K})) / pi at each calibration text's last token, averaged over texts; "
        "the block l..l+K-1 with the smallest d is removed"
    )

    def scores(self, states: Sequence[BoundaryStates], count: int) -> list[float]:
        return angular_distances(states, count, last_token=True)


@register_method
class AngularAllTokens(LayerMethod):
    name = "angular_all"
    kind = "block"
    description = "like angular, with the angular distance averaged over every token (a variant, not the cited method)"
    definition = (
        "d(l, K) = mean over all tokens of arccos(cos(x_l, x_{l+K})) / pi; the block with the smallest d is removed"
    )

    def scores(self, states: Sequence[BoundaryStates], count: int) -> list[float]:
        return angular_distances(states, count, last_token=False)
