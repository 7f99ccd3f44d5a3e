"""The probe metrics as Hugging Face ``evaluate`` modules, for use outside lm-eval.

Every module computes what the bundled lm-eval tasks report, through the same code
(:mod:`lmeval_layerprune.metrics.compute`, which calls :mod:`lmeval_layerprune.probes`). They
load from the installed package, offline::

    import evaluate
    from lmeval_layerprune.metrics import metric_path

    rep = evaluate.load(metric_path("rep_n"))
    rep.compute(predictions=["the answer is 5 the answer is 5 the answer is 5", "ok"])
    # {'rep_2': 0.636..., 'rep_2_n': 1, 'rep_3': ..., 'rep_4': 0.555..., 'rep_4_n': 1}

``evaluate`` itself is optional: :data:`COMPUTE` holds the same functions without it.
"""

from __future__ import annotations

from pathlib import Path

from .compute import COMPUTE

_HERE = Path(__file__).resolve().parent
#: the names of the bundled ``evaluate`` modules
METRICS: tuple[str, ...] = tuple(COMPUTE)


def metric_path(name: str) -> str:
    """The folder of the bundled ``evaluate`` module ``name``, for ``evaluate.load(...)``."""
    if name not in COMPUTE:
        raise ValueError(f"unknown probe metric {name!r}; bundled: {', '.join(METRICS)}")
    path = _HERE / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(f"the evaluate module {name!r} is missing from this installation ({path})")
    return str(path)


__all__ = ["COMPUTE", "METRICS", "metric_path"]
