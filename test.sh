#!/usr/bin/env bash
# The test suite: set up (the checkout installed editable), then run pytest (offline).
# Extra arguments go to pytest, e.g. `./test.sh -m "not slow and not embedded"` for the fast subset.
# pytest-xdist runs the tests on every core.
# SKIP_SETUP=1 skips the set-up step (.ci/run has just done it).
set -euo pipefail
cd "$(dirname "$0")"
[ -n "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# one pytest-xdist worker per core (PYTEST_WORKERS=0 runs in one process); tests that share a resource
# (a local Ray cluster) name an xdist_group and run on one worker
exec "${VENV:-.venv}/bin/pytest" -p no:cacheprovider -n "${PYTEST_WORKERS:-auto}" --dist loadgroup "$@"
