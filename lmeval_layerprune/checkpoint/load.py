"""Load a checkpoint with only the kept layers: the Python API of ``drop=``."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.core.collapse import apply_plan
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import load_only_kept_layers, pruned_config
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop


def load_pruned_model(
    pretrained: str,
    drop: Any = None,
    *,
    tokenizer: Any = None,
    calibration: Calibration | None = None,
    **from_pretrained_kwargs: Any,
) -> torch.nn.Module:
    """Load a causal LM with the layers named by ``drop`` removed (Python API).

    Args:
        pretrained: a checkpoint directory, a Hub id, or ``"embedded"``.
        drop: any ``drop=`` spec (see :mod:`lmeval_layerprune.core.spec`).
        tokenizer: used by methods that score hidden states (loaded from ``pretrained`` if omitted).
        calibration: the calibration text of methods that score hidden states (default: the bundled text).
        **from_pretrained_kwargs: passed to ``AutoModelForCausalLM.from_pretrained``
            (``dtype``, ``device_map``, ...).

    Returns:
        The pruned model; ``model.config.layer_pruning`` records the plan.
    """
    base_name = base_model_name(pretrained)
    pretrained = str(resolve_pretrained(pretrained))
    spec = parse_spec(drop)
    config = AutoConfig.from_pretrained(pretrained)
    if spec.is_noop:
        return AutoModelForCausalLM.from_pretrained(pretrained, **from_pretrained_kwargs)
    arch_for(config)
    parent = PruningPlan.from_config(config)
    if needs_model(spec):
        # the full model is loaded once: scored, then sliced in memory
        model = AutoModelForCausalLM.from_pretrained(pretrained, **from_pretrained_kwargs)
        plan = resolve_drop(
            model.config,
            spec,
            model=model,
            tokenizer=tokenizer or _tokenizer(pretrained),
            calibration=calibration,
            base_model=base_name,
        )
        return apply_plan(model, plan.on_parent(parent).drop, plan)
    plan = resolve_drop(config, spec, base_model=base_name)
    drop_idx = plan.on_parent(parent).drop
    with load_only_kept_layers(config, drop_idx):
        return AutoModelForCausalLM.from_pretrained(
            pretrained, config=pruned_config(config, drop_idx, plan), **from_pretrained_kwargs
        )


def _tokenizer(path: str) -> Any:
    return AutoTokenizer.from_pretrained(path)
