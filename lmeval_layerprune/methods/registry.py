"""The registry of ways to choose layers: one class per method, one decorator to register it.

A method is a :class:`LayerMethod` subclass decorated with :func:`register_method` (the pattern of
mergekit's merge-method registry). Its class attributes say what it is: ``name`` (the word in
``drop=NAME:K``, ``select --method``, ``sweep --methods``), ``kind``, a one-line ``description``,
the ``citation`` and ``url`` of the paper that defines it, and its ``definition`` in words. The
drop grammar, ``select``, ``sweep``, ``demo``, the model card and the report derive their lists
and descriptions from here.

Kinds:

* ``position``: the layers follow from the depth alone (``last``); :meth:`LayerMethod.choose`
  gets no scores.
* ``per-layer``: :meth:`LayerMethod.scores` gives one score per layer; the ``count`` lowest go
  (ties: the higher index first).
* ``block``: :meth:`LayerMethod.scores` gives one score per start of a contiguous block of ``count``
  layers; the block with the lowest score goes (ties: the deeper block).
* ``greedy``: a search that removes one layer per round (``iterative``, ``ppl``); it runs through
  ``lmeval-prune select`` (whose plan ``drop=plan:PATH`` then names) and is not a one-pass spec.

One-pass scores read :class:`~lmeval_layerprune.methods.capture.BoundaryStates`: for each
calibration text, the hidden state entering every layer and the one leaving the last.

Third-party packages register methods in their own module, or through the entry-point group
``lmeval_layerprune.methods`` (``name = "package.module"``), which is imported on the first lookup
so that every process (the stock ``lm_eval`` CLI included) sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, ClassVar, Literal

from lmeval_layerprune.errors import DropSpecError

if TYPE_CHECKING:  # only for annotations: no runtime import
    from torch import Tensor

logger = logging.getLogger(__name__)

Kind = Literal["position", "per-layer", "block", "greedy"]
KINDS: tuple[str, ...] = ("position", "per-layer", "block", "greedy")
TRANSFORMS: tuple[str, ...] = ("drop", "merge")
ENTRY_POINT_GROUP = "lmeval_layerprune.methods"
#: one text's states: ``states[i]`` enters layer ``i``; ``states[-1]`` leaves the last layer ``[tokens, hidden]``
BoundaryStates = Sequence[Sequence["Tensor"]]


class LayerMethod:
    """A way to choose which layers to remove. Subclass, set the class attributes, register.

    Override :meth:`scores` for ``per-layer`` and ``block`` methods; override :meth:`choose` for
    ``position`` methods (and for any method whose choice is not "lowest scores first").
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    #: one line, shown in ``--help``, ``lmeval-prune methods``, the model card and the report
    description: ClassVar[str]
    citation: ClassVar[str] = ""
    url: ClassVar[str] = ""
    #: the score's definition in words (what is averaged over what); the card and docs show it
    definition: ClassVar[str] = ""
    #: ``greedy`` methods: the objective the search optimises (``tasks`` or ``perplexity``)
    objective: ClassVar[str | None] = None
    #: what the chosen layers undergo: removed (``drop``) or merged into the kept layer before them
    #: (``merge``: layer collapse, :mod:`lmeval_layerprune.core.collapse`); the plan records it
    transform: ClassVar[str] = "drop"
    #: also accepts the layers themselves (``NAME:20-25``), not only a count
    takes_layers: ClassVar[bool] = False

    @property
    def needs_states(self) -> bool:
        """True when choosing needs hidden states computed on the model (calibration text)."""
        return self.kind in ("per-layer", "block")

    @property
    def needs_weights(self) -> bool:
        """True when the result needs the removed layers' weights (a merge), not only the kept ones."""
        return self.transform != "drop"

    def scores(self, states: Sequence[BoundaryStates], count: int) -> list[float]:
        """``per-layer``: one score per layer; ``block``: one per block start (``num_layers - count + 1``).
        Lower means "remove first". ``states`` holds one :data:`BoundaryStates` per calibration text."""
        raise NotImplementedError(f"method {self.name!r} ({self.kind}) does not compute scores")

    def choose(self, num_layers: int, count: int, scores: Sequence[float] | None) -> tuple[int, ...]:
        """The sorted layer indices to remove (``count`` of ``num_layers``)."""
        if self.kind == "per-layer":
            if scores is None or len(scores) != num_layers:
                raise ValueError(f"{self.name}: expected {num_layers} scores, got {_size(scores)}")
            order = sorted(range(num_layers), key=lambda i: (scores[i], -i))
            return tuple(sorted(order[:count]))
        if self.kind == "block":
            starts = num_layers - count + 1
            if scores is None or len(scores) != starts:
                raise ValueError(f"{self.name}: expected {starts} block scores, got {_size(scores)}")
            start = min(range(starts), key=lambda s: (scores[s], -s))
            return tuple(range(start, start + count))
        if self.kind == "greedy":
            raise not_one_pass(self, count)
        raise NotImplementedError(f"method {self.name!r} ({self.kind}) must define choose()")

    def describe(self) -> str:
        """``description`` with the citation, for tables and cards."""
        return f"{self.description} ({self.citation})" if self.citation else self.description


