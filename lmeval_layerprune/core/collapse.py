"""Layer collapse (LaCo, Yang et al. 2024): merge removed layers into a kept neighbour instead of dropping them.

For each contiguous run ``R`` of removed layers, the *target* is the kept layer just before it
(the kept layer just after it when the run starts at layer 0). Every parameter of the target
becomes ``theta_t + sum_{k in R} (theta_k - theta_t)`` (LaCo's Reserving-Differences-while-Seeking-
Common merge), then the run is removed as ``drop=`` would remove it. The model has the depth of
``drop=R``; the removed layers leave their differences in the target.

:func:`merge_targets` says which layer each run folds into, :func:`collapse_layers` merges in
place (before :func:`~lmeval_layerprune.core.slicing.prune_model`), and :func:`collapsed` merges
for the duration of a block and restores the target's weights exactly (one loaded model serving
several cells). :func:`merge_slices` is the same merge as mergekit slices (``task_arithmetic``
with weight 1 per removed layer over the target as base), so a materialized checkpoint is written
by mergekit and verified against the in-memory merge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from lmeval_layerprune.core.arch import arch_for, num_layers
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import prune_model
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import DropSpecError

#: the plan's ``extra["transform"]`` of a collapse, and where each run went (``extra["merged_into"]``)
MERGE = "merge"


def merge_targets(n: int, drop: Sequence[int]) -> dict[int, list[int]]:
    """``{target layer: [removed layers merged into it]}`` for removing ``drop`` from ``n`` layers."""
    removed = sorted(set(drop))
    if not removed:
        return {}
    if len(removed) >= n:
        raise DropSpecError(f"collapse of layers {removed} leaves no layer to merge them into ({n} layers)")
    runs: list[list[int]] = []
    for i in removed:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    gone = set(removed)
    out: dict[int, list[int]] = {}
    for run in runs:
        before = [k for k in range(run[0]) if k not in gone]
        target = before[-1] if before else next(k for k in range(run[-1] + 1, n) if k not in gone)
        out.setdefault(target, []).extend(run)
    return out


def is_merge(plan: PruningPlan | None) -> bool:
    """True when ``plan``'s removed layers are merged into kept ones (layer collapse), not only dropped."""
    return plan is not None and plan.extra.get("transform") == MERGE


def mark_merge(plan: PruningPlan, local: Sequence[int], index: Sequence[int] | None = None) -> PruningPlan:
    """Record in ``plan`` that its layers are merged, not dropped: ``transform`` and ``merged_into``.

    ``local`` are the removed indices of the model the merge runs on; ``index`` maps them to the
    unpruned parent's indices (the kept list of an already-pruned model; default: the same)."""
    n = len(index) if index is not None else plan.num_layers
    index = index if index is not None else range(n)
    plan.extra["transform"] = MERGE
    plan.extra["merged_into"] = {str(index[t]): [index[k] for k in run] for t, run in merge_targets(n, local).items()}
    return plan


def merge_spec(drop: Sequence[int]) -> str:
    """The ``collapse:`` spec of exactly these layers (a single layer is ``collapse:7-7``: ``collapse:7`` counts)."""
    text = format_indices(drop)
    return f"collapse:{text}-{text}" if text.isdigit() else f"collapse:{text}"


def apply_plan(model: torch.nn.Module, drop: Sequence[int], plan: PruningPlan) -> torch.nn.Module:
    """Remove ``drop`` (indices of ``model``'s layers) as ``plan`` says: merged first when it is a collapse."""
    if is_merge(plan):
        collapse_layers(model, drop)
    return prune_model(model, drop, plan)


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.get_submodule(arch_for(model.config).layers)


@torch.no_grad()
def collapse_layers(model: torch.nn.Module, drop: Sequence[int]) -> dict[int, list[int]]:
    """Merge each run of ``drop`` (indices of ``model``'s layers) into its target, in place; returns the targets.

    The removed layers are left in place: remove them next (``prune_model(model, drop, plan)``).
    """
    layers = _layers(model)
    targets = merge_targets(num_layers(model.config), drop)
    for target, runs in targets.items():
        base = dict(layers[target].named_parameters())
        others = [dict(layers[k].named_parameters()) for k in runs]
        for name, p in base.items():
            if any(name not in o or o[name].shape != p.shape for o in others):
                raise DropSpecError(
                    f"collapse: layer {target} and layers {runs} do not share the parameter {name!r} with one shape; "
                    "layers of different kinds (dense and MoE, attention and SSM) cannot be merged"
                )
            delta = sum((o[name].float() - p.float() for o in others), torch.zeros_like(p, dtype=torch.float32))
            p.copy_((p.float() + delta).to(p.dtype))
    return targets


@contextlib.contextmanager
def collapsed(model: torch.nn.Module, drop: Sequence[int]) -> Iterator[dict[int, list[int]]]:
    """Merge inside the block (as :func:`collapse_layers`), then put the targets' weights back exactly."""
    layers = _layers(model)
    targets = merge_targets(num_layers(model.config), drop)
    saved = {t: {k: v.detach().clone() for k, v in layers[t].state_dict().items()} for t in targets}
    try:
        yield collapse_layers(model, drop)
    finally:
        for t, state in saved.items():
            layers[t].load_state_dict(state)


def merge_slices(model: str, keep: Sequence[int], targets: dict[int, list[int]]) -> list[dict[str, Any]]:
    """mergekit slices for the kept layers ``keep`` where each target takes its runs' differences.

    mergekit keys a slice's inputs by model, so each removed layer is read through another spelling
    of the same folder (``model/.``, ``model/./.``, ...): the same files, a distinct reference.
    """
    slices: list[dict[str, Any]] = []
    plain: list[int] = []

    def flush() -> None:
        if plain:
            slices.append({"sources": [{"model": model, "layer_range": [plain[0], plain[-1] + 1]}]})
            plain.clear()

    for i in keep:
        if i not in targets:
            if plain and i != plain[-1] + 1:
                flush()
            plain.append(i)
            continue
        flush()
        sources: list[dict[str, Any]] = [{"model": model, "layer_range": [i, i + 1]}]
        for j, k in enumerate(targets[i], 1):
            alias = model.rstrip("/") + "/." * j
            sources.append({"model": alias, "layer_range": [k, k + 1], "parameters": {"weight": 1.0}})
        slices.append({"sources": sources, "base_model": model})
    flush()
    return slices
