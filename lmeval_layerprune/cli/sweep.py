"""``lmeval-prune sweep``: a grid of (method, ratio[, healed]) cells, each one lm-eval run."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.errors import LayerPruneError, SweepError
from lmeval_layerprune.methods.registry import method_names
from lmeval_layerprune.sweep.grid import (
    DEFAULT_METHODS,
    DEFAULT_RATIOS,
    DEFAULT_TASKS,
    parse_heal_cells,
    parse_methods,
    parse_ratios,
)
from lmeval_layerprune.sweep.run import run_sweep
from lmeval_layerprune.sweep.settings import EXECUTORS, ExecutorSettings, SweepSettings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        description="Evaluate MODEL unpruned and with each --methods choice of layers removed at each --ratios "
        "fraction, as one lm-eval run per cell saved in lm-eval's output layout with per-item samples "
        "(OUT/<cell>/<model>/results_*.json). One loaded model serves every cell (layers are swapped in place); "
        "the unpruned baseline is evaluated once. iterative/ppl run one greedy search to the largest ratio and "
        "take prefixes of its order for the smaller ones. With --recipe, the cells named by --heal are also "
        "healed and evaluated. Rerun the same command after an interruption: finished cells are kept. "
        "--executor ray fans the cells over Ray workers that each hold the model (one machine or a cluster).",
        epilog=textwrap.dedent(
            """\
            examples:
              lmeval-prune sweep embedded --methods last,bi,angular --ratios 0,0.1,0.2,0.3 \\
                  --tasks layerprune_probes --limit 50 --out runs/smollm2
              lmeval-prune sweep embedded --methods last --ratios 0,0.2 --recipe demo-selfgen-lora \\
                  --heal last:0.2 --tasks arith_probe_add_1d --metadata '{"n": 200}' --out runs/healed
              lmeval-prune sweep embedded --methods last --ratios 0,0.2 --heal last:0.2 \\
                  --recipe demo-selfgen-lora,demo-original-lora --heal-override data=mixed \\
                  --heal-override budget.tokens=4096 --out runs/recovery
              lmeval-prune sweep embedded --methods last,angular --ratios 0,0.1,0.2 --limit 50 \\
                  --executor ray --workers 2 --out runs/ray     # two workers, each holding the model
              lmeval-prune report runs/smollm2          # tables, intervals and plots of the grid
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded'")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated layer choices: {', '.join(method_names())} (default: {','.join(DEFAULT_METHODS)})",
    )
    p.add_argument(
        "--ratios",
        default=",".join(f"{r:g}" for r in DEFAULT_RATIOS),
        help="comma-separated fractions of the layers to remove, each in [0, 1), counted as drop=last:R%% counts "
        "(round half up); 0 is the shared unpruned baseline (default: 0,0.1,0.2,0.3)",
    )
    p.add_argument(
        "--tasks", default=",".join(DEFAULT_TASKS), help="lm-eval tasks or groups (default: layerprune_probes)"
    )
    p.add_argument("--limit", type=float, default=None, help="items per task, as lm_eval --limit (default: all)")
    p.add_argument(
        "--token-agreement",
        type=int,
        default=0,
        metavar="N",
        help="also measure each in-memory cell's token agreement with the parent: the share of the parent's "
        "greedy tokens on N bundled prompts that the pruned model predicts as its top-1 (teacher-forced; "
        "a continuous, low-variance fidelity score the report shows beside the task scores; default: off)",
    )
    p.add_argument(
        "--metadata",
        default=None,
        help="task metadata as JSON, as lm_eval --metadata, e.g. '{\"n\": 300}' for bigger probe sets",
    )
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--include-path", default=None, help="folder of extra task YAMLs")
    p.add_argument("--out", required=True, help="sweep folder (new, or one this command wrote: it is completed)")
    p.add_argument("--dtype", default="float32", help="dtype to run the model in (default: float32)")
    p.add_argument("--batch-size", default="8", help="lm-eval batch size (default: 8)")
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--calib", default=None, help="calibration file for bi / angular / ppl (default: bundled text)")
    p.add_argument("--calib-samples", type=int, default=None, help="calibration texts (default: 32)")
    g = p.add_argument_group("greedy methods (iterative, ppl)")
    g.add_argument("--search-tasks", default=None, help="tasks the iterative search scores (default: --tasks)")
    g.add_argument("--search-limit", type=int, default=100, help="items per task for the search (default: 100)")
    g.add_argument(
        "--selection-seed", type=int, default=None, help="generator seed of the selection split (default: select's)"
    )
    g.add_argument("--protect", default="0", help="layers the search never removes (default: 0; '' for none)")
    g = p.add_argument_group("healing")
    g.add_argument(
        "--recipe",
        default=None,
        help="recovery recipe(s), comma-separated; heals the cells named by --heal once with each (several: "
        "cells named <cell>-healed-<recipe>, e.g. demo-selfgen-lora,demo-original-lora for the paper's comparison)",
    )
    g.add_argument(
        "--heal",
        default=None,
        metavar="METHOD:RATIO[,...]",
        help="cells to heal (default with --recipe: every pruned cell)",
    )
    g.add_argument(
        "--heal-override", action="append", default=[], metavar="SECTION.KEY=VALUE", help="recipe override (repeatable)"
    )
    g = p.add_argument_group("where the cells run (docs/distributed.md)")
    add_dataclass_flags(g, ExecutorSettings, choices={"executor": EXECUTORS})
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    ratios = parse_ratios(args.ratios)
    metadata: dict[str, Any] = {}
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as e:
            raise SweepError(f"--metadata {args.metadata!r} is not JSON: {e}") from None
        if not isinstance(metadata, dict):
            raise SweepError(f"--metadata must be a JSON object, got {args.metadata!r}")
    try:
        protect = tuple(int(x) for x in args.protect.split(",") if x.strip())
    except ValueError:
        raise SweepError(f"--protect {args.protect!r} is not a comma-separated list of layer indices") from None
    if args.heal and not args.recipe:
        raise LayerPruneError("--heal names cells to heal; it needs --recipe")
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    settings = SweepSettings(
        model=args.model,
        methods=methods,
        ratios=ratios,
        tasks=tuple(t for t in args.tasks.split(",") if t),
        limit=limit,
        metadata=metadata,
        num_fewshot=args.num_fewshot,
        include_path=args.include_path,
        dtype=args.dtype,
        batch_size=args.batch_size,
        device=args.device,
        calib=args.calib,
        calib_samples=args.calib_samples,
        search_tasks=tuple(t for t in args.search_tasks.split(",") if t) if args.search_tasks else None,
        search_limit=args.search_limit,
        selection_seed=args.selection_seed,
        protect=protect,
        recipe=args.recipe,
        heal_cells=tuple(parse_heal_cells(args.heal, methods, ratios)) if args.recipe else (),
        heal_overrides=tuple(args.heal_override),
        token_agreement=args.token_agreement,
    )
    executor = dataclass_from_args(ExecutorSettings, args)
    manifest = run_sweep(settings, args.out, progress=not args.no_progress, executor=executor)
    print(f"\nsweep: {len(manifest['cells'])} cells in {args.out}")
    for name, cell in sorted(manifest["cells"].items()):
        print(f"  {name:<24} drop {cell['plan'].get('drop')}  -> {cell['results']}")
    print(f"report: lmeval-prune report {args.out}")
    return 0
