#!/usr/bin/env bash
# The main job: set up, then the study small on the embedded SmolLM2-135M: a sweep (unpruned, last and
# angular at 20%), one short heal, the report with its plot, and the healed checkpoint's model card.
# Extra arguments go to `lmeval-prune demo` (see `lmeval-prune demo --help`).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec "${VENV:-.venv}/bin/lmeval-prune" demo "$@"
