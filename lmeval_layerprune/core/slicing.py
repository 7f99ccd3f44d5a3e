"""Keep only some decoder layers of a model: in memory, or while loading.

Two entry points, which agree by construction (both use
:func:`lmeval_layerprune.core.arch.sliced_config_values`):

* :func:`prune_model` removes layers from a live model, renumbering every
  ``layer_idx`` so the KV cache indexes the right slots.
* :func:`load_only_kept_layers` is a context manager around ``from_pretrained``
  (called with :func:`pruned_config`) that hands transformers only the kept
  layers' tensors, renamed to their new indices. The dropped layers' tensors
  are never read from disk, so peak memory follows the kept size.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import transformers.modeling_utils as mu

from lmeval_layerprune.core.arch import (
    ArchInfo,
    arch_for,
    check_inferred_slice,
    num_layers,
    sliced_config_values,
    text_config_of,
)
from lmeval_layerprune.core.layout import PLAN_ATTR
from lmeval_layerprune.core.plan import PruningPlan, plan_for
from lmeval_layerprune.errors import LayerPruneError, UnsupportedArchitectureError

logger = logging.getLogger(__name__)


def keep_from_drop(num_layers: int, drop: Sequence[int]) -> list[int]:
    """The kept original indices, ascending."""
    dropped = set(drop)
    return [i for i in range(num_layers) if i not in dropped]


def _apply_config(config: Any, keep: Sequence[int], plan: PruningPlan | Mapping[str, Any] | None) -> None:
    text = text_config_of(config)
    for name, value in sliced_config_values(config, keep).items():
        setattr(text, name, value)
    if plan is not None:
        setattr(config, PLAN_ATTR, plan if isinstance(plan, Mapping) else plan.to_dict())


def pruned_config(config: Any, drop: Sequence[int], plan: PruningPlan | Mapping[str, Any] | None = None) -> Any:
    """A copy of ``config`` describing the model without the layers ``drop``."""
    new = copy.deepcopy(config)
    _apply_config(new, keep_from_drop(num_layers(config), drop), plan)
    return new


def _get_layers(model: torch.nn.Module, info: ArchInfo) -> tuple[torch.nn.Module, str, torch.nn.ModuleList]:
    parent_path, _, attr = info.layers.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    layers = getattr(parent, attr, None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"expected a ModuleList at {info.layers!r} in {type(model).__name__}")
    return parent, attr, layers


def _index_attrs(layer: torch.nn.Module, info: ArchInfo) -> list[tuple[torch.nn.Module, str, int]]:
    """(module, attribute, offset) of the attributes carrying ``layer``'s index."""
    if info.renumber is None:
        return [(m, "layer_idx", 0) for m in layer.modules() if hasattr(m, "layer_idx")]
    # every layer_idx, plus what discovery found (a live model may have swapped submodules
    # since it was built, e.g. BigBird switching attention type on short inputs)
    out = [(m, "layer_idx", 0) for m in layer.modules() if hasattr(m, "layer_idx")]
    for path, name, offset in info.renumber:
        if name == "layer_idx" and offset == 0:
            continue
        try:
            module = layer.get_submodule(path)
        except AttributeError:  # hybrid stacks: not every layer has every submodule
            continue
        if hasattr(module, name):
            out.append((module, name, offset))
    return out


def _renumber(layer: torch.nn.Module, info: ArchInfo, new_idx: int) -> None:
    for module, name, offset in _index_attrs(layer, info):
        setattr(module, name, new_idx + offset)


def prune_model(
    model: torch.nn.Module, drop: Sequence[int], plan: PruningPlan | Mapping[str, Any] | None = None
) -> torch.nn.Module:
    """Remove the decoder layers ``drop`` (indices of ``model``'s layers) in place and return it.

    Renumbers every ``layer_idx`` attribute inside the kept layers, sets
    ``config.num_hidden_layers``, slices per-layer config lists, and records
    ``plan`` (default: the plan of removing ``drop``, on the unpruned parent) as ``config.layer_pruning``.
    """
    config = model.config
    info = arch_for(config)
    parent, attr, layers = _get_layers(model, info)
    n = len(layers)
    if n != num_layers(config):
        raise ValueError(f"model has {n} layers but config.num_hidden_layers is {num_layers(config)}")
    keep = keep_from_drop(n, drop)
    if plan is None:
        plan = plan_for(config, sorted(set(drop)))
    fixes = check_inferred_slice(config, keep) if info.inferred else {}
    kept_modules = [layers[i] for i in keep]
    for new_idx, layer in enumerate(kept_modules):
        _renumber(layer, info, new_idx)
    setattr(parent, attr, torch.nn.ModuleList(kept_modules))
    _apply_config(config, keep, plan)
    # Settings outside the stack that a freshly built model of the pruned config has.
    for path, values in fixes.items():
        module = model.get_submodule(path)
        for name, value in values.items():
            setattr(module, name, copy.copy(value))
    # Some models cache config-derived facts at init (e.g. whether any layer slides).
    for module in model.modules():
        if hasattr(module, "has_sliding_layers") and getattr(module, "config", None) is config:
            module.has_sliding_layers = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    return model


