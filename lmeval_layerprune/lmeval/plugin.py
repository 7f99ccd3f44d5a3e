"""Registration with lm-eval: model names and the bundled task folder.

Called automatically by the start-up hook (:mod:`lmeval_layerprune._autoload`) when
lm-eval's registry or task manager is imported, by ``lmeval-prune eval``, or by
hand with :func:`register`. Every step is idempotent.
"""

from __future__ import annotations

import functools
import inspect
from types import ModuleType
from typing import Any

from lmeval_layerprune.resources import tasks_dir

#: lm-eval model name -> "module:Class" (resolved lazily by lm-eval's registry).
MODELS = {
    "pruned-hf": "lmeval_layerprune.lmeval.hf:PrunedHFLM",
    "pruned-vllm": "lmeval_layerprune.lmeval.vllm:PrunedVLLM",
}


def register_models() -> None:
    """Add our model names to lm-eval's registry, keeping every built-in name visible."""
    import lm_eval.models  # noqa: F401  (registers the built-ins; our entries must not hide them)
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


def on_registry_imported(_module: ModuleType) -> None:
    """Hook: ``lm_eval.api.registry`` has just been executed."""
    register_models()


def on_task_manager_imported(module: ModuleType) -> None:
    """Hook: ``lm_eval.tasks.manager`` has just been executed; make our tasks visible."""
    add_task_folder(module.TaskManager)


def add_task_folder(task_manager_cls: Any) -> None:
    """Wrap ``TaskManager.__init__`` so the bundled tasks are indexed next to lm-eval's own.

    User ``include_path`` entries come after ours, so a user's task of the same name wins.
    """
    original = task_manager_cls.__init__
    if getattr(original, "_lmeval_layerprune", False):
        return

    ours = str(tasks_dir())
    sig = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(self, *args, **kwargs)
        if bound.arguments.get("include_defaults", True):
            given = bound.arguments.get("include_path")
            paths = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
            if ours not in map(str, paths):
                paths.insert(0, ours)
            bound.arguments["include_path"] = paths
        original(*bound.args, **bound.kwargs)

    __init__._lmeval_layerprune = True  # type: ignore[attr-defined]
    task_manager_cls.__init__ = __init__


def register() -> None:
    """Register models and tasks now (for environments where the start-up hook is off)."""
    register_models()
    from lm_eval.tasks import manager

    add_task_folder(manager.TaskManager)
