"""Interpreter start-up cost of the lm-eval registration hook.

The hook (``lmeval_layerprune.pth`` -> ``lmeval_layerprune._autoload``) runs in every
Python process of the environment, so it must stay cheap when lm-eval is never
imported. This script measures, side by side in one run:

* the hook's own import time (``python -X importtime``, cumulative, package ``__init__``
  included): this is what every interpreter start pays;
* a start-up that imports ~40 stdlib modules with the hook's finder installed versus not
  installed (``LMEVAL_LAYERPRUNE_NO_AUTOLOAD=1``; the module is still imported then, so this
  isolates the per-import cost of the finder), interleaved, median wall time.

Run: ``python benchmarks/bench_startup.py [--runs 40]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

_IMPORTS = "import json, email.parser, http.client, urllib.request, logging.handlers, asyncio, decimal, csv, sqlite3"


def _wall(env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", _IMPORTS], env=env, check=True)
    return time.perf_counter() - t


def _hook_import_us() -> int:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True).stderr
    total = 0
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(\s*)(\S+)", line)
        if m and m.group(4) == "lmeval_layerprune._autoload":
            total = int(m.group(2))  # cumulative: includes the package __init__
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="interpreter starts per variant (default: 40)")
    args = parser.parse_args()
    on = dict(os.environ)
    on.pop("LMEVAL_LAYERPRUNE_NO_AUTOLOAD", None)
    off = {**on, "LMEVAL_LAYERPRUNE_NO_AUTOLOAD": "1"}
    t_on, t_off = [], []
    for _ in range(args.runs):
        t_on.append(_wall(on))
        t_off.append(_wall(off))
    imports = [_hook_import_us() for _ in range(10)]
    med_on, med_off = statistics.median(t_on), statistics.median(t_off)
    print(f"hook import at start-up (-X importtime, median of 10): {statistics.median(imports) / 1000:.2f} ms")
    print(f"stdlib-heavy start-up, finder installed : {med_on * 1000:7.2f} ms (median of {args.runs})")
    print(f"stdlib-heavy start-up, finder not there : {med_off * 1000:7.2f} ms (median of {args.runs})")
    print(f"ratio installed/not                     : {med_on / med_off:7.3f}")
    print("budget for the hook: < 10 ms per interpreter start")


if __name__ == "__main__":
    main()
