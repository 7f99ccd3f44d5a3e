"""Token agreement of a sweep cell (``sweep --token-agreement N``): the share of the parent's greedy
tokens on N bundled prompts that the cell's model predicts as its top-1 (teacher-forced).

This module is the sweep's only caller of :mod:`lmeval_layerprune.speed.speculate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmeval_layerprune.core.layout import TOKEN_AGREEMENT_FILE
from lmeval_layerprune.speed.speculate import greedy_generate, source_prompts, token_agreement
from lmeval_layerprune.sweep.store import write_json


class AgreementProbe:
    """The parent's greedy responses on ``n`` bundled prompts, made once per loaded model."""

    def __init__(self, n: int, max_new_tokens: int) -> None:
        self.n = n
        self.max_new_tokens = max_new_tokens
        self._prompts: list[list[int]] | None = None
        self._responses: list[list[int]] | None = None

    def write(self, lm: Any, drop: Sequence[int], folder: Path) -> None:
        """Write ``token_agreement.json`` into ``folder`` for ``lm`` with ``drop`` skipped."""
        if self._prompts is None:  # the parent's greedy responses, once
            self._prompts = source_prompts(lm.tokenizer, "bundled", self.n)
            with torch.no_grad():
                self._responses = [
                    greedy_generate(lm.model, torch.tensor([p]), self.max_new_tokens, lm.tokenizer)[0]
                    for p in self._prompts
                ]
        result = token_agreement(
            lm.model,
            lm.tokenizer,
            self._prompts,
            self._responses,
            drop=list(drop),
            max_new_tokens=self.max_new_tokens,
        )
        write_json(folder / TOKEN_AGREEMENT_FILE, result.to_dict(), what="token agreement")
