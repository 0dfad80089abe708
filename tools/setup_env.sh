#!/usr/bin/env bash
# Create .venv (Python 3.11) with the engine, its pinned dependencies, pytest and a
# headless ChimeraX core (see ../shared/chimerax/HEADLESS.md). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q -r requirements/engine.txt
python -m pip install -q --no-deps -e ./engine
if [ -f tools/install_chimerax.py ]; then
    python tools/install_chimerax.py
fi
touch .venv/.stamp
echo "environment ready: .venv"
