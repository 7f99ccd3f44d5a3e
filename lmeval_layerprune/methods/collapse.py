"""``collapse``: layer collapse (LaCo, Yang et al. 2024), the removed layers merged into the layer before them.

``collapse:K`` chooses the block of K layers the way ``angular`` does (the smallest last-token angular
distance between the block's input and output); ``collapse:20-25`` names the layers. Either way the
model has the depth of ``drop=`` of the same layers, and the kept layer before each removed run
takes ``theta_t + sum_k (theta_k - theta_t)`` (:mod:`lmeval_layerprune.core.collapse`).
"""

from __future__ import annotations

from collections.abc import Sequence

from lmeval_layerprune.methods.angular import angular_distances
from lmeval_layerprune.methods.registry import BoundaryStates, LayerMethod, register_method


@register_method
class Collapse(LayerMethod):
    name = "collapse"
    kind = "block"
    transform = "merge"
    takes_layers = True
    description = (
        "layer collapse: the block angular would remove is merged into the kept layer before it instead of dropped"
    )
    citation = "LaCo, Yang et al. 2024"
    url = "https://arxiv.org/abs/2402.11187"
    definition = (
        "the block is chosen as angular chooses it (or given: collapse:20-25); the kept layer t before it becomes "
        "theta_t + sum over the block of (theta_k - theta_t), then the block is removed"
    )

    def scores(self, states: Sequence[BoundaryStates], count: int) -> list[float]:
        return angular_distances(states, count, last_token=True)
