"""Time to obtain a pruned checkpoint of the embedded model, measured side by side in one run.

* ``lmeval-prune slice`` (mergekit passthrough + config fix-ups + reload-and-compare
  verification) versus running ``mergekit-yaml`` by hand on the same YAML (no fix-ups,
  no verification);
* the materialization cache: a miss (empty cache) versus a hit, through
  ``cached_checkpoint`` as ``pruned-hf materialize=true`` and ``pruned-vllm`` use it.

Every measurement runs in a fresh process (interpreter start and imports included) and is
repeated; medians are reported. Offline; run from the repository root:

    python benchmarks/bench_slice.py [--drop 20-25] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drop", default="20-25", help="drop spec (default: 20-25)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (default: 3)")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    src = subprocess.run([str(BIN / "lmeval-prune"), "embedded-model"], env=env, capture_output=True, text=True)
    model = src.stdout.strip().splitlines()[-1]
    work = Path(tempfile.mkdtemp(prefix="bench-slice-"))
    try:
        slice_t, mk_t, miss_t, hit_t = [], [], [], []
        for i in range(args.repeats):
            out = work / f"slice{i}"
            slice_t.append(
                _timed([str(BIN / "lmeval-prune"), "slice", model, "--drop", args.drop, "--out", str(out)], env)
            )
            mk_t.append(_timed([str(BIN / "mergekit-yaml"), str(out / "mergekit.yaml"), str(work / f"mk{i}")], env))
            cache_env = {**env, "LMEVAL_LAYERPRUNE_CACHE": str(work / f"cache{i}")}
            # the cache root also holds the embedded conversion: point it at the converted model directly
            code = (
                "import sys; from lmeval_layerprune.checkpoint.cache import cached_checkpoint; "
                "print(cached_checkpoint(sys.argv[1], sys.argv[2]))"
            )
            cmd = [sys.executable, "-c", code, model, args.drop]
            miss_t.append(_timed(cmd, cache_env))
            hit_t.append(_timed(cmd, cache_env))
        med = {k: statistics.median(v) for k, v in (("slice", slice_t), ("mk", mk_t), ("miss", miss_t), ("hit", hit_t))}
        print(f"embedded SmolLM2-135M, drop={args.drop}, median of {args.repeats} fresh processes each")
        print(f"  lmeval-prune slice (merge + fix-ups + verify): {med['slice']:6.2f} s")
        print(f"  mergekit-yaml by hand (merge only)           : {med['mk']:6.2f} s")
        print(f"  ratio slice / mergekit-yaml                  : {med['slice'] / med['mk']:6.2f}x")
        print(f"  cache miss (materialize + verify)            : {med['miss']:6.2f} s")
        print(f"  cache hit                                    : {med['hit']:6.2f} s")
        print(f"  ratio hit / miss                             : {med['hit'] / med['miss']:6.3f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
