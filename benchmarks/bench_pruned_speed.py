"""What pruning buys on the embedded model, CPU: ``lmeval-prune bench`` for the parent and 10/25/50% of
the layers removed by ``last`` and by ``angular``, one loaded model, interleaved rounds.

Offline; run from the repository root: ``python benchmarks/bench_pruned_speed.py --threads 1 --out /tmp/bench``
(equivalent to ``lmeval-prune bench embedded --drop last:10% last:25% last:50% angular:10% angular:25%
angular:50% --threads 1``).
"""

from __future__ import annotations

import argparse

from lmeval_layerprune.speed.bench import BenchSettings, run_bench
from lmeval_layerprune.speed.bench_output import format_bench
from lmeval_layerprune.speed.bench_result import BenchWorkload

DROPS = ["last:10%", "last:25%", "last:50%", "angular:10%", "angular:25%", "angular:50%"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--drop", nargs="+", default=DROPS)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    workload = BenchWorkload(
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        rounds=args.rounds,
    )
    settings = BenchSettings(
        args.model, tuple(args.drop), workload, dtype=args.dtype, threads=args.threads, out=args.out, progress=False
    )
    record = run_bench(settings)
    print(format_bench(record))


if __name__ == "__main__":
    main()
