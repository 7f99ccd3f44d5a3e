"""Execute model-written programs inside an lm-eval task and say *why* each one failed.

:class:`ExecuteFilter` is an lm-eval filter: it builds one program per response from a
template over the document's fields, classifies the model's part with
:func:`~lmeval_layerprune.probes.brackets.classify_python` (a program that does not parse
is never run), runs the rest in the sandbox in parallel, and replaces each response with a
record. :func:`process_results` turns a record into one 0/1 value per :data:`CATEGORIES`
entry (``pass@1`` for ``passed``), so the task reports the share of each failure kind.

A task using it must set ``unsafe_code: true`` (lm-eval then refuses to run it without
``--confirm_run_unsafe_code``); the filter checks the opt-in again before running anything,
so reusing it in a task that forgot the flag still cannot run code unconfirmed.
"""

from __future__ import annotations

from typing import Any

from lmeval_layerprune.probes.brackets import classify_python
from lmeval_layerprune.probes.sandbox import ExecutionResult, Limits, require_code_execution_opt_in, run_programs

#: Outcome categories, in the order they are reported.
CATEGORIES = ("passed", "bracket_error", "syntax_error", "name_error", "assertion_error", "timeout", "other_error")
#: The lm-eval metric name of each category.
METRIC_NAMES = {c: ("pass@1" if c == "passed" else c) for c in CATEGORIES}


def categorize(result: ExecutionResult) -> str:
    """The category of a program that parsed and was run."""
    if result.passed:
        return "passed"
    if result.status == "timeout":
        return "timeout"
    if result.status == "exception":
        if result.exception in ("NameError", "UnboundLocalError"):
            return "name_error"
        if result.exception == "AssertionError":
            return "assertion_error"
        if result.exception in ("SyntaxError", "IndentationError", "TabError"):
            return "syntax_error"  # e.g. from exec/eval inside the program
    return "other_error"


class ExecuteFilter:
    """lm-eval filter that runs each response as a program and records the outcome.

    ``program`` and ``source`` are ``str.format`` templates over the document's fields plus
    ``completion`` (the response): ``program`` is what runs, ``source`` the part whose
    syntax is classified (default: the same). Per-document limits can come from the
    documents (fields ``exec_timeout``, ``exec_memory_mb``), so task metadata sets them;
    ``workers`` defaults to the CPU count.
    """

    def __init__(
        self,
        program: str = "{prompt}{completion}",
        source: str | None = None,
        timeout: float = 10.0,
        memory_mb: int = 1024,
        workers: int | None = None,
        task: str = "this task",
        **_: Any,
    ) -> None:
        self.program, self.source = program, source or program
        self.timeout, self.memory_mb, self.workers, self.task = timeout, memory_mb, workers, task

    def _limits(self, docs: list[dict]) -> Limits:
        doc = docs[0] if docs else {}
        timeout = float(doc.get("exec_timeout", self.timeout))
        return Limits(
            timeout=timeout, cpu_seconds=max(1, int(timeout)), memory_mb=int(doc.get("exec_memory_mb", self.memory_mb))
        )

    def apply(self, resps: list[list[str]], docs: list[dict]) -> list[list[dict[str, Any]]]:
        require_code_execution_opt_in(self.task)
        records: list[list[dict[str, Any]]] = []
        to_run: list[tuple[int, int, str]] = []
        for i, (resp, doc) in enumerate(zip(resps, docs, strict=True)):
            row: list[dict[str, Any]] = []
            for j, completion in enumerate(resp):
                fields = {**doc, "completion": completion}
                report = classify_python(self.source.format(**fields))
                if report.kind != "ok":
                    category = "bracket_error" if report.is_bracket_error else "syntax_error"
                    row.append({"category": category, "bracket": report.kind, "message": report.message})
                else:
                    row.append({"category": None, "bracket": "ok", "message": ""})
                    to_run.append((i, j, self.program.format(**fields)))
            records.append(row)
        results = run_programs([p for _, _, p in to_run], self._limits(docs), workers=self.workers, desc=self.task)
        for (i, j, _), result in zip(to_run, results, strict=True):
            records[i][j].update(
                category=categorize(result), status=result.status, exception=result.exception, message=result.message
            )
        return records


def process_results(doc: dict, results: list[Any]) -> dict[str, float]:
    """lm-eval ``process_results``: one 0/1 value per category for the first response."""
    record = results[0]
    if isinstance(record, list):  # unfiltered repeats
        record = record[0]
    return {METRIC_NAMES[c]: float(record["category"] == c) for c in CATEGORIES}
