"""Similarities between hidden states at layer boundaries, the arithmetic one-pass methods score with.

Kept import-light (torch is imported when a score is computed): the registry, and every command
that only lists or names methods (``report``, ``card``, ``--help``), reads the method modules
without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only
    from torch import Tensor

States = Sequence[Sequence["Tensor"]]


def cosine_per_token(states: States, a: int, b: int) -> Tensor:
    """Cosine similarity between boundary ``a`` and boundary ``b``, for every token of every text."""
    import torch

    return torch.cat([torch.nn.functional.cosine_similarity(s[a], s[b], dim=-1) for s in states])


def cosine_last_token(states: States, a: int, b: int) -> Tensor:
    """Cosine similarity between boundary ``a`` and boundary ``b`` at each text's last token."""
    import torch

    return torch.stack([torch.nn.functional.cosine_similarity(s[a][-1], s[b][-1], dim=-1) for s in states])


def mean_angle(cos: Any) -> float:
    """Mean of ``arccos(cos) / pi`` (the angular distance, in [0, 1])."""
    import torch

    return float((torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi).mean())
