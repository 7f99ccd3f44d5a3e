"""``lmeval-prune select``: choose which layers to remove. The flags that determine the result are
generated from :class:`lmeval_layerprune.search.select.SelectionSettings`; the others (where to write,
how to search) do not change the journal."""

from __future__ import annotations

import argparse
import sys

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.core.cluster import EXECUTORS, ClusterSettings
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.methods.registry import KINDS, method_names
from lmeval_layerprune.search.select import SelectionSettings, describe_round, select_layers


def _methods_by_kind() -> str:
    """``greedy: iterative, ppl; per-layer: bi, ...`` from the registry."""
    parts = [f"{kind}: {', '.join(method_names(kind))}" for kind in KINDS if method_names(kind)]
    return "; ".join(parts) + " (`lmeval-prune methods` describes them)"


HELP = {
    "model": "checkpoint directory, Hub id, or 'embedded'",
    "n": "how many layers to remove",
    "tasks": "lm-eval tasks/groups for iterative, comma-separated",
    "include_path": "folder of extra lm-eval task YAMLs for --tasks (as lm_eval's --include_path)",
    "limit": "items per task for iterative",
    "protect": "greedy methods: comma-separated layers never removed ('' for none)",
    "selection_seed": "generator seed of the selection split",
    "calib": "calibration file for ppl and the methods that score hidden states (default: bundled text)",
    "calib_samples": "calibration texts for ppl and the methods that score hidden states",
    "dtype": "dtype to run the model in",
    "batch_size": "lm-eval batch size",
    "chunk_size": "iterative: items per task scored at a time, the early stop's granularity",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        description="Choose N layers to remove from MODEL and write a plan JSON usable as drop=plan:PATH. "
        "iterative: greedy search scored by lm-eval tasks on a selection split (a different generator seed); "
        "ppl: greedy search on calibration perplexity; the other methods choose in one pass. "
        "Greedy searches are resumable: rerun the same command after an interruption. "
        "--executor ray measures each round's candidates on Ray workers that each hold the model (the same plan).",
    )
    add_dataclass_flags(
        p,
        SelectionSettings,
        help={**HELP, "method": _methods_by_kind()},
        choices={"method": method_names()},
        positional=("model",),
    )
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--out", default="plan.json", help="plan JSON to write (default: plan.json)")
    p.add_argument("--journal", default=None, help="resumable journal (default: <out>.journal.jsonl)")
    p.add_argument("--plot", default=None, help="PNG of the scores to write")
    p.add_argument(
        "--race",
        action="store_true",
        help="greedy methods: successive halving per round (all candidates on 1/9 of the items, "
        "the best third on 1/3, the best third of those on all); approximate: may differ from the exact plan",
    )
    p.add_argument(
        "--exhaustive",
        action="store_true",
        help="iterative: score every item of every candidate; by default a candidate stops as soon as it "
        "can no longer win (exact: the same plan, fewer items)",
    )
    g = p.add_argument_group("where a greedy search measures its candidates (docs/distributed.md)")
    add_dataclass_flags(
        g,
        ClusterSettings,
        choices={"executor": EXECUTORS},
        help={
            "executor": "local: this process (default); ray: Ray workers that each hold the model, several "
            "candidates at a time, the same plan (pip install 'lmeval-layerprune[ray]')",
            "max_retries": "ray: re-runs of one measurement whose worker died, before the search stops",
        },
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = dataclass_from_args(SelectionSettings, args)
    plan = select_layers(
        settings,
        device=args.device,
        out=args.out,
        journal=args.journal,
        plot=args.plot,
        mode="race" if args.race else "exhaustive" if args.exhaustive else "exact",
        executor=dataclass_from_args(ClusterSettings, args),
    )
    print(f"{args.method}: remove layers {plan['drop']} of {plan['num_layers']} ({format_indices(plan['drop'])})")
    for r in plan.get("rounds", []):
        print(f"  {describe_round(plan, r)}")
    search = plan.get("search", {})
    if search.get("items_exhaustive"):
        print(
            f"  {search['mode']}: {search['items_evaluated']} of {search['items_exhaustive']} candidate items "
            f"evaluated, {search['stopped']} candidates stopped early"
        )
    ran = search.get("executor")
    if ran:
        repeated = len(ran["repeated"])
        print(f"  {ran['name']}: {ran['workers']} worker(s); {repeated} measurement(s) repeated after a worker died")
    for w in plan.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if args.out:
        print(f"plan: {args.out}   (use it as drop=plan:{args.out})")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0
