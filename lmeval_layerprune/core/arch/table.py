"""What the slicer needs to know about a ``model_type``: :class:`ArchInfo`, the table of families
that need an entry (:data:`ARCHITECTURES`), and the config arithmetic of a slice (:func:`config_values`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmeval_layerprune.errors import UnsupportedArchitectureError

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


HOW_TO_ADD = (
    "To support it, add an entry to ARCHITECTURES in lmeval_layerprune/core/arch/table.py saying what discovery "
    "could not know (see CONTRIBUTING.md, 'Adding an architecture', and docs/architectures.md)."
)


def refuse(model_type: Any, why: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"layer pruning cannot slice model_type {model_type!r} safely: {why}. {HOW_TO_ADD}"
    )


def nested_text_attr(config: Any) -> str | None:
    get = getattr(config, "get_text_config", None)
    text = get(decoder=True) if get is not None else config
    if text is config:
        return None
    for name, value in vars(config).items():
        if value is text:
            return name
    return None


def canonical(config: Any, name: str) -> str:
    return getattr(type(config), "attribute_map", {}).get(name, name)


def config_values(config: Any, info: ArchInfo, keep: Sequence[int]) -> dict[str, Any]:
    text = text_config(config, info)
    n = int(getattr(text, info.count))
    keep = list(keep)
    if keep != sorted(set(keep)) or not keep or keep[0] < 0 or keep[-1] >= n:
        raise ValueError(f"keep must be ascending unique indices in 0..{n - 1}, got {keep}")
    new_index = {orig: new for new, orig in enumerate(keep)}
    values: dict[str, Any] = {canonical(text, info.count): len(keep)}

    for name in info.lists:
        cur = getattr(text, name, None)
        if cur is None:
            continue
        if len(cur) != n:
            raise ValueError(f"config.{name} has {len(cur)} entries but the model has {n} layers")
        values[canonical(text, name)] = (
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
        values[canonical(text, name)] = [new_index[i] for i in cur if i in new_index]

    for name in info.thresholds:
        cur = getattr(text, name, None)
        if cur is None:
            continue
        values[canonical(text, name)] = sum(1 for i in keep if i < cur)
    return values


def text_config(config: Any, info: ArchInfo) -> Any:
    """The (possibly nested) config of the decoder whose layers are pruned, for a known ``info``."""
    return getattr(config, info.text_config) if info.text_config else config
