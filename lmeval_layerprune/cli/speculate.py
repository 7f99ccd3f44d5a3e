"""``lmeval-prune speculate``: a pruned model as its parent's draft, measured against plain greedy."""

from __future__ import annotations

import argparse
import textwrap


def register(sub: argparse._SubParsersAction) -> None:
    from lmeval_layerprune.lmeval.draft import DEFAULT_DRAFT_TOKENS

    p = sub.add_parser(
        "speculate",
        description="For each --draft spec, decode the prompts greedily with MODEL as verifier and MODEL with the "
        "draft layers skipped as drafter (shared weights, no second copy), beside plain greedy decoding of the same "
        "prompts in interleaved rounds. Prints acceptance (accepted draft tokens per verification step, share of "
        "drafted tokens accepted), teacher-forced token agreement, tokens/s and speed-up, and checks that every "
        "output is identical to plain greedy. Draft specs use the drop grammar on MODEL's layers.",
        epilog=textwrap.dedent(
            """\
            examples:
              lmeval-prune speculate embedded --draft last:10% last:25% 12-19 --limit 8
              lmeval-prune speculate embedded --draft last:3 --tasks arith_probe --limit 10 --out spec/
              lmeval-prune speculate embedded --search 4 --limit 6   # greedy choice of 4 layers to skip
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded' (a pruned checkpoint works too)")
    p.add_argument("--draft", nargs="*", default=[], metavar="SPEC", help="draft specs, e.g. last:25%% 12-19 angular:8")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks whose generation prompts to use")
    g.add_argument(
        "--prompts", default=None, help="prompt source: 'bundled' (default), a .jsonl/.json/.csv file, or a Hub id"
    )
    p.add_argument("--include-path", default=None, help="folder of extra lm-eval task YAMLs for --tasks")
    p.add_argument("--limit", type=int, default=8, help="number of prompts (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default: 64)")
    p.add_argument(
        "--draft-tokens",
        type=int,
        default=DEFAULT_DRAFT_TOKENS,
        help=f"draft tokens per verification step (default: {DEFAULT_DRAFT_TOKENS})",
    )
    p.add_argument(
        "--search",
        type=int,
        default=None,
        metavar="N",
        help="also choose N layers to skip greedily, maximising simulated verified tokens per step",
    )
    p.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds (default: 1)")
    p.add_argument("--dtype", default="float32", help="dtype (default: float32)")
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--calib", default=None, help="calibration file for bi:/angular: draft specs")
    p.add_argument("--out", default=None, help="folder for speculate.json and speculate.png")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from lmeval_layerprune.core.layout import SPECULATE_FILE, SPECULATE_PLOT
    from lmeval_layerprune.speed.speculate import format_speculate, run_speculate

    record = run_speculate(
        args.model,
        args.draft,
        tasks=[t for t in args.tasks.split(",") if t] if args.tasks else None,
        prompts=args.prompts,
        include_path=args.include_path,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        draft_tokens=args.draft_tokens,
        search=args.search,
        rounds=args.rounds,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        calib=args.calib,
        out=args.out,
    )
    print(format_speculate(record))
    if args.out:
        print(f"wrote {args.out}/{SPECULATE_FILE} and {args.out}/{SPECULATE_PLOT}")
    return 0 if all(d["identical"] for d in record["drafts"]) else 1
