"""Reuse, within one greedy round, the hidden states entering the round model's layers.

A candidate of a round removes one more layer than the round's model; everything before that
layer is computed exactly as by the round's model, so :class:`HiddenStateReuse` keeps those
states (captured from the candidates' own runs, no extra pass) and starts later candidates
from them. Used by the perplexity objective (one key per calibration text) and by the task
objective for every loglikelihood forward pass lm-eval makes (:mod:`.objectives`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.slicing import _get_layers, keep_from_drop, layer_subset

#: memory for the hidden states kept within a round (beyond it, forwards simply recompute)
DEFAULT_REUSE_BYTES = 4 << 30
_T = TypeVar("_T")


class _Skip(torch.nn.Module):
    """Stands in for a decoder layer whose output is already known: returns its input.

    Attribute reads (e.g. ``attention_type``, which some models read off each layer) go
    to the layer it replaces.
    """

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_wrapped", layer)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_wrapped"), name)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class HiddenStateReuse:
    """Reuse, within one greedy round, the hidden states entering the round model's layers.

    In a round with layers ``D`` already removed, candidate ``c`` removes one more layer, at
    slot ``q`` of the round's model. Everything before slot ``q`` is the same for the round's
    model and for the candidate, so the state entering slot ``q`` (per input) can be taken from
    an earlier run instead of recomputing layers ``0..q-1``. States are captured from the
    candidates' own runs (no extra pass): a full run of the candidate at slot ``q`` yields the
    round's states for slots ``0..q``. A candidate deeper than what is known starts from the
    deepest known state and extends the capture, so any visiting order reuses what it can
    (the search visits strong candidates first, not always the deepest); states are kept up
    to ``max_bytes`` per round.

    Used by :class:`PerplexityObjective` (one key per calibration text) and by
    :class:`TaskObjective` for every loglikelihood forward pass lm-eval makes (keyed by the
    exact token batch); generation is never reused.
    """

    def __init__(self, model: torch.nn.Module, max_bytes: int = DEFAULT_REUSE_BYTES) -> None:
        self.model = model
        self.num_layers = arch_num_layers(model.config)
        self.max_bytes = max_bytes
        self.enabled = True
        self.hits = 0  # forward passes that skipped layers
        self._round: tuple[int, ...] | None = None
        self._slot: int | None = None
        self._states: dict[Any, list[torch.Tensor]] = {}
        self._bytes = 0

    def start_round(self, dropped: Sequence[int]) -> None:
        self._round, self._slot = tuple(sorted(dropped)), None
        self._states.clear()
        self._bytes = 0

    @contextmanager
    def candidate(self, drop: Sequence[int]) -> Iterator[None]:
        """Run ``drop``'s model inside: the model's layers are swapped, forwards may reuse."""
        self._slot = self._slot_of(drop)
        try:
            with layer_subset(self.model, drop):
                yield
        finally:
            self._slot = None

    def _slot_of(self, drop: Sequence[int]) -> int | None:
        if not self.enabled or self._round is None:
            return None
        extra = set(drop) - set(self._round)
        if len(extra) != 1 or not set(self._round) <= set(drop):
            return None
        slot = keep_from_drop(self.num_layers, self._round).index(extra.pop())
        return slot if slot > 0 else None  # slot 0: nothing before it to reuse

    def forward(self, key: Any, run: Callable[[], _T]) -> _T:
        """``run()`` (a forward pass of the current candidate on the input ``key`` names),
        skipping the layers whose output is already known."""
        q = self._slot
        if q is None:
            return run()
        states = self._states.get(key)
        if states is not None and len(states) > q:
            self.hits += 1
            return self._run_from(q, states[q], run)
        if states is not None and len(states) > 1:
            # known up to a shallower slot: start there, capture the states up to slot q
            self.hits += 1
            return self._run_from(len(states) - 1, states[-1], run, extend=(key, q))
        return self._run_capturing(key, q, run)

    def _layers(self) -> tuple[torch.nn.Module, str, torch.nn.ModuleList]:
        return _get_layers(self.model, arch_for(self.model.config))

    def _run_capturing(self, key: Any, q: int, run: Callable[[], _T]) -> _T:
        _, _, layers = self._layers()
        seen: list[torch.Tensor] = []

        def grab(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append(kwargs.get("hidden_states", args[0] if args else None))

        # the candidate's layers 0..q see exactly the round model's inputs of slots 0..q
        handles = [layer.register_forward_pre_hook(grab, with_kwargs=True) for layer in layers[: q + 1]]
        try:
            out = run()
        finally:
            for h in handles:
                h.remove()
        if len(seen) == q + 1 and all(isinstance(s, torch.Tensor) for s in seen):
            size = sum(_nbytes(s) for s in seen)
            old = self._states.get(key)
            if old is not None:
                self._bytes -= sum(_nbytes(s) for s in old)
            if self._bytes + size <= self.max_bytes:
                self._states[key] = [s.detach() for s in seen]
                self._bytes += size
            else:
                self._states.pop(key, None)
        return out

    def _run_from(
        self, q: int, state: torch.Tensor, run: Callable[[], _T], extend: tuple[Any, int] | None = None
    ) -> _T:
        parent, attr, layers = self._layers()
        setattr(parent, attr, torch.nn.ModuleList([*map(_Skip, layers[:q]), *layers[q:]]))

        def inject(_m: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                return (state, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": state}

        seen: list[torch.Tensor] = []

        def grab(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append(kwargs.get("hidden_states", args[0] if args else None))

        handles = [layers[q].register_forward_pre_hook(inject, with_kwargs=True)]
        if extend is not None:
            handles += [
                layer.register_forward_pre_hook(grab, with_kwargs=True) for layer in layers[q + 1 : extend[1] + 1]
            ]
        try:
            out = run()
        finally:
            for h in handles:
                h.remove()
            setattr(parent, attr, layers)
        if extend is not None and len(seen) == extend[1] - q and all(isinstance(s, torch.Tensor) for s in seen):
            size = sum(_nbytes(s) for s in seen)
            if self._bytes + size <= self.max_bytes:
                self._states[extend[0]].extend(s.detach() for s in seen)
                self._bytes += size
        return out


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
