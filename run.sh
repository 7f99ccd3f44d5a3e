#!/usr/bin/env bash
# The main job: set up, then evaluate the embedded SmolLM2-135M with and without layers 20-25.
# Extra arguments go to `lmeval-prune demo` (see `lmeval-prune demo --help`).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec "${VENV:-.venv}/bin/lmeval-prune" demo "$@"
