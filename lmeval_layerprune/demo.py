"""The main job (``lmeval-prune demo`` / ``./run.sh``): the whole pipeline, small, on one model.

1. evaluate the model on the probe tasks, unpruned and with each drop spec
   (default: ``last:25%`` and the similarity-chosen ``angular:25%``);
2. heal the first pruned model with a bundled recovery recipe (self-generated responses
   from the unpruned parent, then LoRA) and evaluate it the same way;
3. write the healed checkpoint's model card from the plan, the recipe and the results;
4. print (and save as ``summary.md``) one table: base versus each pruned model versus healed.

Every run's lm-eval results are saved as ``<output-dir>/eval/<name>/results_demo.json``; the healed
checkpoint (with its model card) is ``<output-dir>/healed-<spec>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_MODEL = "embedded"
DEMO_TASKS = "layerprune_probes"
DEMO_DROPS = ("last:25%", "angular:25%")
DEMO_RECIPE = "demo-selfgen-lora"
DEMO_LIMIT = 10


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def evaluate(
    pretrained: str, drop: str, tasks: Sequence[str], limit: float | None, device: str, batch_size: str
) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` with ``pruned-hf`` (greedy, as the tasks say)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from .plugin import register

    register()
    return lm_eval.simple_evaluate(
        model="pruned-hf",
        model_args={"pretrained": pretrained, "drop": drop, "dtype": "float32"},
        tasks=list(tasks),
        limit=limit,
        device=device,
        batch_size=batch_size,
        task_manager=TaskManager(),
    )


def _save(results: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results_demo.json"
    data = {k: v for k, v in results.items() if k != "samples"}
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def headline(results: dict[str, Any]) -> dict[str, float]:
    """``task/metric -> value`` for every reported metric (groups included, stderr excluded)."""
    out: dict[str, float] = {}
    for section in ("groups", "results"):
        for task, metrics in results.get(section, {}).items():
            for metric, value in metrics.items():
                if metric.startswith("sample_len") or "_stderr" in metric:
                    continue  # lm-eval's item counts and standard errors are not scores
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.setdefault(f"{task}/{metric.split(',')[0]}", float(value))
    return out


def format_table(scores: dict[str, dict[str, float]], keys: Sequence[str] | None = None) -> str:
    """A Markdown table: one row per ``task/metric``, one column per run."""
    labels = list(scores)
    keys = list(keys) if keys is not None else sorted({k for s in scores.values() for k in s})
    lines = ["| task/metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for k in keys:
        cells = [f"{scores[lbl][k]:.3f}" if k in scores[lbl] else "-" for lbl in labels]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def top_level(results: dict[str, Any], tasks: Sequence[str]) -> list[str]:
    """The requested tasks, with a requested group replaced by its direct members."""
    members = results.get("group_subtasks", {})
    out: list[str] = []
    for task in tasks:
        out.extend(members.get(task) or [task])
    return out


def run_demo(
    model: str = DEMO_MODEL,
    *,
    tasks: Sequence[str] = (DEMO_TASKS,),
    drops: Sequence[str] = DEMO_DROPS,
    limit: float | None = DEMO_LIMIT,
    heal_recipe: str | None = DEMO_RECIPE,
    output_dir: str | Path = "lmeval_layerprune_demo",
    device: str = "cpu",
    batch_size: str = "8",
) -> dict[str, dict[str, float]]:
    """Run the pipeline; return ``run label -> task/metric -> score`` (also written to disk)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, dict[str, float]] = {}
    files: dict[str, Path] = {}
    top: list[str] = []
    runs = [("base", "none"), *[(d, d) for d in drops]]
    for label, drop in runs:
        print(f"\n=== {model} ({'unpruned' if drop == 'none' else 'drop=' + drop}) ===", flush=True)
        results = evaluate(model, drop, tasks, limit, device, batch_size)
        files[label] = _save(results, out / "eval" / _slug(label))
        scores[label] = headline(results)
        top = top or top_level(results, tasks)
        print(f"results: {files[label]}", flush=True)

    if heal_recipe and drops:
        from .heal import heal
        from .publish import write_card

        heal_drop = drops[0]
        healed_dir = out / f"healed-{_slug(heal_drop)}"  # one per spec: rerunning resumes or reuses it
        label = f"{heal_drop} healed"
        print(f"\n=== healing drop={heal_drop} with the {heal_recipe!r} recipe ===", flush=True)
        heal(heal_recipe, model, healed_dir, drop=heal_drop)
        print(f"\n=== {model} (drop={heal_drop}, healed: {healed_dir}) ===", flush=True)
        results = evaluate(str(healed_dir), "none", tasks, limit, device, batch_size)
        files[label] = _save(results, out / "eval" / healed_dir.name)
        scores[label] = headline(results)
        card = write_card(
            healed_dir,
            results=[files[label]],
            base_results=[files["base"]],
            pruned_results=[files[heal_drop]],
        )
        print(f"model card: {card}", flush=True)

    keys = [k for k in sorted({k for s in scores.values() for k in s}) if k.split("/")[0] in top]
    table = format_table(scores, keys)
    full = format_table(scores)
    (out / "summary.md").write_text(f"# lmeval-prune demo: {model}\n\n{table}\n\n## Every metric\n\n{full}\n")
    print(f"\n=== summary (limit {limit} items per task; every metric in {out / 'summary.md'}) ===")
    print(table)
    return scores
