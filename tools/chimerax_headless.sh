#!/usr/bin/env bash
# The headless ChimeraX 1.7.1 core that 'make setup' installs into .venv, run without a
# window (docs/headless_chimerax.md):
#     .venv/bin/python -m chimerax.core --nogui [--offscreen] --exit ARGS...
# with ChimeraX's settings and caches in the repository's .cache/chimerax/xdg (never in
# your home; GAUSSIANEM_CHIMERAX_XDG=DIR puts them elsewhere), Qt offscreen, and
# --offscreen (images, movies) when OSMesa is installed. The bundle is installed from
# src/ first if this environment has none. Examples:
#     tools/chimerax_headless.sh --cmd "gaussianem version"
#     tools/chimerax_headless.sh --script "docs/example_script.py demo_out/run"
#     tools/chimerax_headless.sh --cmd "open demo_out/sim/consensus.mrc" --cmd "measure mapstats"
# Exit status 0 on success, 70 when a command failed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "chimerax_headless.sh: no $PY: run 'make setup' first" >&2
    exit 2
fi
X="${GAUSSIANEM_CHIMERAX_XDG:-$ROOT/.cache/chimerax/xdg}"
for kind in cache data config; do
    mkdir -p "$X/$kind/ChimeraX/1.7"       # run as root, ChimeraX does not make them itself
done
export XDG_CACHE_HOME="$X/cache" XDG_DATA_HOME="$X/data" XDG_CONFIG_HOME="$X/config"
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
if ! "$PY" -c "import importlib.metadata as m; m.version('ChimeraX-GaussianEM')" 2>/dev/null; then
    "$PY" "$ROOT/tools/build_bundle.py" --install > /dev/null
fi
OFFSCREEN=()
if "$PY" -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('OSMesa') is None)"; then
    OFFSCREEN=(--offscreen)
fi
exec "$PY" -m chimerax.core --nogui ${OFFSCREEN[@]+"${OFFSCREEN[@]}"} --exit "$@"
