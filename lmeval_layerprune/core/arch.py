"""Per-architecture facts: discovered from the model, or looked up in a small table.

Most decoder-only families need no entry: :func:`discover` builds the model on the
``meta`` device (no memory, no weights) and finds

* the decoder stack: the one ``ModuleList`` whose length is the text config's
  ``num_hidden_layers`` (inside the language model when the config nests a ``text_config``);
* the per-layer config entries: lists with one value per layer (sliced to the kept layers);
* the attributes that carry a layer's index (``layer_idx``, ``layer_id``, ...: renumbered).

Every inferred slice is then checked structurally before it is used
(:func:`check_inferred_slice`): the model built from the pruned config must have, for each
kept layer, exactly the modules, tensor shapes and settings the original layer had, and the
same tensors outside the stack. Whatever cannot be inferred safely (a list of layer indices,
two candidate stacks, per-layer tensors outside the layers, a threshold that changes which
layers are what) is refused with :class:`UnsupportedArchitectureError`.

:data:`ARCHITECTURES` holds what discovery cannot know (and the families verified before
discovery existed). An entry says:

* ``layers``: the dotted path of the decoder-layer ``ModuleList`` inside the
  ``*ForCausalLM`` model (also the checkpoint key prefix of its tensors);
* ``lists``: config attributes holding one value per layer (sliced to the kept layers);
* ``index_lists``: config attributes holding layer *indices* (filtered and renumbered);
* ``thresholds``: config ints meaning "layers with index >= value" (recounted);
* ``sparse_step``: the config attribute of an every-k-th-layer MoE pattern, rewritten
  into an explicit ``mlp_only_layers`` list when renumbering would break it;
* ``text_config``: the attribute of a nested decoder config (multimodal checkpoints);
* ``unsupported``: why a family is refused (slicing it would be wrong).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmeval_layerprune.errors import UnsupportedArchitectureError

logger = logging.getLogger(__name__)

#: (submodule path relative to a layer, attribute, offset): ``attribute == layer index + offset``
Renumber = tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class ArchInfo:
    """What the slicer needs to know about one ``model_type``."""

    layers: str = "model.layers"
    lists: tuple[str, ...] = ()
    index_lists: tuple[str, ...] = ()
    thresholds: tuple[str, ...] = ()
    sparse_step: str | None = None
    text_config: str | None = None
    #: the config attribute that sets the decoder stack's depth
    count: str = "num_hidden_layers"
    #: ``None``: renumber every ``layer_idx`` inside a kept layer (table entries).
    renumber: Renumber | None = None
    unsupported: str | None = None
    inferred: bool = False
    #: the entry is a hint: discover the rest (stack, per-layer lists, indices), then check it
    partial: bool = False

    @property
    def text_model(self) -> str:
        """The dotted path of the module that owns the decoder stack."""
        return self.layers.rpartition(".")[0]


_LT = ("layer_types",)

#: model_type -> facts. Every entry is covered by a tiny-model test.
ARCHITECTURES: dict[str, ArchInfo] = {
    "llama": ArchInfo(),
    "mistral": ArchInfo(),
    "ministral": ArchInfo(lists=_LT),
    "mixtral": ArchInfo(),
    "qwen2": ArchInfo(lists=_LT, thresholds=("max_window_layers",)),
    "qwen2_moe": ArchInfo(
        lists=_LT,
        thresholds=("max_window_layers",),
        index_lists=("mlp_only_layers",),
        sparse_step="decoder_sparse_step",
    ),
    "qwen3": ArchInfo(lists=_LT, thresholds=("max_window_layers",)),
    "qwen3_moe": ArchInfo(
        lists=_LT,
        thresholds=("max_window_layers",),
        index_lists=("mlp_only_layers",),
        sparse_step="decoder_sparse_step",
    ),
    "gemma": ArchInfo(),
    "gemma2": ArchInfo(lists=_LT),
    "gemma3_text": ArchInfo(lists=_LT),
    "phi": ArchInfo(),
    "phi3": ArchInfo(),
    "olmo": ArchInfo(),
    "olmo2": ArchInfo(),
    "olmo3": ArchInfo(lists=_LT),
    "granite": ArchInfo(),
    "cohere": ArchInfo(),
    "cohere2": ArchInfo(lists=_LT),
    "starcoder2": ArchInfo(),
    "stablelm": ArchInfo(),
    "smollm3": ArchInfo(lists=(*_LT, "no_rope_layers")),
    "helium": ArchInfo(),
    "glm4": ArchInfo(),
    "gpt_neox": ArchInfo(layers="gpt_neox.layers"),
    # Hints: discovery finds the stack, lists and indices; these say what it cannot know.
    "llama4": ArchInfo(partial=True, index_lists=("moe_layers",)),
    "llama4_text": ArchInfo(partial=True, index_lists=("moe_layers",)),
    "deepseek_v2": ArchInfo(partial=True, thresholds=("first_k_dense_replace",)),
    "deepseek_v3": ArchInfo(partial=True, thresholds=("first_k_dense_replace",)),
    "glm4_moe": ArchInfo(partial=True, thresholds=("first_k_dense_replace",)),
    "sarvam_moe": ArchInfo(partial=True, thresholds=("first_k_dense_replace",)),
    "afmoe": ArchInfo(partial=True, thresholds=("num_dense_layers",)),
    "ernie4_5_moe": ArchInfo(partial=True, thresholds=("moe_layer_start_index",)),
    "lfm2": ArchInfo(partial=True, index_lists=("full_attn_idxs",)),
    "sarvam_mla": ArchInfo(partial=True, thresholds=("first_k_dense_replace",)),
    "bamba": ArchInfo(partial=True, index_lists=("attn_layer_indices",)),
    "mllama": ArchInfo(partial=True, index_lists=("cross_attention_layers",)),
    "mllama_text_model": ArchInfo(partial=True, index_lists=("cross_attention_layers",)),
    "zamba2": ArchInfo(partial=True, index_lists=("hybrid_layer_ids",)),
    "flint": ArchInfo(partial=True, index_lists=("mlp_only_layers",)),
}


def supported_model_types() -> list[str]:
    """The ``model_type`` values of the table (discovery handles many more)."""
    return sorted(k for k, v in ARCHITECTURES.items() if v.unsupported is None)


_HOW_TO_ADD = (
    "To support it, add an entry to ARCHITECTURES in lmeval_layerprune/arch.py saying what discovery "
    "could not know (see CONTRIBUTING.md, 'Adding an architecture', and docs/architectures.md)."
)


def _refuse(model_type: Any, why: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"layer pruning cannot slice model_type {model_type!r} safely: {why}. {_HOW_TO_ADD}"
    )


def text_config_of(config: Any, info: ArchInfo | None = None) -> Any:
    """The (possibly nested) config of the decoder whose layers are pruned."""
    info = info or arch_for(config)
    return getattr(config, info.text_config) if info.text_config else config


def _nested_text_attr(config: Any) -> str | None:
    get = getattr(config, "get_text_config", None)
    text = get(decoder=True) if get is not None else config
    if text is config:
        return None
    for name, value in vars(config).items():
        if value is text:
            return name
    return None


def _canonical(config: Any, name: str) -> str:
    return getattr(type(config), "attribute_map", {}).get(name, name)


def _fingerprint(config: Any) -> str:
    try:
        blob = config.to_json_string(use_diff=False)
    except Exception:  # not a transformers config: identity is the best we have
        blob = repr(sorted(vars(config).items(), key=lambda kv: kv[0]))
    return hashlib.sha256(f"{type(config).__qualname__}|{blob}".encode()).hexdigest()


_DISCOVERED: dict[str, ArchInfo | UnsupportedArchitectureError] = {}
_CHECKED: dict[tuple[str, tuple[int, ...]], dict[str, dict[str, Any]] | UnsupportedArchitectureError] = {}


def arch_for(config: Any) -> ArchInfo:
    """Facts for ``config``: its table entry, else what :func:`discover` infers.

    Raises:
        UnsupportedArchitectureError: the table refuses the family, or discovery
            found something it cannot slice safely (the message says what).
    """
    model_type = getattr(config, "model_type", None)
    info = ARCHITECTURES.get(model_type)
    if info is not None:
        if info.unsupported:
            raise _refuse(model_type, info.unsupported)
        if not info.partial:
            return info
    key = f"{_fingerprint(config)}|{info!r}"  # a table hint changes what is discovered
    found = _DISCOVERED.get(key)
    if found is None:
        try:
            found = discover(config, hints=info)
            logger.info(
                "layer pruning: %s is not in the table; inferred the decoder stack %s (%d layers), "
                "per-layer config %s, layer indices in %s",
                model_type,
                found.layers,
                int(getattr(text_config_of(config, found), found.count)),
                list(found.lists) or "none",
                sorted({f"{p + '.' if p else ''}{a}" for p, a, _ in found.renumber or ()}) or "none",
            )
        except UnsupportedArchitectureError as e:
            found = e
        _DISCOVERED[key] = found
    if isinstance(found, UnsupportedArchitectureError):
        raise found
    return found


def num_layers(config: Any) -> int:
    """The decoder-layer count of a (supported) config, nested text configs included."""
    info = arch_for(config)
    return int(getattr(text_config_of(config, info), info.count))


# ----------------------------------------------------------------- discovery

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


def _meta_model(config: Any) -> Any:
    """The model of ``config`` on the meta device: structure only, no memory."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

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
    import importlib

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
    raise _refuse(
        getattr(config, "model_type", None),
        "its model could not be built on the meta device (" + "; ".join(errors) + ")",
    )


