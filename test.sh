#!/usr/bin/env bash
# The test suite: set up (the checkout installed editable), then run pytest (offline).
# Extra arguments go to pytest, e.g. `./test.sh -m "not slow and not embedded"` for the fast subset.
# SKIP_SETUP=1 skips the set-up step (.ci/run has just done it).
set -euo pipefail
cd "$(dirname "$0")"
[ -n "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec "${VENV:-.venv}/bin/pytest" -p no:cacheprovider "$@"
