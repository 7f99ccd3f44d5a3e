"""Self-speculative decoding on the embedded model, CPU: drafts skipping 10-50% of the layers beside
plain greedy decoding of the same prompts, in one run (interleaved per prompt), for a few draft lengths.

Prints, per draft length, ``lmeval-prune speculate``'s table: acceptance (accepted draft tokens per
verification step, share of drafted tokens accepted), teacher-forced token agreement, tokens/s and
speed-up against greedy, the speed-up the forward counts alone would allow, and whether every output
was identical to plain greedy. Also a greedy ``--search`` for the layers that draft best.

Offline; run from the repository root (pin one thread; the figures are for a shared CPU):
``python benchmarks/bench_speculate.py --threads 1 --out /tmp/spec``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmeval_layerprune.speed.speculate_run import SpeculateSettings, format_speculate, run_speculate

DRAFTS = ["last:10%", "last:25%", "last:50%", "10-12", "12-19", "angular:25%"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--drafts", nargs="+", default=DRAFTS)
    ap.add_argument("--draft-tokens", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--search", type=int, default=3)
    ap.add_argument("--prompts", default="bundled")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    for k in args.draft_tokens:
        out = Path(args.out) / f"k{k}" if args.out else None
        settings = SpeculateSettings(
            args.model,
            tuple(args.drafts),
            prompts=args.prompts,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            draft_tokens=k,
            search=args.search or None,
            threads=args.threads,
            out=str(out) if out else None,
            progress=False,
        )
        record = run_speculate(settings)
        print(format_speculate(record), flush=True)
        print(flush=True)
        if out is None:
            print(json.dumps(record["drafts"], indent=1))


if __name__ == "__main__":
    main()
