"""Per-architecture facts, as data.

Adding an architecture is one entry in :data:`ARCHITECTURES` plus one tiny-model
case in ``tests/test_slicing.py``. An entry says:

* ``layers``: the dotted path of the decoder-layer ``ModuleList`` inside the
  ``*ForCausalLM`` model (also the checkpoint key prefix of its tensors);
* ``lists``: config attributes holding one value per layer (sliced to the kept layers);
* ``index_lists``: config attributes holding layer *indices* (filtered and renumbered);
* ``thresholds``: config ints meaning "layers with index >= value" (recounted);
* ``sparse_step``: the config attribute of an every-k-th-layer MoE pattern, rewritten
  into an explicit ``mlp_only_layers`` list when renumbering would break it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArchInfo:
    """What the slicer needs to know about one ``model_type``."""

    layers: str = "model.layers"
    lists: tuple[str, ...] = ()
    index_lists: tuple[str, ...] = ()
    thresholds: tuple[str, ...] = ()
    sparse_step: str | None = None


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
}


class UnsupportedArchitectureError(ValueError):  # a ValueError: bad input
    """The model's ``model_type`` has no entry in :data:`ARCHITECTURES`."""


def supported_model_types() -> list[str]:
    """The ``model_type`` values that can be pruned."""
    return sorted(ARCHITECTURES)


def arch_for(config: Any) -> ArchInfo:
    """Facts for ``config.model_type``, or a clear error listing the supported ones."""
    model_type = getattr(config, "model_type", None)
    info = ARCHITECTURES.get(model_type)
    if info is None:
        raise UnsupportedArchitectureError(
            f"layer pruning does not support model_type {model_type!r} yet. "
            f"Supported: {', '.join(supported_model_types())}. "
            "Adding one is an entry in lmeval_layerprune/arch.py plus a tiny-model test "
            "(see CONTRIBUTING.md)."
        )
    return info


def num_layers(config: Any) -> int:
    """The decoder-layer count of a (supported) config."""
    arch_for(config)
    return int(config.num_hidden_layers)


def sliced_config_values(config: Any, keep: Sequence[int]) -> dict[str, Any]:
    """Config attribute values for a model that keeps only the layers ``keep``.

    ``keep`` are original indices in ascending order. The result maps attribute
    names to new values; callers apply it to a copy (loading) or in place
    (slicing a live model), so both paths agree by construction.
    """
    info = arch_for(config)
    n = int(config.num_hidden_layers)
    keep = list(keep)
    if keep != sorted(set(keep)) or not keep or keep[0] < 0 or keep[-1] >= n:
        raise ValueError(f"keep must be ascending unique indices in 0..{n - 1}, got {keep}")
    new_index = {orig: new for new, orig in enumerate(keep)}
    values: dict[str, Any] = {"num_hidden_layers": len(keep)}

    for name in info.lists:
        cur = getattr(config, name, None)
        if cur is None:
            continue
        if len(cur) != n:
            raise ValueError(f"config.{name} has {len(cur)} entries but the model has {n} layers")
        values[name] = [cur[i] for i in keep]

    dense: list[int] | None = None
    if info.sparse_step is not None:
        step = getattr(config, info.sparse_step, 1) or 1
        only = set(getattr(config, "mlp_only_layers", None) or [])
        if step != 1:
            # "(i + 1) % step == 0" stops meaning the same layers after renumbering:
            # spell the dense layers out and make the step trivial.
            dense = [new for new, orig in enumerate(keep) if orig in only or (orig + 1) % step != 0]
            values[info.sparse_step] = 1
            values["mlp_only_layers"] = dense

    for name in info.index_lists:
        if dense is not None and name == "mlp_only_layers":
            continue
        cur = getattr(config, name, None)
        if cur is None:
            continue
        values[name] = [new_index[i] for i in cur if i in new_index]

    for name in info.thresholds:
        cur = getattr(config, name, None)
        if cur is None:
            continue
        values[name] = sum(1 for i in keep if i < cur)

    return values
