#!/usr/bin/env bash
# Regenerate the pictures of docs/chimerax.md and the bundle's help page from a trained
# result with an analysis (make demo leaves one in demo_out/run), in headless ChimeraX.
# Usage: tools/doc_pictures.sh [RUN] [OUT]      (defaults: demo_out/run, docs/images)
# The help page's copies (src/docs/user/commands/images/) are refreshed from OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-demo_out/run}
OUT=${2:-docs/images}
PY=.venv/bin/python
export XDG_CACHE_HOME="$PWD/.cache/chimerax/xdg/cache" XDG_DATA_HOME="$PWD/.cache/chimerax/xdg/data" \
       XDG_CONFIG_HOME="$PWD/.cache/chimerax/xdg/config" MPLBACKEND=Agg QT_QPA_PLATFORM=offscreen
$PY tools/build_bundle.py --install > /dev/null
tools/chimerax_headless.sh --script "tools/doc_pictures_chimerax.py $RUN $OUT"
HELP=src/docs/user/commands/images
mkdir -p "$HELP"
for f in explorer_panel markers_displacement demo_conf_pc1_p05 demo_conf_pc1_p95; do
    size=$(stat -c %s "$OUT/$f.png")
    if [ "$size" -gt 300000 ]; then echo "$OUT/$f.png is $size bytes (over 300 KB)" >&2; exit 1; fi
    cp "$OUT/$f.png" "$HELP/$f.png"
done
ls -l "$OUT" "$HELP"
