"""The drafter of self-speculative decoding: the model itself with some layers skipped.

:func:`build_drafter` returns a second ``*ForCausalLM`` object whose embedding, final norm, head,
rotary tables and kept decoder layers are the verifier's own modules (no parameter is copied:
:func:`shared_storage` checks the storage pointers). Each kept layer is wrapped in
:class:`_DraftLayer`, which gives the layer its draft index (``layer_idx``) for the duration of its
forward, so the drafter keeps its own, shorter KV cache while the verifier keeps its full one.
transformers' assisted generation (``generate(assistant_model=drafter)``) drafts with it and
verifies with the full model, so the greedy output is the full model's greedy output.

``pruned-hf``'s ``draft=`` builds one; ``lmeval-prune speculate`` (:mod:`lmeval_layerprune.speed.speculate`)
measures and searches them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.hooks import add_hook_to_module

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import keep_from_drop, pruned_config
from lmeval_layerprune.errors import DraftError, DropSpecError
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import merges, needs_model, parse_spec, resolve_drop

#: draft tokens proposed per verification step (a constant schedule: see :func:`draft_generation_settings`)
DEFAULT_DRAFT_TOKENS = 4
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


# ------------------------------------------------------------------ the drafter


class _DraftLayer(torch.nn.Module):
    """A shared decoder layer that runs under its draft index (its own KV-cache slot)."""

    def __init__(self, layer: torch.nn.Module, draft_idx: int) -> None:
        super().__init__()
        self.inner = layer
        self.draft_idx = draft_idx
        self._indexed = [m for m in layer.modules() if hasattr(m, "layer_idx")]

    def __getattr__(self, name: str) -> Any:  # attention_type, ... of the wrapped layer
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        saved = [m.layer_idx for m in self._indexed]
        for m in self._indexed:
            m.layer_idx = self.draft_idx
        try:
            return self.inner(*args, **kwargs)
        finally:
            for m, idx in zip(self._indexed, saved, strict=True):
                m.layer_idx = idx


def _shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A new module object sharing ``module``'s children, parameters and buffers."""
    new = copy.copy(module)
    new._modules = type(module._modules)(module._modules)
    new._parameters = type(module._parameters)(module._parameters)
    new._buffers = type(module._buffers)(module._buffers)
    for name in _HOOK_DICTS:
        if name in module.__dict__:
            new.__dict__[name] = type(module.__dict__[name])(module.__dict__[name])
    if "forward" in new.__dict__:  # accelerate's device-map hook binds forward to the original object
        hook = new.__dict__.get("_hf_hook")
        if hook is None:
            raise DraftError(
                f"draft= cannot share {type(module).__name__}: its forward is patched by something other "
                "than accelerate; load the model without that wrapper"
            )
        for attr in ("forward", "_hf_hook", "_old_forward"):
            new.__dict__.pop(attr, None)
        add_hook_to_module(new, hook)
    return new


