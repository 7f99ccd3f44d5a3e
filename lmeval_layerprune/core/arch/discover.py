"""Discovery: an :class:`~lmeval_layerprune.core.arch.table.ArchInfo` inferred from the model's structure,
built on the ``meta`` device (no memory, no weights)."""

from __future__ import annotations

import copy
import importlib
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM

from lmeval_layerprune.core.arch.table import ArchInfo, canonical, nested_text_attr, refuse

#: list-valued config attributes that never speak of layers
_NOT_LAYER_LISTS = frozenset(
    {
        "architectures",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "bad_words_ids",
        "suppress_tokens",
        "begin_suppress_tokens",
        "forced_decoder_ids",
        "prune_heads",
        "id2label",
        "label2id",
        "image_token_id",
    }
)


def meta_model(config: Any) -> Any:
    """The model of ``config`` on the meta device: structure only, no memory."""

    cfg = copy.deepcopy(config)
    errors = []
    for auto in (AutoModelForCausalLM, getattr(transformers, "AutoModelForImageTextToText", None)):
        if auto is None:
            continue
        try:
            with torch.device("meta"):
                return auto.from_config(cfg)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{auto.__name__}: {type(e).__name__}: {e}"[:300])
    # A sub-config (e.g. mllama's text model) that no auto class maps: its family's *ForCausalLM.

    module_name = type(cfg).__module__.replace(".configuration_", ".modeling_")
    try:
        modeling = importlib.import_module(module_name)
        for name in dir(modeling):
            cls = getattr(modeling, name)
            if name.endswith("ForCausalLM") and getattr(cls, "config_class", None) is type(cfg):
                with torch.device("meta"):
                    return cls._from_config(cfg)
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(f"{module_name}: {type(e).__name__}: {e}"[:300])
    raise refuse(
        getattr(config, "model_type", None),
        "its model could not be built on the meta device (" + "; ".join(errors) + ")",
    )


def simple_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)) and len(value) <= 4096:
        return all(v is None or isinstance(v, (bool, int, float, str)) for v in value)
    return False


def _stack_candidates(model: Any, config: Any, n: int) -> list[str]:

    lists = [name for name, mod in model.named_modules() if isinstance(mod, torch.nn.ModuleList) and len(mod) == n]
    # a ModuleList nested inside another candidate's layers is part of those layers
    lists = [a for a in lists if not any(a != b and a.startswith(b + ".") for b in lists)]
    return lists


