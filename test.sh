#!/usr/bin/env bash
# The test suite: set up, then run pytest against the installed package (offline).
# Extra arguments go to pytest, e.g. `./test.sh -m "not embedded"` for the fast subset.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec "${VENV:-.venv}/bin/pytest" -p no:cacheprovider "$@"