def _simple(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)) and len(value) <= 4096:
        return all(v is None or isinstance(v, (bool, int, float, str)) for v in value)
    return False


def _stack_candidates(model: Any, config: Any, n: int) -> list[str]:
    import torch

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
    text_attr = _nested_text_attr(config)
    text = getattr(config, text_attr) if text_attr else config
    n = getattr(text, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 2:
        raise _refuse(model_type, f"its (text) config has no layer count num_hidden_layers (got {n!r})")
    if model is None:
        model = _meta_model(config)
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
        raise _refuse(model_type, f"no ModuleList of {n} decoder layers (num_hidden_layers) was found")
    if len(cands) > 1:
        raise _refuse(
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
                raise _refuse(
                    model_type,
                    f"config.{key} = {list(value)} could be one value per layer or a list of layer indices",
                )
            lists.append(key)
        elif ints and "layer" in key.lower():
            raise _refuse(
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
    canonical = _canonical(text, "num_hidden_layers")
    names = [
        k
        for k, v in text.to_dict().items()
        if "layer" in k and isinstance(v, int) and not isinstance(v, bool) and v == n and k != canonical
    ]
    if not names:
        return "num_hidden_layers"
    found = []
    for name in [canonical, *names]:
        cfg = copy.deepcopy(config)
        setattr(getattr(cfg, text_attr) if text_attr else cfg, name, n - 1)
        try:
            depth = len(_meta_model(cfg).get_submodule(path))
        except Exception:  # noqa: BLE001 - that attribute does not make a valid smaller model
            continue
        if depth == n - 1:
            found.append(name)
    if len(found) != 1:
        raise _refuse(
            getattr(config, "model_type", None),
            f"which config attribute sets the decoder depth is ambiguous (candidates {found or [canonical, *names]})",
        )
    return "num_hidden_layers" if found[0] == canonical else found[0]


def _signature(module: Any, renumber: set[tuple[str, str]], index: int, depth: int = -1) -> list[tuple]:
    sig: list[tuple] = []
    for name, sub in module.named_modules():
        sig.append((name, type(sub).__qualname__))
        for pname, p in sub.named_parameters(recurse=False):
            sig.append((name, "param", pname, tuple(p.shape), str(p.dtype)))
        for bname, b in sub.named_buffers(recurse=False):
            sig.append((name, "buffer", bname, tuple(b.shape)))
        for attr, value in sorted(vars(sub).items()):
            if attr.startswith("_") or attr == "training" or not _simple(value):
                continue
            if (name, attr) in renumber:
                value = value - index
            elif attr in _DEPTH_NAMES and value == depth:
                value = "<depth>"  # a copy of the layer count (e.g. for a depth-scaled factor)
            sig.append((name, "attr", attr, value if not isinstance(value, list) else tuple(value)))
    return sig


#: layer attributes that copy the model's depth; updated to the pruned depth
_DEPTH_NAMES = frozenset({"num_hidden_layers", "num_layers", "n_layer", "n_layers"})


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
        attrs[name] = {k: v for k, v in vars(sub).items() if not k.startswith("_") and k != "training" and _simple(v)}
    return tensors, attrs


def check_inferred_slice(config: Any, keep: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Check an inferred slice structurally; return the settings outside the stack to update.

    The model built (on ``meta``) from the pruned config must have, layer for layer, the
    modules, tensor shapes and settings of the kept original layers, and the same tensors
    outside the stack. The returned ``{module path: {attribute: value}}`` are settings
    outside the stack (e.g. "has sliding layers") that a freshly built pruned model has.

    Raises:
        UnsupportedArchitectureError: what differs, naming the layer and the setting.
    """
    info = arch_for(config)
    keep = tuple(keep)
    key = (f"{_fingerprint(config)}|{info!r}", keep)
    done = _CHECKED.get(key)
    if done is None:
        try:
            done = _check(config, info, keep)
        except UnsupportedArchitectureError as e:
            done = e
        _CHECKED[key] = done
    if isinstance(done, UnsupportedArchitectureError):
        raise done
    return done


def _check(config: Any, info: ArchInfo, keep: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    model_type = getattr(config, "model_type", None)
    full = _meta_model(config)
    small_cfg = copy.deepcopy(config)
    text = text_config_of(small_cfg, info)
    for name, value in _config_values(config, info, keep).items():
        setattr(text, name, value)
    try:
        small = _meta_model(small_cfg)
    except UnsupportedArchitectureError as e:
        raise _refuse(model_type, f"the config with only layers {list(keep)} does not build: {e}") from None
    renumber = {(p, a) for p, a, _ in info.renumber or ()}
    full_layers, small_layers = full.get_submodule(info.layers), small.get_submodule(info.layers)
    if len(small_layers) != len(keep):
        raise _refuse(model_type, f"the pruned config builds {len(small_layers)} layers, not {len(keep)}")
    for new, orig in enumerate(keep):
        a = _signature(full_layers[orig], renumber, orig, len(full_layers))
        b = _signature(small_layers[new], renumber, new, len(keep))
        if a != b:
            diff = [x for x in a if x not in b][:3] or [x for x in b if x not in a][:3]
            raise _refuse(
                model_type,
                f"original layer {orig} is not rebuilt alike as layer {new} of the pruned model (differs in "
                f"{diff}); some config setting decides per layer what a layer is and was not inferred",
            )
    t_full, attrs_full = _outside(full, info.layers)
    t_small, attrs_small = _outside(small, info.layers)
    if t_full != t_small:
        names = sorted(k for k in set(t_full) | set(t_small) if t_full.get(k) != t_small.get(k))
        raise _refuse(model_type, f"tensors outside the decoder layers depend on the layer count: {names[:5]}")
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


def _config_values(config: Any, info: ArchInfo, keep: Sequence[int]) -> dict[str, Any]:
    text = text_config_of(config, info)
    n = int(getattr(text, info.count))
    keep = list(keep)
    if keep != sorted(set(keep)) or not keep or keep[0] < 0 or keep[-1] >= n:
        raise ValueError(f"keep must be ascending unique indices in 0..{n - 1}, got {keep}")
    new_index = {orig: new for new, orig in enumerate(keep)}
    values: dict[str, Any] = {_canonical(text, info.count): len(keep)}

    for name in info.lists:
        cur = getattr(text, name, None)
        if cur is None:
            continue
        if len(cur) != n:
            raise ValueError(f"config.{name} has {len(cur)} entries but the model has {n} layers")
        values[_canonical(text, name)] = (
            type(cur)(cur[i] for i in keep) if isinstance(cur, tuple) else [cur[i] for i in keep]
        )

    dense: list[int] | None = None
    if info.sparse_step is not None:
        step = getattr(text, info.sparse_step, 1) or 1
        only = set(getattr(text, "mlp_only_layers", None) or [])
        if step != 1:
            # "(i + 1) % step == 0" stops meaning the same layers after renumbering:
            # spell the dense layers out and make the step trivial.
            dense = [new for new, orig in enumerate(keep) if orig in only or (orig + 1) % step != 0]
            values[info.sparse_step] = 1
            values["mlp_only_layers"] = dense

    for name in info.index_lists:
        if dense is not None and name == "mlp_only_layers":
            continue
        cur = getattr(text, name, None)
        if cur is None:
            continue
        values[_canonical(text, name)] = [new_index[i] for i in cur if i in new_index]

    for name in info.thresholds:
        cur = getattr(text, name, None)
        if cur is None:
            continue
        values[_canonical(text, name)] = sum(1 for i in keep if i < cur)
    return values


def sliced_config_values(config: Any, keep: Sequence[int]) -> dict[str, Any]:
    """Config attribute values for a model that keeps only the layers ``keep``.

    ``keep`` are original indices in ascending order. The result maps attribute
    names of the *text* config (:func:`text_config_of`; ``config`` itself unless the
    config nests one) to new values; callers apply it to a copy (loading) or in place
    (slicing a live model), so both paths agree by construction. An inferred
    architecture is checked structurally first (:func:`check_inferred_slice`).
    """
    info = arch_for(config)
    values = _config_values(config, info, keep)
    if info.inferred:
        check_inferred_slice(config, keep)
    return values


def arch_status(model_type: str, config: Any = None) -> tuple[str, str]:
    """``("table" | "inferred" | "unsupported", detail)`` for a model type (its default config,
    or ``config``): discovery and the structural check run on the meta device."""
    info = ARCHITECTURES.get(model_type)
    if info is not None and info.unsupported:
        return "unsupported", info.unsupported
    if info is not None and not info.partial:
        return "table", f"layers at {info.layers}"
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(model_type) if config is None else config
        found = arch_for(config)
        n = num_layers(config)
        check_inferred_slice(config, [i for i in range(n) if i != n // 2])
    except UnsupportedArchitectureError as e:
        return "unsupported", str(e).split(" safely: ", 1)[-1].split(". To support it", 1)[0]
    except Exception as e:  # noqa: BLE001 - a listing reports, it does not crash
        return "unsupported", f"{type(e).__name__}: {e}"[:200]
    nested = f", text model {found.text_model} (other towers left whole)" if found.text_config else ""
    hinted = ", with table hints" if info is not None else ""
    return ("table" if info is not None else "inferred"), f"layers at {found.layers}{nested}{hinted}"


def causal_lm_model_types() -> list[str]:
    """Every ``model_type`` transformers maps to a causal-LM class, plus the table's."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) | set(ARCHITECTURES))


def archs_listing(models: Sequence[str] | None = None, progress: bool = True) -> list[tuple[str, str, str]]:
    """``(model_type, status, detail)`` rows for ``lmeval-prune archs``.

    ``models``: model types, or checkpoint folders / Hub ids (their config is read);
    default: every causal-LM model type transformers knows, plus the table's.
    """
    from transformers import CONFIG_MAPPING

    names = list(models or causal_lm_model_types())
    rows = []
    try:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="archs", unit="type", disable=not progress or len(names) < 5)
    except ImportError:  # pragma: no cover
        it = names
    for name in it:
        if name in CONFIG_MAPPING or name in ARCHITECTURES:
            rows.append((name, *arch_status(name)))
            continue
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(name)
        except Exception as e:  # noqa: BLE001 - a listing reports, it does not crash
            rows.append((name, "unsupported", f"not a model type, and no config could be read ({type(e).__name__})"))
            continue
        status, detail = arch_status(config.model_type, config)
        rows.append((f"{name} ({config.model_type})", status, detail))
    return rows


def format_archs(rows: Sequence[tuple[str, str, str]]) -> str:
    """The ``archs`` table as text: one line per model type, then the counts."""
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"{mt:<{width}}  {status:<11}  {detail}" for mt, status, detail in rows]
    counts = {s: sum(r[1] == s for r in rows) for s in ("table", "inferred", "unsupported")}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


__all__ = [
    "ARCHITECTURES",
    "ArchInfo",
    "arch_for",
    "arch_status",
    "archs_listing",
    "check_inferred_slice",
    "discover",
    "format_archs",
    "num_layers",
    "sliced_config_values",
    "supported_model_types",
    "text_config_of",
]