def not_one_pass(method: LayerMethod, count: int | str = "K") -> DropSpecError:
    """The error for a greedy method used as a one-pass spec (``drop=iterative:8``): what to run instead."""
    return DropSpecError(
        f"{method.name} is a greedy search, not a one-pass spec: run `lmeval-prune select MODEL --method "
        f"{method.name} --n {count} --out plan.json`, then use drop=plan:plan.json"
    )


def _size(scores: Sequence[float] | None) -> str:
    return "none" if scores is None else str(len(scores))


_METHODS: dict[str, LayerMethod] = {}
_ENTRY_POINTS_LOADED = False


def register_method(cls: type[LayerMethod]) -> type[LayerMethod]:
    """Class decorator: register ``cls`` under ``cls.name`` (a new name; ``plan`` and ``none`` are the grammar's)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"{cls.__name__}.name must be a lowercase identifier, got {name!r}")
    if name in ("plan", "none"):
        raise ValueError(f"{name!r} is part of the drop grammar and cannot name a method")
    if getattr(cls, "kind", None) not in KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {', '.join(KINDS)}, got {getattr(cls, 'kind', None)!r}")
    if not getattr(cls, "description", ""):
        raise ValueError(f"{cls.__name__} needs a one-line description")
    if getattr(cls, "transform", "drop") not in TRANSFORMS:
        raise ValueError(f"{cls.__name__}.transform must be one of {', '.join(TRANSFORMS)}")
    if cls.kind == "greedy" and not cls.objective:
        raise ValueError(f"{cls.__name__} is greedy and needs an objective ('tasks' or 'perplexity')")
    old = _METHODS.get(name)
    if old is not None and type(old) is not cls:
        raise ValueError(f"a layer method named {name!r} is already registered ({type(old).__qualname__})")
    _METHODS[name] = cls()
    return cls


def unregister_method(name: str) -> None:
    """Remove a method (tests, notebooks); unknown names are ignored."""
    _METHODS.pop(name, None)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the built-in methods
            logger.warning("layer method plugin %r could not be loaded: %s", ep.value, e)


def method_names(*kinds: str) -> tuple[str, ...]:
    """Registered method names (of the given kinds), in registration order."""
    _load_entry_points()
    # by kind; within a kind, in registration order (sorted is stable)
    ordered = sorted(_METHODS.items(), key=lambda nm: KINDS.index(nm[1].kind))
    return tuple(n for n, m in ordered if not kinds or m.kind in kinds)


def get_method(name: str) -> LayerMethod:
    """The method registered as ``name`` (any case).

    Raises:
        DropSpecError: an unknown name, with the known ones.
    """
    _load_entry_points()
    method = _METHODS.get(str(name).lower())
    if method is None:
        raise DropSpecError(f"unknown layer method {name!r}; known: {', '.join(method_names())}")
    return method


def registered_methods() -> dict[str, LayerMethod]:
    """name -> method, in registration order."""
    return {name: _METHODS[name] for name in method_names()}