def discover(config: Any, model: Any = None, hints: ArchInfo | None = None) -> ArchInfo:
    """Infer the :class:`ArchInfo` of ``config`` from its model's structure (built on ``meta``).

    Raises:
        UnsupportedArchitectureError: nothing or more than one candidate decoder stack, a
            per-layer fact that cannot be inferred (layer index lists), or a model that
            cannot be built on the meta device.

    ``hints`` (a ``partial`` table entry) names what discovery cannot know: its
    ``index_lists``, ``thresholds`` and ``sparse_step`` are taken as given.
    """
    model_type = getattr(config, "model_type", None)
    text_attr = nested_text_attr(config)
    text = getattr(config, text_attr) if text_attr else config
    n = getattr(text, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 2:
        raise refuse(model_type, f"its (text) config has no layer count num_hidden_layers (got {n!r})")
    if model is None:
        model = meta_model(config)
    cands = _stack_candidates(model, config, n)
    dec = getattr(text, "decoder_layers", None)
    if not cands and isinstance(dec, int) and dec >= 2 and dec != n:  # a BART-style decoder
        n = dec
        cands = _stack_candidates(model, config, n)
    if text_attr and len(cands) > 1:
        owners = [name for name, mod in model.named_modules() if getattr(mod, "config", None) is text]
        inside = [c for c in cands if any(not o or c.startswith(o + ".") for o in owners)]
        cands = inside or cands
    if not cands:
        raise refuse(model_type, f"no ModuleList of {n} decoder layers (num_hidden_layers) was found")
    if len(cands) > 1:
        raise refuse(
            model_type,
            f"{len(cands)} candidate decoder stacks of {n} modules ({', '.join(cands)}); which one (if any) "
            "holds the decoder layers is ambiguous",
        )
    path = cands[0]
    layers = model.get_submodule(path)
    count = _depth_attribute(config, text_attr, text, path, n)

    known = set(hints.index_lists) if hints else set()
    lists: list[str] = []
    for key, value in text.to_dict().items():
        if key in _NOT_LAYER_LISTS or key in known or key == "layer_pruning" or not isinstance(value, (list, tuple)):
            continue
        ints = bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if len(value) == n:
            if ints and list(value) == list(range(n)):
                raise refuse(
                    model_type,
                    f"config.{key} = {list(value)} could be one value per layer or a list of layer indices",
                )
            lists.append(key)
        elif ints and "layer" in key.lower():
            raise refuse(
                model_type,
                f"config.{key} = {list(value)[:8]} looks like a list of layer indices (which layers are "
                "special); renumbering it cannot be inferred",
            )

    # attributes that carry the layer's own index (possibly offset, e.g. 1-based)
    per_layer: list[dict[tuple[str, str], int]] = []
    for i, layer in enumerate(layers):
        found: dict[tuple[str, str], int] = {}
        for sub_name, sub in layer.named_modules():
            for attr, value in vars(sub).items():
                if isinstance(value, int) and not isinstance(value, bool) and not attr.startswith("_"):
                    found[(sub_name, attr)] = value - i
        per_layer.append(found)
    # Hybrid stacks: a submodule may exist in some layers only. An attribute is an index when it
    # is "index + constant" in every layer that has it (in two or more layers), or, found in one
    # layer only, when it is named like one and equals that layer's index.
    offsets: dict[tuple[str, str], set[int]] = {}
    for found in per_layer:
        for key, off in found.items():
            offsets.setdefault(key, set()).add(off)
    counts = {key: sum(key in found for found in per_layer) for key in offsets}
    renumber = tuple(
        sorted(
            (p, a, next(iter(offs)))
            for (p, a), offs in offsets.items()
            if len(offs) == 1 and (counts[(p, a)] >= 2 or (offs == {0} and ("idx" in a or "layer" in a)))
        )
    )
    hinted = {}
    if hints is not None:
        hinted = {"index_lists": hints.index_lists, "thresholds": hints.thresholds, "sparse_step": hints.sparse_step}
    return ArchInfo(
        layers=path,
        lists=tuple(lists),
        text_config=text_attr,
        count=count,
        renumber=renumber,
        inferred=True,
        **hinted,
    )


def _depth_attribute(config: Any, text_attr: str | None, text: Any, path: str, n: int) -> str:
    """The config attribute that sets the stack's depth: ``num_hidden_layers``, unless another
    layer count equals it (BART-style decoders read ``decoder_layers``); then the one whose
    change changes the stack's length, by building each candidate on the meta device."""
    own = canonical(text, "num_hidden_layers")
    names = [
        k
        for k, v in text.to_dict().items()
        if "layer" in k and isinstance(v, int) and not isinstance(v, bool) and v == n and k != own
    ]
    if not names:
        return "num_hidden_layers"
    found = []
    for name in [own, *names]:
        cfg = copy.deepcopy(config)
        setattr(getattr(cfg, text_attr) if text_attr else cfg, name, n - 1)
        try:
            depth = len(meta_model(cfg).get_submodule(path))
        except Exception:  # noqa: BLE001 - that attribute does not make a valid smaller model
            continue
        if depth == n - 1:
            found.append(name)
    if len(found) != 1:
        raise refuse(
            getattr(config, "model_type", None),
            f"which config attribute sets the decoder depth is ambiguous (candidates {found or [own, *names]})",
        )
    return "num_hidden_layers" if found[0] == own else found[0]