def base_causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers ``*ForCausalLM`` inside ``model`` (a PEFT wrapper's base model)."""
    if type(model).__name__.startswith("Peft") and callable(getattr(model, "get_base_model", None)):
        return model.get_base_model()  # LoRA layers stay inside the shared layers: the drafter uses them too
    return model


def build_drafter(model: torch.nn.Module, drop: Sequence[int], draft_tokens: int = DEFAULT_DRAFT_TOKENS) -> Any:
    """The drafter: ``model`` without the layers ``drop`` (indices of ``model``'s layers), sharing its weights.

    The verifier is not changed. The drafter is a separate ``*ForCausalLM`` object (its own config
    with ``num_hidden_layers`` and per-layer lists sliced, its own generation config) whose modules
    are the verifier's; each kept layer runs under its draft index, so the two keep separate KV caches.
    """
    target = base_causal_lm(model)
    info = arch_for(target.config)
    path = info.layers.split(".")
    layers = target.get_submodule(info.layers)
    n = len(layers)
    drop = tuple(sorted(set(drop)))
    if not drop:
        raise DraftError("the draft spec skips no layer; a drafter equal to the model cannot speed anything up")
    if len(drop) >= n or drop[0] < 0 or drop[-1] >= n:
        raise DraftError(f"draft layers {list(drop)} do not fit a model with {n} layers (0..{n - 1}, not all)")
    keep = keep_from_drop(n, drop)
    config = pruned_config(target.config, drop)
    config.__dict__.pop("layer_pruning", None)  # the drafter is not a pruned checkpoint
    drafter = _shallow(target)
    chain = [drafter]
    node = drafter
    for name in path[:-1]:
        child = _shallow(node._modules[name])
        node._modules[name] = child
        chain.append(child)
        node = child
    node._modules[path[-1]] = torch.nn.ModuleList([_DraftLayer(layers[i], new) for new, i in enumerate(keep)])
    for m in chain:
        if getattr(m, "config", None) is target.config:
            m.config = config
        if "has_sliding_layers" in m.__dict__:
            m.has_sliding_layers = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    gen = copy.deepcopy(target.generation_config)
    for key, value in draft_generation_settings(draft_tokens).items():
        setattr(gen, key, value)
    drafter.generation_config = gen
    drafter.draft_layers = drop
    return drafter


def draft_generation_settings(draft_tokens: int) -> dict[str, Any]:
    """The assistant settings the drafter carries: a constant draft length and no confidence cut-off
    (so acceptance follows from token agreement, see :func:`simulate_acceptance`)."""
    if int(draft_tokens) < 1:
        raise DraftError(f"draft_tokens must be at least 1, got {draft_tokens}")
    return {
        "num_assistant_tokens": int(draft_tokens),
        "num_assistant_tokens_schedule": "constant",
        "assistant_confidence_threshold": 0.0,
    }


def shared_storage(verifier: torch.nn.Module, drafter: torch.nn.Module) -> dict[str, int]:
    """Parameter and buffer storage of the drafter, and how much of it is not the verifier's own.

    Returns ``{"drafter_bytes", "verifier_bytes", "extra_bytes", "extra_tensors"}``; ``extra_bytes``
    is 0 when the drafter shares every tensor.
    """

    def storages(m: torch.nn.Module) -> dict[int, int]:
        out = {}
        for t in [*m.parameters(), *m.buffers()]:
            s = t.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
        return out

    v, d = storages(base_causal_lm(verifier)), storages(drafter)
    extra = {p: b for p, b in d.items() if p not in v}
    return {
        "drafter_bytes": sum(d.values()),
        "verifier_bytes": sum(v.values()),
        "extra_bytes": sum(extra.values()),
        "extra_tensors": len(extra),
    }


def resolve_draft(
    model: torch.nn.Module,
    spec: Any,
    tokenizer: Any = None,
    *,
    calibration: Calibration | None = None,
) -> tuple[int, ...]:
    """The layers of ``model`` (as loaded, i.e. after any ``drop``) that a draft spec skips.

    Same grammar and errors as ``drop`` (:class:`~lmeval_layerprune.core.spec.DropSpecError`, a ValueError);
    methods that score hidden states (``bi:``, ``angular:``) score ``model`` itself.
    """
    target = base_causal_lm(model)
    try:
        parsed = parse_spec(spec)
        if parsed.is_noop:
            raise DropSpecError(f"invalid draft spec {spec!r}: it skips no layer (a draft must skip at least one)")
        if merges(parsed):
            raise DraftError(
                f"draft spec {parsed.text!r} merges layers, which would change the verifier's own weights; a draft "
                "skips layers: give indices, a count (last:4) or a scoring method (angular:4)"
            )
        if needs_model(parsed) and tokenizer is None:
            raise DraftError(f"draft spec {parsed.text!r} needs a tokenizer to score the layers")
        plan = resolve_drop(target, parsed, model=target, tokenizer=tokenizer, calibration=calibration)
        return plan.on_parent(PruningPlan.from_config(target.config)).drop
    except DropSpecError as e:
        raise DropSpecError(str(e).replace("invalid drop spec", "invalid draft spec", 1)) from None
