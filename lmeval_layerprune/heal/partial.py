"""Partial-layer finetuning (a recipe's ``train:`` section): only the named weights train.

After Lu et al. 2024 ("Reassessing Layer Pruning in LLMs"): once layers are removed from the end,
finetuning only the last few remaining layers and the LM head recovers much of what was lost, with a
fraction of the trainable parameters. :func:`freeze_except` freezes every parameter of the pruned
student except the decoder layers ``train.layers`` names (indices of the pruned model, resolved by
:func:`~lmeval_layerprune.heal.check.check_run`), the LM head, the final norm and the input embeddings
as asked. The trainer's optimizer only sees parameters that require gradients, so every frozen
tensor leaves training bit-identical (``tests/test_heal.py`` checks it by hash).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.errors import HealError
from lmeval_layerprune.heal.recipe import TrainSection

#: child module names of the final norm, when its class name does not say so
_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f")


def _final_norm(owner: Any, path: str) -> Any:
    """The final norm: the child of the module that owns the decoder stack that is a norm."""
    children = dict(owner.named_children())
    found = [m for name, m in children.items() if name in _NORM_NAMES or "norm" in type(m).__name__.lower()]
    if len(found) != 1:
        raise HealError(
            f"train.norm: the model has {'no' if not found else 'more than one'} final norm under {path!r} "
            f"(its children: {', '.join(children)}); set train.norm: false"
        )
    return found[0]


def freeze_except(model: Any, train: TrainSection, layers: Sequence[int]) -> dict[str, Any]:
    """Freeze every parameter of ``model`` except the ones ``train`` names; returns what trains.

    ``layers`` are indices of the pruned model's decoder stack. With tied embeddings, the LM head and
    the input embeddings are one matrix, so naming either trains both (``tied_embeddings`` says so).
    """
    info = arch_for(model.config)
    stack = model.get_submodule(info.layers)
    bad = [i for i in layers if not 0 <= i < len(stack)]
    if bad:
        raise HealError(f"train.layers: {bad} out of range for the pruned model's {len(stack)} layers")
    chosen = [stack[i] for i in layers]
    if train.norm:
        chosen.append(_final_norm(model.get_submodule(info.text_model), info.text_model))
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    for wanted, module, what in ((train.lm_head, head, "lm_head"), (train.embeddings, embed, "embeddings")):
        if wanted:
            if module is None:
                raise HealError(f"train.{what}: the model has no {what.replace('_', ' ')}; set train.{what}: false")
            chosen.append(module)
    model.requires_grad_(False)
    for module in chosen:
        module.requires_grad_(True)
    tied = head is not None and embed is not None and head.weight is embed.weight
    return {
        "layers": list(layers),
        "spec": train.layers,
        "lm_head": train.lm_head,
        "norm": train.norm,
        "embeddings": train.embeddings,
        "tied_embeddings": bool(tied and (train.lm_head or train.embeddings)),
    }


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters of ``model``, each shared tensor once (PEFT's own count for adapters,
    which also counts 4-bit weights at their real size)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    params = list(model.parameters())  # shared (tied) tensors appear once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
