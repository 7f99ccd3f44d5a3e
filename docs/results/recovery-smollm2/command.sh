#!/usr/bin/env bash
# The recovery comparison behind docs/results/recovery-smollm2/ (SmolLM2-135M-Instruct, 30 layers, fp32, CPU):
# the last 3 and the last 6 layers removed, each healed twice with the same prompts and budget:
#   demo-selfgen-lora   LoRA on the unpruned parent's own (greedy) answers to the prompts
#   demo-original-lora  LoRA on the prompt source's own reference answers
# prompts: the first 128 of the offline `mixed` set (word problems, code requests, word tasks: a third
# each; disjoint from every probe item by construction); 64 steps of batch 4 (two epochs), LoRA r=8.
# Measured 2026-12-02 on a 2-core machine, 2 threads: 57 minutes (104 CPU-minutes) for 7 evaluations
# (6 tasks x 90 items) and 4 heals (a selfgen heal: the parent's 128 answers of up to 256 tokens, about
# 6 minutes, then 64 steps at about 6.5 s each; an original heal: about 3.5 minutes).
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
TASKS=arith_probe_mul_1d,arith_probe_mc_mul_1d,arith_probe_add_1d,arith_probe_mc_add_1d,paren_probe,paren_probe_mc
lmeval-prune sweep embedded --methods last --ratios 0,0.1,0.2 --tasks $TASKS \
  --metadata '{"n": 90}' --batch-size 32 --device cpu \
  --recipe demo-selfgen-lora,demo-original-lora --heal last:0.1,last:0.2 \
  --heal-override data=mixed --heal-override selfgen.n=128 --heal-override selfgen.max_new_tokens=256 \
  --heal-override sft.max_steps=64 --heal-override sft.max_length=512 --heal-override sft.save_steps=32 \
  --out runs/recovery
# the committed folder: every cell's lm-eval results and samples (no checkpoints), then the reports:
# all six tasks, and the four arithmetic tasks alone (the brackets probes sit near their floor here)
mkdir -p docs/results/recovery-smollm2/runs
(cd runs/recovery && tar cf - --exclude=checkpoints .) | (cd docs/results/recovery-smollm2/runs && tar xf -)
lmeval-prune report docs/results/recovery-smollm2/runs --out docs/results/recovery-smollm2
lmeval-prune report docs/results/recovery-smollm2/runs --out docs/results/recovery-smollm2/arithmetic \
  --tasks arith_probe_mul_1d,arith_probe_mc_mul_1d,arith_probe_add_1d,arith_probe_mc_add_1d
