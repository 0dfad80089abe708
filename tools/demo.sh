#!/usr/bin/env bash
# The main job end to end, on simulated data with known truth:
#   simulate -> train -> analyze -> reconstruct a cluster -> evaluate against the truth ->
#   open in headless ChimeraX
# and save images of two states. Usage: tools/demo.sh OUTDIR   (make demo)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_out}
N=${DEMO_PARTICLES:-6000}
EPOCHS=${DEMO_EPOCHS:-40}
PY=.venv/bin/python
GEM=.venv/bin/gaussianem
mkdir -p "$OUT"
export XDG_CACHE_HOME="$PWD/.cache/chimerax/xdg/cache" XDG_DATA_HOME="$PWD/.cache/chimerax/xdg/data" \
       XDG_CONFIG_HOME="$PWD/.cache/chimerax/xdg/config" MPLBACKEND=Agg

echo "== 1/6 simulate $N particles from the built-in two-domain test protein"
rm -rf "$OUT/sim" "$OUT/run"
$GEM simulate --test-model -o "$OUT/sim" -n "$N" --box 48 --apix 2.5 --snr 0.5 --seed 0

echo "== 2/6 train ($EPOCHS epochs, split latent: 2 conformational + 2 compositional)"
$GEM train "$OUT/sim/particles.star" --consensus "$OUT/sim/consensus.mrc" --model "$OUT/sim/model.pdb" \
    -o "$OUT/run" --epochs "$EPOCHS" --zdim-conf 2 --zdim-comp 2 --progress none

echo "== 3/6 analyze"
$GEM analyze "$OUT/run" --kmeans 4

echo "== 4/6 reconstruct k-means cluster 0 from its particles (deformable backprojection, half maps, FSC)"
$GEM reconstruct "$OUT/run" --kmeans 4 --cluster 0 -o "$OUT/recon/cluster0.mrc" --force --progress none

echo "== 5/6 evaluate against the ground truth"
$PY benchmarks/validate.py --result "$OUT/run" --sim "$OUT/sim" -o "$OUT/run/validation.json"

echo "== 6/6 open the result in headless ChimeraX, save two states"
$PY tools/build_bundle.py --install > /dev/null
$PY -m chimerax.core --nogui --offscreen --exit --script "tools/demo_chimerax.py $OUT/run $OUT/chimerax"
ls -l "$OUT/chimerax"
echo "demo done: $OUT (report: $OUT/run/analysis/report.md, reconstruction: $OUT/recon/, images: $OUT/chimerax/)"
