"""The main job (``lmeval-prune demo`` / ``./run.sh``): the study, small, on one model.

1. ``sweep``: evaluate the model on a generative / multiple-choice pair of probes for arithmetic
   and for brackets, unpruned and with a fifth of its layers removed two ways (the last ones;
   the most similar block by angular distance), one lm-eval run per cell on one loaded model;
2. heal the ``last`` cell with a bundled recovery recipe (the unpruned parent answers prompts,
   LoRA trains on its answers) and evaluate the healed checkpoint as one more cell;
3. ``bench``: decode/prefill speed and memory of each pruned shape beside the parent (one load);
4. ``report``: retention (score / unpruned score) per task with paired-bootstrap 95% intervals,
   per task type, the classification/generation gap, the retention plot and retention against
   the measured speed-up;
5. write the healed checkpoint's model card from its plan, recipe, results and bench.

Everything lands under ``--output-dir`` (default ``lmeval_layerprune_demo``)::

    sweep/<cell>/<model>/results_*.json, samples_*.jsonl   lm-eval's own layout, one folder per cell
    sweep/checkpoints/<cell>-healed/                        the healed checkpoint and its README.md card
    bench/layer_pruning_bench.json, layer_pruning_bench.png   speed and memory, parent vs pruned
    report/report.md, report.json, retention.png, retention_tasks.png, tradeoff.png

Rerunning the same command reuses every finished cell (the sweep is resumable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import BENCH_FILE, PLOT_FILE, REPORT_FILE, TASK_PLOT_FILE, TRADEOFF_PLOT_FILE
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.hub import write_card
from lmeval_layerprune.report.stats import GENERATIVE, LIKELIHOOD
from lmeval_layerprune.report.write import check_report, write_report
from lmeval_layerprune.speed.bench import BenchSettings, run_bench
from lmeval_layerprune.speed.bench_output import bench_folder
from lmeval_layerprune.speed.bench_result import QUICK_WORKLOAD, load_bench
from lmeval_layerprune.sweep.run import run_sweep
from lmeval_layerprune.sweep.settings import SweepSettings

DEMO_MODEL = "embedded"
#: a generative probe and its multiple-choice twin on the same items, for arithmetic and for brackets
DEMO_TASKS = "arith_probe_mul_1d,arith_probe_mc_mul_1d,paren_probe,paren_probe_mc"
DEMO_METHODS = ("last", "angular")
DEMO_RATIOS = (0.0, 0.2)
DEMO_RECIPE = "demo-selfgen-lora"
DEMO_LIMIT = 40
#: kept for callers of the earlier demo (drop specs of its pruned runs)
DEMO_DROPS = ("last:20%", "angular:20%")


@dataclass
class DemoSettings:
    """What the main job runs (``lmeval-prune demo`` flags map one to one)."""

    model: str = DEMO_MODEL
    tasks: tuple[str, ...] = tuple(DEMO_TASKS.split(","))
    methods: tuple[str, ...] = DEMO_METHODS
    ratios: tuple[float, ...] = DEMO_RATIOS
    limit: float | None = DEMO_LIMIT
    heal_recipe: str | None = DEMO_RECIPE
    output_dir: str = "lmeval_layerprune_demo"
    device: str = "cpu"
    batch_size: str = "16"
    progress: bool = True


def run_demo(settings: DemoSettings | None = None) -> dict[str, Any]:
    """Run the pipeline; returns ``{"sweep", "report", "card", "summary", "bench"}`` (paths and summary lines)."""
    d = settings or DemoSettings()
    model, methods, limit, device, progress = d.model, d.methods, d.limit, d.device, d.progress
    out = Path(d.output_dir)
    sweep_dir, report_dir = out / "sweep", out / "report"
    ratios = tuple(sorted(float(r) for r in d.ratios))
    if 0.0 not in ratios:
        ratios = (0.0, *ratios)
    heal_at = max(ratios)
    heal_cells = ((methods[0], heal_at),) if d.heal_recipe and heal_at > 0 else ()
    sweep_settings = SweepSettings(
        model=model,
        methods=tuple(methods),
        ratios=ratios,
        tasks=tuple(d.tasks),
        limit=limit,
        batch_size=str(d.batch_size),
        device=device,
        recipe=d.heal_recipe if heal_cells else None,
        heal_cells=heal_cells,
    )
    bench_dir = out / "bench"
    # what the last steps would refuse (a file of the user's under a bench or report name), refused now
    bench_folder(bench_dir)
    check_report(report_dir, tradeoff=True)
    print(f"=== 1-2. sweep: {', '.join(methods)} at {', '.join(f'{r:g}' for r in ratios)} -> {sweep_dir}", flush=True)
    manifest = run_sweep(sweep_settings, sweep_dir, progress=progress)

    pruned_cells = {name: c for name, c in manifest["cells"].items() if c["plan"]["drop"] and not c.get("checkpoint")}
    print(f"\n=== 3. bench: speed and memory of {', '.join(pruned_cells)} beside the parent -> {bench_dir}", flush=True)
    drops = tuple(format_indices(c["plan"]["drop"]) for c in pruned_cells.values())
    bench = run_bench(BenchSettings(model, drops, QUICK_WORKLOAD, device=device, out=str(bench_dir), progress=progress))
    bench_file = bench_dir / BENCH_FILE
    measured = load_bench(bench_file)

    print(f"\n=== 4. report -> {report_dir}", flush=True)
    report, _ = write_report([sweep_dir], report_dir, bench=bench_file)

    card = None
    healed = [name for name, cell in manifest["cells"].items() if cell.get("checkpoint")]
    if healed:
        name = healed[0]
        cell = manifest["cells"][name]
        pruned = name.removesuffix("-healed")
        print(f"\n=== 5. model card of {cell['checkpoint']}", flush=True)
        card = write_card(
            cell["checkpoint"],
            bench=bench_file,
            results=[cell["results"]],
            base_results=[manifest["cells"]["base"]["results"]],
            pruned_results=[manifest["cells"][pruned]["results"]],
        )

    summary = report.summary_lines()
    print("\n=== outputs")
    print(f"sweep (lm-eval results, one folder per cell): {sweep_dir}")
    for name, cell in sorted(manifest["cells"].items()):
        print(f"  {name:<22} layers removed {cell['plan']['drop']}")
    print(f"report: {report_dir / REPORT_FILE}")
    print(f"plots: {report_dir / PLOT_FILE}, {report_dir / TASK_PLOT_FILE}, {report_dir / TRADEOFF_PLOT_FILE}")
    print(f"bench: {bench_file}")
    if card is not None:
        print(f"healed checkpoint: {Path(card).parent}  (model card: {card})")
    print(f"\n=== summary ({limit} items per task; 95% paired-bootstrap intervals)")
    print(_type_table(report))
    for line in summary:
        print(f"- {line}")
    for variant in measured.pruned:  # what pruning buys, measured
        print(f"- speed: {measured.summary(variant)}")
    return {"sweep": sweep_dir, "report": report_dir, "card": card, "summary": summary, "bench": bench}


def _type_table(report: Any) -> str:
    lines = ["| run | classification retention | generative retention |", "|---|---:|---:|"]
    for info in report.infos:
        t = report.types.get(info.label, {})
        cls = t[LIKELIHOOD].retention.fmt() if LIKELIHOOD in t else "-"
        gen = t[GENERATIVE].retention.fmt() if GENERATIVE in t else "-"
        lines.append(f"| {info.label} | {cls} | {gen} |")
    return "\n".join(lines)
