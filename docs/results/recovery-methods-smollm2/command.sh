#!/usr/bin/env bash
# The recovery-methods comparison behind docs/results/recovery-methods-smollm2/ (SmolLM2-135M-Instruct,
# 30 layers, fp32, CPU), issue 29: the last 3 and the last 6 of 30 layers removed, each healed three ways
# on the same number of training tokens (8,192, `budget.tokens`: about a third of one pass over the 128
# answers, so that six heals fit a 2-core CPU), and the same layers collapsed (LaCo) instead of dropped:
#   selfgen-lora   LoRA r=8 on the unpruned parent's greedy answers to 128 offline prompts
#   partial-last2  no adapters: the last 2 kept layers, the final norm and the LM head train, same answers
#   cpt-lora       LoRA r=8, language-modelling loss on the bundled plain-text corpus (no prompts)
# Run from the repository root.
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
D=docs/results/recovery-methods-smollm2
TASKS=arith_probe_mul_1d,arith_probe_mc_mul_1d,arith_probe_add_1d,arith_probe_mc_add_1d
# 1. the parent answers the prompts once (the two selfgen recipes read this file: `data:`)
lmeval-prune selfgen --teacher embedded --prompts mixed --n 128 --max-new-tokens 256 --temperature 0 \
  --batch-size 16 --out $D/responses.jsonl
# 2. the sweep: base, the cut, and the cut healed with each recipe (refused if the budgets differed)
lmeval-prune sweep embedded --methods last --ratios 0,0.1,0.2 --tasks $TASKS --metadata '{"n": 90}' \
  --batch-size 32 --device cpu \
  --recipe $D/recipes/selfgen-lora.yaml,$D/recipes/partial-last2.yaml,$D/recipes/cpt-lora.yaml \
  --heal last:0.1,last:0.2 --out runs/recovery-methods
# 3. the same layers collapsed into the kept layer before them instead of dropped (no training)
for layers in 27-29 24-29; do
  lmeval-prune eval --model pruned-hf --model_args pretrained=embedded,drop=collapse:$layers,dtype=float32 \
    --tasks $TASKS --metadata '{"n": 90}' --batch_size 32 --device cpu --log_samples \
    --output_path runs/recovery-methods/collapse-$layers
done
# the committed folder: every run's lm-eval results and samples (no checkpoints), then the report
mkdir -p $D/runs
(cd runs/recovery-methods && tar cf - --exclude=checkpoints .) | (cd $D/runs && tar xf -)
lmeval-prune report $D/runs --out $D
