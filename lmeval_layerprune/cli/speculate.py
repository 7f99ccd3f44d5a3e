"""``lmeval-prune speculate``: a pruned model as its parent's draft, measured against plain greedy. The flags are
generated from :class:`~lmeval_layerprune.speed.speculate_run.SpeculateSettings` (``--tasks`` and ``--prompts``
exclusive); ``--draft`` takes several specs after one flag."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.core.layout import SPECULATE_FILE, SPECULATE_PLOT
from lmeval_layerprune.speed.speculate_run import SpeculateSettings, format_speculate, run_speculate

HELP = {
    "model": "checkpoint directory, Hub id, or 'embedded' (a pruned checkpoint works too)",
    "tasks": "comma-separated lm-eval tasks whose generation prompts to use",
    "prompts": "prompt source: 'bundled' (default), a .jsonl/.json/.csv file, or a Hub id",
    "include_path": "folder of extra lm-eval task YAMLs for --tasks",
    "limit": "number of prompts",
    "max_new_tokens": "tokens generated per prompt",
    "draft_tokens": "draft tokens per verification step",
    "search": "also choose N layers to skip greedily, maximising simulated verified tokens per step",
    "rounds": "interleaved timing rounds",
    "dtype": "dtype",
    "device": "device (default: cuda if available, else cpu)",
    "threads": "torch CPU threads (default: torch's)",
    "calib": "calibration file for draft specs that score hidden states (bi:, angular:, ...)",
    "out": f"folder for {SPECULATE_FILE} and {SPECULATE_PLOT}",
}
_EXCLUSIVE = ("tasks", "prompts")


def register(sub: argparse._SubParsersAction) -> None:
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
    others = [f.name for f in dataclasses.fields(SpeculateSettings) if f.name not in _EXCLUSIVE]
    add_dataclass_flags(
        p, SpeculateSettings, help=HELP, positional=("model",), exclude=("drafts", *_EXCLUSIVE, "progress")
    )
    # several specs after one flag, as before (not a comma-separated list)
    p.add_argument(
        "--draft",
        dest="drafts",
        nargs="*",
        default=[],
        metavar="SPEC",
        help="draft specs, e.g. last:25%% 12-19 angular:8",
    )
    add_dataclass_flags(p.add_mutually_exclusive_group(), SpeculateSettings, help=HELP, exclude=others)
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    settings = dataclass_from_args(SpeculateSettings, args)
    record = run_speculate(settings)
    print(format_speculate(record))
    if settings.out:
        print(f"wrote {settings.out}/{SPECULATE_FILE} and {settings.out}/{SPECULATE_PLOT}")
    return 0 if all(d["identical"] for d in record["drafts"]) else 1
