"""The structural check of an inferred slice: the model built from the pruned config must have, layer for
layer, the modules, tensor shapes and settings of the kept original layers."""

from __future__ import annotations

import copy
from typing import Any

from lmeval_layerprune.core.arch.discover import meta_model, simple_value
from lmeval_layerprune.core.arch.table import ArchInfo, config_values, refuse, text_config
from lmeval_layerprune.errors import UnsupportedArchitectureError

#: layer attributes that copy the model's depth; updated to the pruned depth
_DEPTH_NAMES = frozenset({"num_hidden_layers", "num_layers", "n_layer", "n_layers"})


def _signature(module: Any, renumber: set[tuple[str, str]], index: int, depth: int = -1) -> list[tuple]:
    sig: list[tuple] = []
    for name, sub in module.named_modules():
        sig.append((name, type(sub).__qualname__))
        for pname, p in sub.named_parameters(recurse=False):
            sig.append((name, "param", pname, tuple(p.shape), str(p.dtype)))
        for bname, b in sub.named_buffers(recurse=False):
            sig.append((name, "buffer", bname, tuple(b.shape)))
        for attr, value in sorted(vars(sub).items()):
            if attr.startswith("_") or attr == "training" or not simple_value(value):
                continue
            if (name, attr) in renumber:
                value = value - index
            elif attr in _DEPTH_NAMES and value == depth:
                value = "<depth>"  # a copy of the layer count (e.g. for a depth-scaled factor)
            sig.append((name, "attr", attr, value if not isinstance(value, list) else tuple(value)))
    return sig


def _outside(model: Any, stack: str) -> tuple[dict[str, tuple], dict[str, dict[str, Any]]]:
    tensors: dict[str, tuple] = {}
    attrs: dict[str, dict[str, Any]] = {}
    for name, sub in model.named_modules():
        if name == stack or name.startswith(stack + "."):
            continue
        for pname, p in sub.named_parameters(recurse=False):
            tensors[f"{name}.{pname}"] = tuple(p.shape)
        for bname, b in sub.named_buffers(recurse=False):
            if bname not in getattr(sub, "_non_persistent_buffers_set", ()):
                tensors[f"{name}.{bname}"] = tuple(b.shape)
        attrs[name] = {
            k: v for k, v in vars(sub).items() if not k.startswith("_") and k != "training" and simple_value(v)
        }
    return tensors, attrs


def check_slice(config: Any, info: ArchInfo, keep: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    model_type = getattr(config, "model_type", None)
    full = meta_model(config)
    small_cfg = copy.deepcopy(config)
    text = text_config(small_cfg, info)
    for name, value in config_values(config, info, keep).items():
        setattr(text, name, value)
    try:
        small = meta_model(small_cfg)
    except UnsupportedArchitectureError as e:
        raise refuse(model_type, f"the config with only layers {list(keep)} does not build: {e}") from None
    renumber = {(p, a) for p, a, _ in info.renumber or ()}
    full_layers, small_layers = full.get_submodule(info.layers), small.get_submodule(info.layers)
    if len(small_layers) != len(keep):
        raise refuse(model_type, f"the pruned config builds {len(small_layers)} layers, not {len(keep)}")
    for new, orig in enumerate(keep):
        a = _signature(full_layers[orig], renumber, orig, len(full_layers))
        b = _signature(small_layers[new], renumber, new, len(keep))
        if a != b:
            diff = [x for x in a if x not in b][:3] or [x for x in b if x not in a][:3]
            raise refuse(
                model_type,
                f"original layer {orig} is not rebuilt alike as layer {new} of the pruned model (differs in "
                f"{diff}); some config setting decides per layer what a layer is and was not inferred",
            )
    t_full, attrs_full = _outside(full, info.layers)
    t_small, attrs_small = _outside(small, info.layers)
    if t_full != t_small:
        names = sorted(k for k in set(t_full) | set(t_small) if t_full.get(k) != t_small.get(k))
        raise refuse(model_type, f"tensors outside the decoder layers depend on the layer count: {names[:5]}")
    fixes: dict[str, dict[str, Any]] = {}
    for new in range(len(keep)):
        for sub_name, sub in small_layers[new].named_modules():
            for attr in _DEPTH_NAMES & set(vars(sub)):
                if vars(sub)[attr] == len(keep):
                    fixes[f"{info.layers}.{new}{'.' + sub_name if sub_name else ''}"] = {attr: len(keep)}
    for path, values in attrs_small.items():
        changed = {k: v for k, v in values.items() if attrs_full.get(path, {}).get(k, object()) != v}
        if changed:
            fixes[path] = changed
    return fixes
