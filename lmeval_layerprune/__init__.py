"""lmeval-layerprune: evaluate, choose, heal and ship depth-pruned LLMs with lm-eval.

Kept import-light (the start-up hook imports this package); the heavy pieces load
on first attribute access.
"""

__version__ = "0.1.0"

_LAZY = {
    "DropSpec": "lmeval_layerprune.core.spec",
    "PruningPlan": "lmeval_layerprune.core.plan",
    "LayerPruneError": "lmeval_layerprune.errors",
    "DropSpecError": "lmeval_layerprune.errors",
    "PrunedHFLM": "lmeval_layerprune.lmeval.hf",
    "prune_model": "lmeval_layerprune.core.slicing",
    "load_pruned_model": "lmeval_layerprune.checkpoint.load",
    "resolve_drop": "lmeval_layerprune.methods.resolve",
    "method_scores": "lmeval_layerprune.methods.resolve",
    "LayerMethod": "lmeval_layerprune.methods.registry",
    "register_method": "lmeval_layerprune.methods.registry",
    "embedded_model_dir": "lmeval_layerprune.core.embedded",
    "supported_model_types": "lmeval_layerprune.core.arch",
    "register": "lmeval_layerprune.lmeval.plugin",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lmeval_layerprune' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
