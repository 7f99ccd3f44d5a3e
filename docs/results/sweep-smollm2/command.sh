#!/usr/bin/env bash
# The evidence sweep behind docs/results/sweep-smollm2/ (SmolLM2-135M-Instruct, 30 layers, fp32, CPU).
# Measured 2026-12-02 on a 2-core machine shared with 7 other jobs (load average 9-12), one thread each;
# the angular-0.1 cell re-run 2026-12-04 with angular's last-token definition (Gromov et al.), the same
# command restricted to --methods angular --ratios 0,0.1 with the base cell copied in.
# It ran as two processes writing two sweep folders with identical evaluation settings (the `bi`
# column in its own folder, with the `base` cell copied in, so both could use the cores at once);
# one command gives the same grid:
#   lmeval-prune sweep embedded --methods last,bi,angular --ratios 0,0.1,0.2,0.3 ... --out runs/evidence
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
TASKS=arith_probe_mul_1d,arith_probe_mc_mul_1d,arith_probe_add_1d,arith_probe_mc_add_1d
lmeval-prune sweep embedded --methods last,angular --ratios 0,0.1,0.2,0.3 --tasks $TASKS \
  --metadata '{"n": 90}' --batch-size 32 --device cpu \
  --recipe demo-selfgen-lora --heal last:0.2 --out runs/evidence
lmeval-prune sweep embedded --methods bi --ratios 0,0.1,0.2,0.3 --tasks $TASKS \
  --metadata '{"n": 90}' --batch-size 32 --device cpu --out runs/evidence-bi   # base cell copied from runs/evidence
# the committed folder: every cell's lm-eval results and samples (no checkpoints), then
lmeval-prune report docs/results/sweep-smollm2/runs --out docs/results/sweep-smollm2
