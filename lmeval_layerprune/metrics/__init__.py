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
from typing import Any

from lmeval_layerprune.metrics.compute import COMPUTE

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


#: where the metrics come from: the paper's public code
PAPER_CODE = "https://github.com/safal312/on-the-limits-of-layer-pruning"


def metric_info(description: str, inputs_description: str, citation: str, **features: str) -> Any:
    """The ``evaluate.MetricInfo`` every bundled module returns from ``_info``.

    ``features`` name each input's type as ``datasets.Value`` spells it (``predictions="string"``);
    a trailing ``[]`` makes it a sequence (``predictions="float64[]"``).
    """
    import datasets
    import evaluate

    def feature(kind: str) -> Any:
        return datasets.Sequence(datasets.Value(kind[:-2])) if kind.endswith("[]") else datasets.Value(kind)

    return evaluate.MetricInfo(
        module_type="metric",
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features({name: feature(kind) for name, kind in features.items()}),
        reference_urls=[PAPER_CODE],
    )


__all__ = ["COMPUTE", "METRICS", "PAPER_CODE", "metric_info", "metric_path"]
