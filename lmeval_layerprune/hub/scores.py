"""The card's numbers from lm-eval results: ``model-index`` entries, score tables (cells only; the
markup is in the template) and the measured findings the limitations speak about."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmeval_layerprune.errors import PublishError
from lmeval_layerprune.lmeval.results import GENERATIVE, LIKELIHOOD, Run, load_runs, merge_runs

_TASK_TYPE = {
    "generate_until": "text-generation",
    "multiple_choice": "multiple-choice",
    "loglikelihood": "text-generation",
    "loglikelihood_rolling": "text-generation",
}


def load_eval(paths: Sequence[str | Path]) -> Run | None:
    """The lm-eval results of one model: every run under ``paths`` merged (a later run's score of a
    task replaces an earlier one's). ``None`` when ``paths`` is empty; an error for runs of several
    models (results in more than one folder)."""
    if not paths:
        return None
    runs = load_runs(list(paths))
    folders = sorted({str(r.path.parent) for r in runs if r.path is not None})
    if len(folders) > 1:
        raise PublishError(
            f"the results given hold results of several models ({', '.join(folders)}); "
            "pass the folder or file of one model"
        )
    return merge_runs(runs)


def eval_results(run: Run) -> list[Any]:
    """``huggingface_hub.EvalResult`` entries (the card's ``model-index``) for every score in ``run``."""
    from huggingface_hub import EvalResult

    out = []
    for s in run.scores:
        cfg = run.configs.get(s.task) or {}
        out.append(
            EvalResult(
                task_type=_TASK_TYPE.get(s.output_type or "", "text-generation"),
                task_name=s.task,
                dataset_type=cfg.get("dataset_path") or s.task,
                dataset_name=s.task,
                dataset_config=cfg.get("dataset_name"),
                dataset_split=cfg.get("test_split") or cfg.get("validation_split"),
                dataset_args={"num_few_shot": s.num_fewshot} if s.num_fewshot is not None else None,
                metric_type=s.metric,
                metric_name=s.label,
                metric_value=round(s.value, 6),
                verified=False,
                source_name="lm-evaluation-harness",
                source_url="https://github.com/EleutherAI/lm-evaluation-harness",
            )
        )
    return out


def rel_change(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.0f}%" if old else "n/a"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _by_label(run: Run) -> dict[tuple[str, str], Any]:
    return {(s.task, s.label): s for s in run.scores}


def score_tables(columns: Sequence[tuple[str, Run]], own: Run | None, base: Run | None) -> list[dict[str, Any]]:
    """One table per kind (likelihood, generative): rows of cells, markup in the template."""
    maps = [(label, _by_label(run)) for label, run in columns]
    keys = list(dict.fromkeys(k for _, m in maps for k in m))
    own_m = _by_label(own) if own is not None else None
    base_m = _by_label(base) if base is not None else None
    tables = []
    for kind in (LIKELIHOOD, GENERATIVE):
        rows = []
        for key in keys:
            ref = next(m[key] for _, m in maps if key in m)
            if ref.kind != kind:
                continue
            change = None
            if own_m is not None and base_m is not None:
                change = rel_change(own_m[key].value, base_m[key].value) if key in own_m and key in base_m else "–"
            rows.append(
                {
                    "task": ref.task,
                    "group": ref.group,
                    "metric": ref.label,
                    "lower_is_better": ref.higher_is_better is False,
                    "shots": "–" if ref.num_fewshot is None else str(ref.num_fewshot),
                    "n_items": "–" if ref.n is None else str(ref.n),
                    "values": [_fmt(m[key].value if key in m else None) for _, m in maps],
                    "change": change,
                }
            )
        if rows:
            tables.append({"kind": kind, "columns": [label for label, _ in maps], "rows": rows})
    return tables


def _retention(own: Run, base: Run, kind: str) -> tuple[float | None, list[tuple[Any, Any]]]:
    base_m = _by_label(base)
    pairs = []
    for s in own.scores:
        b = base_m.get((s.task, s.label))
        if b is None or s.kind != kind or s.group or not b.value:
            continue
        pairs.append((s, b))
    if not pairs:
        return None, []
    ratios = [
        (s.value / b.value) if s.higher_is_better is not False else (b.value / s.value if s.value else 0.0)
        for s, b in pairs
    ]
    return sum(ratios) / len(ratios), pairs


def findings(own: Run | None, base: Run | None, pruned: Run | None, healed: bool) -> dict[str, Any]:
    """The measured facts the "Read this first" line and the limitations speak about."""
    out: dict[str, Any] = {"measured": own is not None and base is not None}
    if out["measured"]:
        gen, gen_pairs = _retention(own, base, GENERATIVE)
        lik, _ = _retention(own, base, LIKELIHOOD)
        out["gen"], out["lik"], out["gen_tasks"] = gen, lik, len(gen_pairs)
        worst = sorted(gen_pairs, key=lambda p: p[0].value / p[1].value)[:3]
        out["worst"] = [
            {"task": s.task, "metric": s.label, "base": f"{b.value:.3f}", "own": f"{s.value:.3f}"}
            | {"change": rel_change(s.value, b.value)}
            for s, b in worst
        ]
        if healed and pruned is not None:
            out["gen_before_healing"] = _retention(pruned, base, GENERATIVE)[0]
    out["limit"] = own.limit if own is not None else None
    return out
