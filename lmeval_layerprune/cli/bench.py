"""``lmeval-prune bench``: speed and memory of pruned variants beside their parent, in one run."""

from __future__ import annotations

import argparse
import sys
import textwrap


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-sizes takes integers like 1,8; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--batch-sizes takes positive integers, got {text!r}")
    return sizes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        description="Load MODEL once and measure it and each --drop variant (layers swapped out in place, no "
        "second copy) in interleaved rounds after warm-up, greedy, fixed seeds: decode and prefill tokens/s, time "
        "to first token, memory (weights + KV cache at the given lengths), KV-cache bytes per token, parameters "
        "(total and without embeddings). Every figure is also a gain against the parent, beside the ideal L/(L-k). "
        "Prints a table; --out gets layer_pruning_bench.json and a PNG.",
        epilog=textwrap.dedent(
            """\
            examples:
              lmeval-prune bench embedded --drop last:10% last:25% last:50% angular:25% --threads 1
              lmeval-prune bench meta-llama/Llama-3.1-8B --drop last:25% --dtype bfloat16 --batch-sizes 1,8,32 --out b/
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded'")
    p.add_argument("--drop", nargs="+", required=True, metavar="SPEC", help="drop specs, e.g. last:25%% 20-25 bi:8")
    p.add_argument("--batch-sizes", type=_sizes, default=[1, 8], help="comma-separated (default: 1,8)")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per sequence (default: 128)")
    p.add_argument("--new-tokens", type=int, default=32, help="greedy decode steps (default: 32)")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds, medians reported (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds, not reported (default: 1)")
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="hf (default) or vllm (GPU throughput)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--calib", default=None, help="calibration file for bi:/angular: specs")
    p.add_argument("--out", default=None, help="folder for layer_pruning_bench.json and layer_pruning_bench.png")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from lmeval_layerprune.core.layout import BENCH_FILE, BENCH_PLOT
    from lmeval_layerprune.errors import BackendUnavailable
    from lmeval_layerprune.speed.bench import format_bench, run_bench

    try:
        record = run_bench(
            args.model,
            args.drop,
            batch_sizes=args.batch_sizes,
            prompt_len=args.prompt_len,
            new_tokens=args.new_tokens,
            rounds=args.rounds,
            warmup=args.warmup,
            backend=args.backend,
            dtype=args.dtype,
            device=args.device,
            threads=args.threads,
            calib=args.calib,
            out=args.out,
        )
    except BackendUnavailable as e:
        print(f"lmeval-prune bench: {e}", file=sys.stderr)
        return 0
    print(format_bench(record))
    if args.out:
        print(f"wrote {args.out}/{BENCH_FILE} and {args.out}/{BENCH_PLOT}")
    return 0
