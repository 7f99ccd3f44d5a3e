"""lmeval-layerprune: evaluate, choose, heal and ship depth-pruned LLMs with lm-eval.

Kept import-light (the start-up hook imports this package); the heavy pieces load
on first attribute access.
"""

__version__ = "0.1.0"

_LAZY = {
    "DropSpec": "lmeval_layerprune.spec",
    "DropSpecError": "lmeval_layerprune.spec",
    "PrunedHFLM": "lmeval_layerprune.lm",
    "prune_model": "lmeval_layerprune.slicing",
    "load_pruned_model": "lmeval_layerprune.slicing",
    "compute_scores": "lmeval_layerprune.importance",
    "embedded_model_dir": "lmeval_layerprune.embedded",
    "supported_model_types": "lmeval_layerprune.arch",
    "register": "lmeval_layerprune.plugin",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lmeval_layerprune' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
