#!/usr/bin/env bash
# GPU run for a 7B model (about 10-15 minutes on one 80 GB GPU): what pruning buys, and
# self-speculative decoding with a pruned draft.
#
#   bash benchmarks/gpu_speed_7b.sh [MODEL]
#
# MODEL defaults to Qwen/Qwen2.5-7B-Instruct (must be in the local HF cache, or set HF_HUB_OFFLINE=0).
# 1. `lmeval-prune bench` with the HF backend: parent and 10/25/50% removed by last and angular,
#    bfloat16, batch sizes 1, 8 and 32, one loaded model (variants share the weights).
# 2. The same specs with `--backend vllm` (continuous batching; one engine per materialized variant),
#    skipped with a message where vLLM is not installed.
# 3. `lmeval-prune speculate`: drafts skipping 10-50% of the layers, and a greedy --search for 8
#    layers, against plain greedy on the arith_probe generation prompts; outputs checked identical.
# Results land in benchmarks/out/gpu_7b/ (JSON + PNG per step, logs).
set -euo pipefail
MODEL="${1:-Qwen/Qwen2.5-7B-Instruct}"
OUT="benchmarks/out/gpu_7b"
mkdir -p "$OUT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
DROPS=(last:10% last:25% last:50% angular:10% angular:25% angular:50%)

lmeval-prune bench "$MODEL" --drop "${DROPS[@]}" --dtype bfloat16 --batch-sizes 1,8,32 \
    --prompt-len 512 --new-tokens 128 --rounds 5 --out "$OUT/bench_hf" 2>&1 | tee "$OUT/bench_hf.log"

lmeval-prune bench "$MODEL" --drop "${DROPS[@]}" --dtype bfloat16 --batch-sizes 1,8,32 \
    --prompt-len 512 --new-tokens 128 --rounds 3 --backend vllm --out "$OUT/bench_vllm" 2>&1 | tee "$OUT/bench_vllm.log"

for K in 2 4 6; do
    lmeval-prune speculate "$MODEL" --draft last:10% last:25% 8-15 angular:10% angular:25% angular:50% \
        --search 8 --draft-tokens "$K" --tasks arith_probe --limit 20 --max-new-tokens 128 --dtype bfloat16 \
        --rounds 2 --out "$OUT/speculate_k$K" 2>&1 | tee "$OUT/speculate_k$K.log"
done
echo "done: $OUT"
