#!/usr/bin/env bash
# Recovery evidence on CPU (README.d/recovery.md): the embedded SmolLM2-135M-Instruct without layers 20-25,
# healed with selfgen-lora and with original-lora on the same prompts, steps and batch size, then
# base / pruned / healed scored on arith_probe. Usage: scripts/recovery_evidence.sh [WORKDIR]
set -euo pipefail
W=${1:-recovery_evidence}
DROP=20-25
N=128
STEPS=32
LIMIT=40
BIN=${BIN:-$(dirname "$(command -v lmeval-prune)")}
mkdir -p "$W"
COMMON=(--base embedded --drop $DROP "selfgen.n=$N" dtype=float32 sft.max_steps=$STEPS sft.per_device_train_batch_size=4
        sft.gradient_accumulation_steps=1 sft.warmup_steps=0 sft.learning_rate=5.0e-4 sft.max_length=256
        sft.gradient_checkpointing=false sft.save_steps=16 lora.r=16 lora.lora_alpha=32)
time "$BIN/lmeval-prune" selfgen --teacher embedded --prompts bundled --n $N --out "$W/responses.jsonl" \
    --max-new-tokens 64 --temperature 0 --batch-size 16
time "$BIN/lmeval-prune" heal --recipe selfgen-lora --out "$W/healed-selfgen" --data "$W/responses.jsonl" "${COMMON[@]}"
time "$BIN/lmeval-prune" heal --recipe original-lora --out "$W/healed-original" --data bundled "${COMMON[@]}"
EVAL=(--tasks arith_probe --limit $LIMIT --device cpu --batch_size 8)
"$BIN/lm_eval" --model pruned-hf --model_args pretrained=embedded,dtype=float32 "${EVAL[@]}" --output_path "$W/eval/base"
"$BIN/lm_eval" --model pruned-hf --model_args pretrained=embedded,drop=$DROP,dtype=float32 "${EVAL[@]}" --output_path "$W/eval/pruned"
"$BIN/lm_eval" --model hf --model_args pretrained="$W/healed-selfgen",dtype=float32 "${EVAL[@]}" --output_path "$W/eval/selfgen"
"$BIN/lm_eval" --model hf --model_args pretrained="$W/healed-original",dtype=float32 "${EVAL[@]}" --output_path "$W/eval/original"
