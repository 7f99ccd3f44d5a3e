"""What the report knows about each run: method, layers removed (or merged), healing and its cost,
read from the plan lm-eval recorded.

Which run is a parent's unpruned reference, and which fraction each run removed, come from the
pruning plan lm-eval recorded (``config["layer_pruning"]``; a sweep's cells also carry
``config["sweep"]``), else from the ``layer_pruning`` record in a local checkpoint's ``config.json``;
a run without either counts as unpruned when its model arguments drop nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import PLAN_ATTR, TOKEN_AGREEMENT_FILE
from lmeval_layerprune.errors import DropSpecError
from lmeval_layerprune.methods.registry import get_method

#: the keys of a healed plan's ``recovery`` record that say what the recovery cost
COST_KEYS = ("trainable_parameters", "total_parameters", "training_tokens", "train_seconds")
#: the transform of a run whose chosen layers were removed (a plan records others, e.g. ``merge``)
DROP = "drop"


@dataclass
class RunInfo:
    """What the report needs to know about one run."""

    run: Any
    label: str
    base: str | None
    method: str
    layers_removed: int | None
    num_layers: int | None
    healed: bool
    drop: list[int] | None
    extras: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None  # healed runs: the recovery recipe (sweep cell or plan's recovery record)
    #: what happened to the chosen layers: ``drop`` (removed) or ``merge`` (folded into the kept layer
    #: before them, as layer collapse does; the depth is the same as dropping them)
    transform: str = DROP
    #: healed runs: what the recovery cost (:data:`COST_KEYS`, each None when the record lacks it)
    cost: dict[str, float | None] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.layers_removed is None or not self.num_layers:
            return None
        return self.layers_removed / self.num_layers

    @property
    def unpruned(self) -> bool:
        return self.layers_removed == 0 and not self.healed

    @property
    def merged(self) -> bool:
        return self.transform != DROP

    def layers_key(self) -> tuple[Any, ...]:
        """Runs with the same key removed the same layers of the same parent the same way (healed or not)."""
        layers = tuple(sorted(self.drop)) if self.drop is not None else (self.method, self.layers_removed)
        return (self.base, layers, self.transform)


def _checkpoint_plan(run: Any) -> dict[str, Any] | None:
    """The ``layer_pruning`` record of a local checkpoint the run evaluated (``--model hf``)."""
    pretrained = run.model_args.get("pretrained")
    if not isinstance(pretrained, str):
        return None
    cfg = Path(pretrained).expanduser() / "config.json"
    try:
        plan = json.loads(cfg.read_text()).get(PLAN_ATTR) if cfg.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return plan if isinstance(plan, dict) else None


def _drops_nothing(run: Any) -> bool:
    drop = run.model_args.get("drop")
    return drop is None or str(drop).strip().lower() in ("", "none", "[]")


def plan_transform(plan: dict[str, Any] | None) -> str:
    """The plan's transform of the chosen layers (``extra.transform``; a plan's ``to_dict`` writes its
    extras at the top level): ``drop`` unless recorded otherwise."""
    plan = plan or {}
    extra = plan.get("extra") if isinstance(plan.get("extra"), dict) else {}
    return str(extra.get("transform") or plan.get("transform") or DROP)


def recovery_cost(recovery: dict[str, Any] | None) -> dict[str, float | None]:
    """The cost keys of a heal's record (:data:`COST_KEYS`); None for each one it lacks (older runs)."""
    recovery = recovery or {}
    out: dict[str, float | None] = {}
    for key in COST_KEYS:
        value = recovery.get(key)
        out[key] = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return out


def describe_run(run: Any) -> RunInfo:
    """Method, layers removed and healing of ``run`` from its recorded plan (see the module doc)."""
    config = run.config or {}
    sweep = config.get("sweep") if isinstance(config.get("sweep"), dict) else None
    plan = run.plan or _checkpoint_plan(run)
    drop = [int(i) for i in plan["drop"]] if plan and isinstance(plan.get("drop"), list) else None
    num_layers = int(plan["num_layers"]) if plan and plan.get("num_layers") else None
    healed = bool((sweep or {}).get("healed") or (plan or {}).get("recovery"))
    transform = plan_transform(plan)
    if sweep:
        method = "none" if sweep.get("layers_removed") == 0 else str(sweep["method"])
        removed = int(sweep["layers_removed"])
        num_layers = int(sweep.get("num_layers") or num_layers or 0) or None
        label = str(sweep["cell"])
    elif drop is not None:
        removed = len(drop)
        method = "none" if removed == 0 else str(plan.get("method") or "explicit")
        merged = " merged" if transform != DROP else ""
        label = (
            "unpruned" if removed == 0 else f"{method}:{removed}/{num_layers}{merged}" + (" healed" if healed else "")
        )
    elif _drops_nothing(run) and not healed:
        removed, method, label = 0, "none", "unpruned"
    else:
        removed, method, label = None, str(run.model_args.get("drop") or "?"), f"drop={run.model_args.get('drop')}"
    base = (plan or {}).get("base_model") or run.model
    recovery = (plan or {}).get("recovery") if isinstance((plan or {}).get("recovery"), dict) else {}
    recipe = (sweep or {}).get("recipe") or recovery.get("recipe") if healed else None
    cost = recovery_cost(recovery) if healed else {}
    return RunInfo(
        run, label, base, method, removed, num_layers, healed, drop, cell_extras(run), recipe, transform, cost
    )


