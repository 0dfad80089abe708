#!/usr/bin/env bash
# Create .venv (Python 3.11) with the engine, its pinned dependencies, pytest and a
# headless ChimeraX core (see docs/headless_chimerax.md). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
# the environment takes ~2.5 GB and a test run ~2 GB of temporary files: say so early
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt 5000000 ]; then
    echo "warning: only $((free_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}');" \
         "set-up and tests need about 5 GB" >&2
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# no wheel cache: the environment is built once per clone, a cache only doubles the disk used
export PIP_NO_CACHE_DIR=1
python -m pip install -q -r requirements/engine.txt
python -m pip install -q --no-deps -e ./engine
# Triton (the version torch 2.13.0's CUDA wheels pin), for the tests that run the fused CUDA
# renderer's kernels on the CPU in its interpreter (tests/engine/physics/test_render_triton.py,
# in a process of their own). Kept out of .venv's site-packages: torch imports an installed
# Triton by itself, and Triton's LLVM crashes a process that has loaded ChimeraX's.
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && [ ! -d .venv/triton/triton-3.7.1.dist-info ]; then
    python -m pip install -q --no-deps --target .venv/triton triton==3.7.1
fi
if [ -f tools/install_chimerax.py ]; then
    python tools/install_chimerax.py
fi
touch .venv/.stamp
echo "environment ready: .venv"
