#!/usr/bin/env bash
# GPU smoke test (a few minutes on one GPU): evaluate a pruned model through vLLM
# (`pruned-vllm`) and through `pruned-hf`, print both scores and throughputs.
#
#   bash benchmarks/gpu_smoke_vllm.sh [MODEL] [DROP] [LIMIT]
#
# MODEL defaults to the embedded SmolLM2-135M (converted locally; no download), DROP to
# 20-25, LIMIT to 200 items per task. Needs: a CUDA GPU, and `pip install vllm` in the
# same environment as lmeval-layerprune. Results land in benchmarks/out/gpu_smoke/.
set -euo pipefail
MODEL="${1:-embedded}"
DROP="${2:-20-25}"
LIMIT="${3:-200}"
TASKS="${TASKS:-arith_probe}"
OUT="benchmarks/out/gpu_smoke"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
if [ "$MODEL" = "embedded" ]; then MODEL="$(lmeval-prune embedded-model)"; fi

run() {  # name, lm_eval args...
    local name="$1"; shift
    local t0 t1
    t0=$(date +%s.%N)
    lm_eval "$@" --tasks "$TASKS" --limit "$LIMIT" --output_path "$OUT/$name" > "$OUT/$name.log" 2>&1
    t1=$(date +%s.%N)
    python - "$OUT/$name" "$name" "$t0" "$t1" <<'EOF'
import json, pathlib, sys
out, name, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
res = json.loads(sorted(pathlib.Path(out).rglob("results_*.json"))[-1].read_text())
n = sum(v["effective"] for v in res["n-samples"].values())
scores = {t: round(m.get("exact_match,first-integer", float("nan")), 3) for t, m in res["results"].items()}
print(f"{name:>12}: {n} requests in {t1 - t0:6.1f} s ({n / (t1 - t0):6.1f} req/s incl. load)  {scores}")
EOF
}

run pruned-vllm --model pruned-vllm --model_args "pretrained=$MODEL,drop=$DROP,gpu_memory_utilization=0.5" --batch_size auto
run pruned-hf --model pruned-hf --model_args "pretrained=$MODEL,drop=$DROP,dtype=bfloat16" --device cuda --batch_size 32
echo "The two backends should agree closely (greedy decoding; small differences come from kernels)."