@contextlib.contextmanager
def layer_subset(model: torch.nn.Module, drop: Sequence[int]) -> Iterator[torch.nn.Module]:
    """Run ``model`` without the layers ``drop`` inside the block, then restore it exactly.

    No weights are copied: the layer list, every ``layer_idx`` and the per-layer config
    values are swapped and put back. This is how a layer search evaluates candidates on one
    loaded model.
    """
    config = model.config
    info = arch_for(config)
    parent, attr, layers = _get_layers(model, info)
    saved_idx = [(m, a, getattr(m, a)) for layer in layers for m, a, _ in _index_attrs(layer, info)]
    keep = keep_from_drop(len(layers), drop)
    text = text_config_of(config, info)
    saved_cfg = {name: copy.copy(text.__dict__.get(name)) for name in sliced_config_values(config, keep)}
    saved_plan = getattr(config, PLAN_ATTR, None)
    saved_sliding = [(m, m.has_sliding_layers) for m in model.modules() if hasattr(m, "has_sliding_layers")]
    fixes = check_inferred_slice(config, keep) if info.inferred else {}
    saved_fixes = [
        (model.get_submodule(path), name, getattr(model.get_submodule(path), name))
        for path, values in fixes.items()
        if not path.startswith(info.layers + ".")
        for name in values
    ]
    # settings inside layers that the slice updates (copies of the depth), by module
    inside = {name for path, values in fixes.items() if path.startswith(info.layers + ".") for name in values}
    saved_fixes += [
        (m, name, vars(m)[name]) for layer in layers for m in layer.modules() for name in inside & set(vars(m))
    ]
    try:
        prune_model(model, drop, plan=saved_plan or {})
        yield model
    finally:
        setattr(parent, attr, layers)
        for module, name, idx in saved_idx:
            setattr(module, name, idx)
        text.__dict__.update(saved_cfg)
        for module, name, value in saved_fixes:
            setattr(module, name, value)
        if saved_plan is None:
            config.__dict__.pop(PLAN_ATTR, None)
        else:
            setattr(config, PLAN_ATTR, saved_plan)
        for module, value in saved_sliding:
            module.has_sliding_layers = value


# --------------------------------------------------------------------- loading

_PATCH_LOCK = threading.Lock()
_UNSUPPORTED_LOADER = (
    "this transformers version loaded the checkpoint through a path lmeval-layerprune does not "
    "intercept, so only the kept layers could not be selected; supported: transformers 5.x "
    "(please report your version)"
)


def _layer_key_regex(info: ArchInfo) -> re.Pattern[str]:
    # Checkpoint keys may or may not carry the outer prefixes (a base-model checkpoint
    # loaded into a *ForCausalLM has no leading "model.").
    parts = info.layers.split(".")
    prefixes = ["\\.".join(map(re.escape, parts[i:-1])) for i in range(len(parts))]
    alts = "|".join(p + "\\." for p in prefixes if p)
    return re.compile(rf"^((?:{alts})?){re.escape(parts[-1])}\.(\d+)\.(.*)$")


