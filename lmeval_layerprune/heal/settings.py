"""The settings of self-generation (``lmeval-prune selfgen`` and heal's own generation step).

:class:`GenerationSettings` (sampling) and :class:`FilterSettings` (which responses are unusable) are
the recipe's ``selfgen:`` section and the ``selfgen`` command's flags, one field per flag;
:class:`SelfgenSettings` adds who answers, where the records go and on which backend, so that
:func:`~lmeval_layerprune.heal.selfgen.generate_responses` takes one settings object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmeval_layerprune.errors import SelfGenError

FILTERS = ("truncated", "empty", "degenerate", "overlength")


@dataclass
class GenerationSettings:
    """Sampling settings (defaults: the paper's, temperature 0.9, top-p 0.95).

    ``temperature`` 0 means greedy decoding. Sampling is seeded per item, from ``seed`` and the
    prompt's id (:func:`~lmeval_layerprune.heal.backends.item_seed`), so a resumed run, or one with
    another ``batch_size``, draws the same responses as an uninterrupted one.
    """

    max_new_tokens: int = 512
    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16
    system: str | None = None


@dataclass
class FilterSettings:
    """Which generated responses are marked unusable for training.

    ``filters`` names the active ones among ``truncated`` (hit ``max_new_tokens``), ``empty``,
    ``degenerate`` (Rep-4 over ``max_repetition``: the share of repeated token 4-grams) and
    ``overlength`` (prompt plus response over ``max_length`` tokens; off when ``max_length`` is None).
    """

    filters: tuple[str, ...] = FILTERS
    max_repetition: float = 0.5
    max_length: int | None = None

    def __post_init__(self) -> None:
        self.filters = tuple(self.filters)
        bad = [f for f in self.filters if f not in FILTERS]
        if bad:
            raise SelfGenError(f"unknown filter(s) {bad}; valid: {', '.join(FILTERS)}")


@dataclass
class SelfgenSettings:
    """One generation run: the teacher, the output file, sampling, filters and the backend.

    ``source`` names the prompt source in the output's ``.meta.json`` (a restart from another source
    is refused); ``backend`` is ``auto`` (vLLM when installed and a GPU is present), ``vllm`` or
    ``transformers``; ``dtype`` / ``device`` default to the checkpoint's dtype and CUDA when available.
    """

    teacher: str
    out: str | Path
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    source: str | None = None
    backend: str = "auto"
    dtype: str | None = None
    device: str | None = None
    progress: bool = True
