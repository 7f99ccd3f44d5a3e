"""The ``drop=`` grammar: spec text -> :class:`DropSpec`. Parsing only: no model, no file, no method table.

Forms (indices are the *original* model's 0-based layer numbers; no commas, because
lm-eval's Python argument parser splits on them):

* ``7``, ``20-25`` (inclusive range), ``3+7+20-25`` (union; overlaps are fine);
  a list such as ``[3, 7]`` or ``["20-25", 3]`` works too.
* ``METHOD:8`` or ``METHOD:25%``: 8 layers (a quarter of them) chosen by a registered layer
  method: ``last`` (the reverse-order baseline), ``bi`` (ShortGPT's block influence),
  ``angular`` (Gromov et al.'s angular distance), ... (``lmeval-prune methods`` lists them;
  :mod:`lmeval_layerprune.methods.registry` holds them).
* ``METHOD:20-25`` (any list of indices and ranges): a method that transforms the layers it is
  given instead of only removing them, e.g. ``collapse:20-25`` (the layers are merged into the
  layer before them, LaCo); a single layer is ``collapse:7-7`` (``collapse:7`` counts 7 layers).
* ``plan:PATH``: a plan JSON written by the selection tools (it carries ``drop``), or a folder
  holding one (a pruned checkpoint); ``plan:PATH@K``: the first K layers of that plan's greedy
  ``order`` (a plan from ``lmeval-prune select --method iterative|ppl``).
* ``none`` (or no ``drop`` at all): keep every layer.

Which layers a spec removes from a model is decided by the one resolver,
:func:`lmeval_layerprune.methods.resolve.resolve_drop`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmeval_layerprune.errors import DropSpecError

VALID_FORMS = (
    "'7', '20-25', '3+7+20-25', a list like [3,7], 'METHOD:8' or 'METHOD:25%' (e.g. 'last:8', 'bi:8', "
    "'angular:25%'; `lmeval-prune methods` lists them), 'plan:PATH', 'plan:PATH@K', or 'none'"
)

_INDEX = re.compile(r"^\d+$")
_RANGE = re.compile(r"^(\d+)-(\d+)$")
_METHOD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):(.*)$")
_PLAN_PREFIX = re.compile(r"^(.*)@(\d+)$")


def _bad(token: object, why: str, num_layers: int | None = None) -> DropSpecError:
    where = f" (the model has {num_layers} layers, 0..{num_layers - 1})" if num_layers else ""
    return DropSpecError(f"invalid drop spec {token!r}: {why}{where}. Valid forms: {VALID_FORMS}.")


@dataclass(frozen=True)
class DropSpec:
    """A parsed ``drop=`` spec.

    Exactly one of ``parts`` (explicit indices/ranges) or ``method`` is set,
    or neither for "keep everything".
    """

    text: str
    parts: tuple[tuple[int, int], ...] = ()
    method: str | None = None
    count: int | None = None
    fraction: float | None = None
    path: str | None = None
    k: int | None = None

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, spec: DropSpec | str | int | Sequence[str | int] | None) -> DropSpec:
        """Parse spec text (or an int, or a list of parts) into a :class:`DropSpec`."""
        if isinstance(spec, DropSpec):
            return spec
        if spec is None:
            return cls(text="none")
        if isinstance(spec, bool):
            raise _bad(spec, "a boolean is not a layer spec")
        if isinstance(spec, int):
            spec = str(spec)
        if isinstance(spec, (list, tuple)):
            if not spec:
                raise _bad(spec, "the list is empty")
            tokens = [str(t).strip().strip("'\"") for t in spec]
            text = "+".join(tokens)
        elif isinstance(spec, str):
            text = spec.strip()
            if _METHOD.match(text):  # a plan path or a method's layer list may contain '+'
                return cls._parse_method(text)
            if text.startswith("[") and text.endswith("]"):
                inner = text[1:-1].replace(",", "+").replace(" ", "").replace("'", "").replace('"', "")
                if not inner:
                    raise _bad(spec, "the list is empty")
                text = inner
            tokens = [t.strip() for t in text.split("+")]
        else:
            raise _bad(spec, f"expected text, an int or a list, got {type(spec).__name__}")

        if text == "":
            raise _bad(spec, "the spec is empty (use 'none' to keep every layer)")
        if text.lower() == "none":
            return cls(text="none")

        method_tokens = [t for t in tokens if _METHOD.match(t)]
        if method_tokens:
            if len(tokens) != 1:
                raise _bad(spec, f"'{method_tokens[0]}' cannot be combined with other parts")
            return cls._parse_method(tokens[0])

        return cls(text=text, parts=_parse_parts(spec, tokens))

    @classmethod
    def _parse_method(cls, tok: str) -> DropSpec:
        m = _METHOD.match(tok)
        assert m is not None
        method, arg = m.group(1).lower(), m.group(2).strip()
        if method == "plan":
            if not arg:
                raise _bad(tok, "plan: needs a path to a plan JSON")
            k = None
            m = _PLAN_PREFIX.match(arg)
            if m and m.group(1) and not Path(arg).expanduser().exists():
                arg, k = m.group(1), int(m.group(2))
            return cls(text=tok, method="plan", path=arg, k=k)
        if "-" in arg or "+" in arg:  # METHOD:20-25: a method applied to the layers named (e.g. collapse)
            return cls(text=tok, method=method, parts=_parse_parts(tok, [t.strip() for t in arg.split("+")]))
        if arg.endswith("%"):
            try:
                frac = float(arg[:-1]) / 100.0
            except ValueError:
                raise _bad(tok, "the percentage is not a number") from None
            if not 0 < frac < 1:
                raise _bad(tok, "the percentage must be between 0 and 100, exclusive")
            return cls(text=tok, method=method, fraction=frac)
        if not _INDEX.match(arg) or int(arg) == 0:
            raise _bad(tok, f"'{method}:' needs a positive layer count, e.g. '{method}:8'")
        return cls(text=tok, method=method, count=int(arg))

    # --------------------------------------------------------------- resolution
    @property
    def is_noop(self) -> bool:
        """True when the spec keeps every layer (``none``)."""
        return not self.parts and self.method is None

    def layer_count(self, num_layers: int) -> int:
        """How many layers a ``last:``/``bi:``/``angular:`` spec removes from ``num_layers``
        (``25%`` rounds half up: 7.5 -> 8)."""
        if self.count is not None:
            return self.count
        if self.fraction is None:
            raise ValueError(f"drop spec {self.text!r} does not name a layer count")
        n = math.floor(num_layers * self.fraction + 0.5)
        if n < 1:
            raise _bad(self.text, "that share of the layers rounds to zero", num_layers)
        return n

    def indices(self, num_layers: int) -> tuple[int, ...]:
        """The sorted indices an explicit spec (``7``, ``20-25``, ``collapse:20-25``) names, checked against
        ``num_layers``."""
        if not self.parts:
            raise ValueError(f"drop spec {self.text!r} names no layers; resolve it against a model")
        drop = tuple(sorted({i for lo, hi in self.parts for i in range(lo, hi + 1)}))
        _check_indices(self.text, drop, num_layers)
        if drop and len(drop) >= num_layers:
            raise _bad(self.text, "it removes every layer", num_layers)
        return drop

    def check_count(self, num_layers: int) -> int:
        """The count of a ``METHOD:K`` spec on a ``num_layers``-layer model; refuses one that removes every layer."""
        n = self.layer_count(num_layers)
        if n >= num_layers:
            raise _bad(self.text, "it removes every layer", num_layers)
        return n


def _parse_parts(spec: object, tokens: Sequence[str]) -> tuple[tuple[int, int], ...]:
    parts = []
    for tok in tokens:
        if tok == "":
            raise _bad(spec, "empty part (check for a stray '+')")
        if _INDEX.match(tok):
            parts.append((int(tok), int(tok)))
            continue
        m = _RANGE.match(tok)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise _bad(tok, f"reversed range (did you mean '{hi}-{lo}'?)")
            parts.append((lo, hi))
            continue
        raise _bad(tok, "not a layer index, an inclusive range 'A-B', or a method 'name:N'")
    return tuple(parts)


def _check_indices(text: str, drop: Sequence[int], num_layers: int) -> tuple[int, ...]:
    out = []
    for i in drop:
        if isinstance(i, bool) or not isinstance(i, int):
            raise _bad(text, f"layer index {i!r} is not an integer", num_layers)
        if not 0 <= i < num_layers:
            raise _bad(text, f"layer {i} is out of range", num_layers)
        out.append(i)
    return tuple(sorted(set(out)))


def format_indices(indices: Sequence[int]) -> str:
    """Compact spec text for indices, e.g. ``(3, 4, 5, 9)`` -> ``'3-5+9'``."""
    if not indices:
        return "none"
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return "+".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
