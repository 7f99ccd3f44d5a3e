"""``lmeval-prune bench``: speed and memory of pruned variants beside their parent, in one run. The flags are
generated from :class:`~lmeval_layerprune.speed.bench.BenchSettings` and
:class:`~lmeval_layerprune.speed.bench_result.BenchWorkload`; ``--drop`` takes several specs after one flag."""

from __future__ import annotations

import argparse
import sys
import textwrap

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.core.layout import BENCH_FILE, BENCH_PLOT
from lmeval_layerprune.errors import BackendUnavailable
from lmeval_layerprune.speed.bench import BACKENDS, BenchSettings, run_bench
from lmeval_layerprune.speed.bench_output import format_bench
from lmeval_layerprune.speed.bench_result import BenchWorkload

HELP = {
    "model": "checkpoint directory, Hub id, or 'embedded'",
    "batch_sizes": "comma-separated",
    "prompt_len": "prompt tokens per sequence",
    "new_tokens": "greedy decode steps",
    "rounds": "measured rounds, medians reported",
    "warmup": "warm-up rounds, not reported",
    "backend": "hf, or vllm (GPU throughput)",
    "dtype": "float32, bfloat16 or float16",
    "device": "device (default: cuda if available, else cpu)",
    "threads": "torch CPU threads (default: torch's)",
    "calib": "calibration file for specs that score hidden states (bi:, angular:, ...)",
    "out": f"folder for {BENCH_FILE} and {BENCH_PLOT}",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        description="Load MODEL once and measure it and each --drop variant (layers swapped out in place, no "
        "second copy) in interleaved rounds after warm-up, greedy, fixed seeds: decode and prefill tokens/s, time "
        "to first token, memory (weights + KV cache at the given lengths), KV-cache bytes per token, parameters "
        "(total and without embeddings). Every figure is also a gain against the parent, beside the ideal L/(L-k). "
        f"Prints a table; --out gets {BENCH_FILE} and a PNG.",
        epilog=textwrap.dedent(
            """\
            examples:
              lmeval-prune bench embedded --drop last:10% last:25% last:50% angular:25% --threads 1
              lmeval-prune bench meta-llama/Llama-3.1-8B --drop last:25% --dtype bfloat16 --batch-sizes 1,8,32 --out b/
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_flags(
        p,
        BenchSettings,
        help=HELP,
        choices={"backend": BACKENDS},
        exclude=("drops", "workload", "progress"),
        positional=("model",),
    )
    # several specs after one flag, as before (not a comma-separated list)
    p.add_argument(
        "--drop", dest="drops", nargs="+", required=True, metavar="SPEC", help="drop specs, e.g. last:25%% 20-25 bi:8"
    )
    add_dataclass_flags(p, BenchWorkload, help=HELP, exclude=("seed",))
    p.set_defaults(func=_cmd)


def settings_of(args: argparse.Namespace) -> BenchSettings:
    """The :class:`BenchSettings` the parsed flags describe."""
    return dataclass_from_args(BenchSettings, args, workload=dataclass_from_args(BenchWorkload, args))


def _cmd(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        record = run_bench(settings)
    except BackendUnavailable as e:
        print(f"lmeval-prune bench: {e}", file=sys.stderr)
        return 0
    print(format_bench(record))
    if settings.out:
        print(f"wrote {settings.out}/{BENCH_FILE} and {settings.out}/{BENCH_PLOT}")
    return 0
