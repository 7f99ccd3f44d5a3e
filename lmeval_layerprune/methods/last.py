"""``last``: the last layers, the reverse-order baseline."""

from __future__ import annotations

from collections.abc import Sequence

from lmeval_layerprune.methods.registry import LayerMethod, register_method


@register_method
class Last(LayerMethod):
    name = "last"
    kind = "position"
    description = "the last layers (the reverse-order baseline)"
    definition = "the final K decoder layers, whatever the model computes"

    def choose(self, num_layers: int, count: int, scores: Sequence[float] | None) -> tuple[int, ...]:
        return tuple(range(max(num_layers - count, 0), num_layers))