def _checkpoint_layer_regex(state_dict: dict[str, Any], info: ArchInfo, num_layers: int) -> re.Pattern[str]:
    """The key pattern of the decoder layers' tensors in this checkpoint.

    Checkpoints may name the stack differently from the model (no leading ``model.``, or an
    older multimodal layout such as ``language_model.model.layers``): the prefix is the one
    under which ``<name>.<i>.`` appears for exactly the layers ``0..num_layers-1``, preferring
    the model's own path when several prefixes qualify.
    """
    rx = _layer_key_regex(info)
    if any(rx.match(k) for k in state_dict):
        return rx
    last = info.layers.rpartition(".")[2]
    seen: dict[str, set[int]] = {}
    for key in state_dict:
        for m in re.finditer(r"\.(\d+)\.", key):
            seen.setdefault(key[: m.start()], set()).add(int(m.group(1)))
    cands = [p for p, idx in seen.items() if idx == set(range(num_layers))]
    if len(cands) > 1:  # prefer the model's own stack name, then its own owner path
        cands = [p for p in cands if p.rpartition(".")[2] == last] or cands
    if len(cands) > 1:
        parts = sorted(info.layers.split("."))
        cands = [p for p in cands if sorted(p.split(".")) == parts] or cands
    if len(cands) != 1:
        return rx
    head, _, name = cands[0].rpartition(".")
    return re.compile(rf"^({re.escape(head + '.') if head else ''}){re.escape(name)}\.(\d+)\.(.*)$")


def filter_state_dict(
    state_dict: dict[str, Any], info: ArchInfo, num_layers: int, keep: Sequence[int]
) -> dict[str, Any]:
    """Keep the tensors of the kept layers (renamed to new indices) and all non-layer tensors.

    Values are passed through untouched, so lazy safetensors slices stay unread.
    """
    new_index = {orig: new for new, orig in enumerate(keep)}
    rx = _checkpoint_layer_regex(state_dict, info, num_layers)
    out: dict[str, Any] = {}
    seen_layers: set[int] = set()
    for key, value in state_dict.items():
        m = rx.match(key)
        if m is None:
            out[key] = value
            continue
        orig = int(m.group(2))
        if orig >= num_layers:
            raise ValueError(
                f"checkpoint tensor {key!r} belongs to layer {orig}, but the config has {num_layers} layers"
            )
        seen_layers.add(orig)
        if orig in new_index:
            out[f"{key[: m.start(2)]}{new_index[orig]}{key[m.end(2) :]}"] = value
    missing = set(keep) - seen_layers
    if not seen_layers and state_dict:
        raise UnsupportedArchitectureError(
            f"no checkpoint tensor belongs to the decoder layers at {info.layers!r} (keys look like "
            f"{sorted(state_dict)[:3]}); refusing to guess which tensors are which layer's"
        )
    if missing and seen_layers:
        raise ValueError(f"the checkpoint has no tensors for layers {sorted(missing)} under {info.layers!r}")
    return out


@contextlib.contextmanager
def load_only_kept_layers(config: Any, drop: Sequence[int]) -> Iterator[None]:
    """Make the ``from_pretrained`` call inside this block load only the kept layers.

    ``config`` is the *unpruned* config; call ``from_pretrained(..., config=pruned_config(config, drop))``
    inside the block. If transformers loaded through a path this does not intercept,
    the block raises instead of returning a model with the wrong layers.
    """
    info = arch_for(config)
    n = num_layers(config)
    keep = keep_from_drop(n, drop)
    state = {"used": False}
    original = getattr(mu, "convert_and_load_state_dict_in_model", None)
    if original is None:
        raise LayerPruneError(_UNSUPPORTED_LOADER)

    def patched(*args: Any, **kwargs: Any) -> Any:
        if "state_dict" in kwargs:
            kwargs["state_dict"] = filter_state_dict(kwargs["state_dict"], info, n, keep)
        else:
            args = list(args)
            args[1] = filter_state_dict(args[1], info, n, keep)
        result = original(*args, **kwargs)
        state["used"] = True
        loading_info = result[0] if isinstance(result, tuple) else result
        missing = getattr(loading_info, "missing_keys", None) or set()
        rx = _layer_key_regex(info)
        bad = sorted(k for k in missing if rx.match(k))
        if bad:
            raise RuntimeError(f"after slicing, layer tensors were missing from the checkpoint: {bad[:5]}")
        # Layer tensors the model did not take: the checkpoint names its layers differently
        # (e.g. an older key layout), so kept layers could have received the wrong weights.
        unexpected = getattr(loading_info, "unexpected_keys", None) or set()
        stray = sorted(k for k in unexpected if rx.match(k))
        if stray:
            raise RuntimeError(f"after slicing, the model did not take these layer tensors: {stray[:5]}")
        return result

    with _PATCH_LOCK:
        mu.convert_and_load_state_dict_in_model = patched
        try:
            yield
        finally:
            mu.convert_and_load_state_dict_in_model = original
    if not state["used"]:
        raise LayerPruneError(_UNSUPPORTED_LOADER)
