"""The grid of a sweep: its cells, and the parsing of methods, ratios, recipes and healed cells.

A cell is one lm-eval run: ``method`` at ``ratio`` (``layers`` of the parent removed), optionally
healed by a recipe. The unpruned baseline (ratio 0) is one cell, ``base``, shared by every method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmeval_layerprune.core.layout import BASE_CELL
from lmeval_layerprune.core.spec import DropSpec
from lmeval_layerprune.errors import SweepError
from lmeval_layerprune.methods.registry import method_names

#: methods a sweep runs by default: one-pass (``last``, ``bi``, ``angular``)
DEFAULT_METHODS = ("last", "bi", "angular")
DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3)
DEFAULT_TASKS = ("layerprune_probes",)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: ``method`` at ``ratio`` (``layers`` of the parent removed)."""

    method: str
    ratio: float
    layers: int
    healed: bool = False
    recipe: str | None = None  # healed cells: the recipe that healed it
    tagged: bool = False  # the recipe is part of the name (a sweep with several recipes)

    @property
    def name(self) -> str:
        if self.ratio == 0:
            return BASE_CELL
        name = f"{self.method}-{self.ratio:g}" + ("-healed" if self.healed else "")
        return f"{name}-{recipe_tag(self.recipe)}" if self.tagged and self.recipe else name

    @property
    def parent(self) -> Cell:
        """The in-memory cell that removes the same layers (a healed cell's starting point)."""
        return Cell(self.method, self.ratio, self.layers)


def recipe_tag(recipe: str) -> str:
    """A recipe's name in cell names: the bundled name, or a recipe file's stem."""
    return Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe


def parse_recipes(text: str | None) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``; refuses repeats and two recipes with one name in cell names."""
    items = tuple(r.strip() for r in (text or "").split(",") if r.strip())
    tags = [recipe_tag(r) for r in items]
    if len(set(tags)) != len(tags):
        raise SweepError(f"recipe listed twice (or two recipe files with one name) in {text!r}")
    return items


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"last,bi"`` -> ``("last", "bi")``, refusing unknown or repeated methods."""
    items = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    known = method_names()
    if not items:
        raise SweepError(f"no methods given; choose from {', '.join(known)}")
    unknown = [m for m in items if m not in known]
    if unknown:
        raise SweepError(f"unknown method(s) {', '.join(map(repr, unknown))}; valid: {', '.join(known)}")
    if len(set(items)) != len(items):
        raise SweepError(f"method listed twice in {','.join(items)}")
    return tuple(items)


def parse_ratios(text: str | Sequence[float | str]) -> tuple[float, ...]:
    """``"0,0.1,25%"`` -> ``(0.0, 0.1, 0.25)``: fractions of the layers to remove, each in [0, 1)."""
    items = [str(r).strip() for r in (text.split(",") if isinstance(text, str) else text) if str(r).strip()]
    if not items:
        raise SweepError("no ratios given (e.g. --ratios 0,0.1,0.2,0.3)")
    out = []
    for item in items:
        try:
            value = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise SweepError(f"ratio {item!r} is not a number (fractions like 0.25, or percentages like 25%)") from None
        if not (0 <= value < 1) or math.isnan(value):
            raise SweepError(f"ratio {item!r} is outside [0, 1): it is the fraction of the layers to remove")
        out.append(value)
    if len(set(out)) != len(out):
        raise SweepError(f"ratio listed twice in {','.join(items)}")
    return tuple(sorted(out))


def layer_count(ratio: float, num_layers: int) -> int:
    """Layers a ratio removes from ``num_layers``, as ``drop=last:R%`` counts them (half rounds up)."""
    if ratio == 0:
        return 0
    spec = DropSpec(text=f"{ratio:g}", fraction=ratio)
    try:
        k = spec.layer_count(num_layers)
    except ValueError:
        raise SweepError(
            f"ratio {ratio:g} removes {ratio * num_layers:.2f} of {num_layers} layers, which rounds to 0; "
            f"the smallest ratio that removes a layer is {1 / (2 * num_layers):.3g}"
        ) from None
    if k >= num_layers:
        raise SweepError(
            f"ratio {ratio:g} removes {k} of {num_layers} layers, i.e. every layer; "
            f"the largest ratio that keeps one is below {(num_layers - 0.5) / num_layers:.3g}"
        )
    return k


def plan_grid(
    methods: Sequence[str],
    ratios: Sequence[float],
    num_layers: int,
    heal: Sequence[tuple[str, float]] = (),
    recipes: Sequence[str | None] = (None,),
) -> list[Cell]:
    """The cells of a grid, the shared baseline first; refuses ratios that remove the same count.

    Every cell in ``heal`` is healed once per recipe; with several recipes the name carries it."""
    counts = {r: layer_count(r, num_layers) for r in ratios}
    seen: dict[int, float] = {}
    for r, k in counts.items():
        if k in seen:
            raise SweepError(
                f"ratios {seen[k]:g} and {r:g} both remove {k} of {num_layers} layers; give ratios that differ "
                f"by at least {1 / num_layers:.3g} on this model"
            )
        seen[k] = r
    cells: list[Cell] = []
    if 0 in counts.values():
        cells.append(Cell("none", 0.0, 0))
    for m in methods:
        cells.extend(Cell(m, r, k) for r, k in counts.items() if k > 0)
    for m, r in heal:
        if m not in methods or r not in counts or counts[r] == 0:
            raise SweepError(
                f"healed cell {m}:{r:g} is not a pruned cell of the grid (methods {','.join(methods)}, "
                f"ratios {','.join(f'{x:g}' for x in ratios if x > 0)})"
            )
        cells.extend(Cell(m, r, counts[r], True, rec, len(recipes) > 1) for rec in recipes)
    return cells


def parse_heal_cells(text: str | None, methods: Sequence[str], ratios: Sequence[float]) -> list[tuple[str, float]]:
    """``"last:0.2,angular:0.2"`` -> cells to heal; ``None`` / ``"all"``: every pruned cell."""
    if text is None or text.strip().lower() == "all":
        return [(m, r) for m in methods for r in ratios if r > 0]
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        method, sep, ratio = item.partition(":")
        if not sep:
            raise SweepError(f"healed cell {item!r} is not METHOD:RATIO (e.g. last:0.2)")
        out.append((parse_methods(method)[0], parse_ratios(ratio)[0]))
    return out
