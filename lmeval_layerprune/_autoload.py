"""Start-up hook, run from ``lmeval_layerprune.pth`` in site-packages.

lm-eval 0.4.13 reads no plugin entry points, so the stock ``lm_eval`` CLI would
never see ``pruned-hf``. This module installs a tiny import hook: when (and only
when) lm-eval's registry or task manager module is imported, it runs
:mod:`lmeval_layerprune.lmeval.plugin` right after that module has executed. Nothing of
lm-eval, torch or this package's heavy modules is imported at interpreter start.

It must never break ``python``: every failure is swallowed (with one warning),
and ``LMEVAL_LAYERPRUNE_NO_AUTOLOAD=1`` turns it off.
"""

import os
import sys

_TARGETS = {
    "lm_eval.api.registry": "on_registry_imported",
    "lm_eval.tasks.manager": "on_task_manager_imported",
}


def _run(hook_name, module):
    try:
        from lmeval_layerprune.lmeval import plugin

        getattr(plugin, hook_name)(module)
    except Exception as exc:  # never break the importing program
        import warnings

        warnings.warn(f"lmeval-layerprune could not register with lm-eval ({exc!r})", stacklevel=2)


class _Finder:
    """A meta-path finder that only ever looks at two module names."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        hook_name = _TARGETS.get(fullname)
        if hook_name is None:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _Finder) or not hasattr(finder, "find_spec"):
                continue
            try:
                spec = finder.find_spec(fullname, path, target)
            except Exception:
                return None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original = getattr(loader, "exec_module", None)
        if original is None:
            return spec

        def exec_module(module, _original=original, _hook=hook_name):
            _original(module)
            _run(_hook, module)

        try:
            loader.exec_module = exec_module
        except Exception:
            return spec
        return spec

    @staticmethod
    def invalidate_caches():
        pass


def install():
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if os.environ.get("LMEVAL_LAYERPRUNE_NO_AUTOLOAD", "") not in ("", "0"):
        return
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    # lm-eval imported before us (unusual): register right away.
    for name, hook_name in _TARGETS.items():
        module = sys.modules.get(name)
        if module is not None:
            _run(hook_name, module)


try:
    install()
except Exception:
    pass