def cell_extras(run: Any) -> dict[str, Any]:
    """Extra measurements stored beside a run's results: token agreement (``token_agreement.json``,
    written by ``sweep --token-agreement``). Hook for more (see docs/study.md)."""
    out: dict[str, Any] = {}
    if run.path is None:
        return out
    for folder in (run.path.parent, run.path.parent.parent):
        f = folder / TOKEN_AGREEMENT_FILE
        if f.is_file():
            try:
                out["token_agreement"] = float(json.loads(f.read_text())["agreement"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            break
    return out


def unique_labels(infos: list[RunInfo]) -> None:
    """Make equal labels unique by the run's folder (two plain ``lm_eval`` runs of the same shape)."""
    seen: dict[str, int] = {}
    for info in infos:
        seen[info.label] = seen.get(info.label, 0) + 1
    for info in infos:
        if seen[info.label] > 1 and info.run.path is not None:
            info.label = f"{info.label} ({info.run.path.parent.parent.name}/{info.run.path.parent.name})"


def dropped_twin(info: RunInfo, infos: list[RunInfo]) -> RunInfo | None:
    """The unhealed run that dropped the layers ``info`` merged (same parent, same layers)."""
    if not info.merged:
        return None
    same = [i for i in infos if not i.merged and not i.healed and i.drop]
    return next((i for i in same if i.layers_key()[:2] == info.layers_key()[:2]), None)


def order_runs(infos: list[RunInfo]) -> list[RunInfo]:
    """Parent by parent: the unpruned run, the pruned runs by method and ratio, each merged run right
    after the run that dropped the same layers, then the healed runs."""

    def key(i: RunInfo) -> tuple[Any, ...]:
        return (i.base or "", i.healed, i.method != "none", i.merged, i.method, i.ratio if i.ratio is not None else 9)

    ordered = sorted(infos, key=key)
    merged = [i for i in ordered if i.merged and not i.healed]
    out = [i for i in ordered if i not in merged]
    for m in merged:
        twin = dropped_twin(m, out)
        out.insert(len(out) if twin is None else out.index(twin) + 1, m)
    return out


def method_entry(name: str) -> dict[str, str] | None:
    """The registry's record of a method the runs used (description, definition, citation, url);
    None for names the registry does not know (``explicit``, a plan file, another tool's runs)."""
    if name in ("none", "explicit", "plan"):
        return None
    try:
        m = get_method(name)
    except DropSpecError:
        return None
    return {"description": m.description, "definition": m.definition, "citation": m.citation, "url": m.url}


def methods_used(infos: list[RunInfo]) -> dict[str, dict[str, str]]:
    """name -> :func:`method_entry` for every registered method among the runs, in run order."""
    out: dict[str, dict[str, str]] = {}
    for info in infos:
        if info.method not in out:
            entry = method_entry(info.method)
            if entry is not None:
                out[info.method] = entry
    return out


def fmt_count(n: float | None) -> str:
    """``1234567`` -> ``1.23M``; ``n/a`` for None."""
    if n is None:
        return "n/a"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def fmt_seconds(s: float | None) -> str:
    """``412.3`` -> ``6.9 min``; ``n/a`` for None."""
    if s is None:
        return "n/a"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def cost_cells(cost: dict[str, float | None]) -> list[str]:
    """Trainable parameters (with the share of the total), training tokens, training wall time."""
    trainable, total = cost.get("trainable_parameters"), cost.get("total_parameters")
    params = fmt_count(trainable)
    if trainable is not None and total:
        params += f" ({trainable / total:.2%})"
    return [params, fmt_count(cost.get("training_tokens")), fmt_seconds(cost.get("train_seconds"))]
