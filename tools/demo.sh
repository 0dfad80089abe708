#!/usr/bin/env bash
# The main job end to end, on simulated data with known truth:
#   simulate -> train -> analyze -> reconstruct a cluster -> check against the truth ->
#   open in headless ChimeraX
# and save images of two states. Usage: tools/demo.sh OUTDIR   (make demo)
# About 11 minutes on a 2-core CPU (training about 8 of them, one progress line per epoch);
# measured with one torch thread on a busy machine (DEMO_THREADS=1).
# Exits non-zero, after a line starting with FAILED, when the result misses a target of
# its check against the truth (tools/demo_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_out}
N=${DEMO_PARTICLES:-6000}
EPOCHS=${DEMO_EPOCHS:-20}       # per training: the default consensus round trains twice
THREADS=${DEMO_THREADS:-}          # torch threads for training (default: torch's own)
PY=.venv/bin/python
GEM=.venv/bin/gaussianem
mkdir -p "$OUT"
export XDG_CACHE_HOME="$PWD/.cache/chimerax/xdg/cache" XDG_DATA_HOME="$PWD/.cache/chimerax/xdg/data" \
       XDG_CONFIG_HOME="$PWD/.cache/chimerax/xdg/config" MPLBACKEND=Agg
start=$SECONDS
step() { printf '== [%d min %02d s] %s\n' $(( (SECONDS - start) / 60 )) $(( (SECONDS - start) % 60 )) "$1"; }

step "1/6 simulate $N particles from the built-in two-domain test protein"
rm -rf "$OUT/sim" "$OUT/run"
$GEM simulate --test-model -o "$OUT/sim" -n "$N" --box 48 --apix 2.5 --snr 0.5 --seed 0

# the default split latent (8 conformational + 1 compositional). With 2 + 2 the conformational
# part also carried the absent domain on this protein and its PC1 missed the motion
# (|Spearman| 0.37-0.41; docs/validation.md)
step "2/6 train (the defaults: a consensus round, then the final training on its map, $EPOCHS epochs each; the split latent 8 conformational + 1 compositional; about 8 minutes on 2 CPU cores, a line per epoch)"
$GEM train "$OUT/sim/particles.star" --consensus "$OUT/sim/consensus.mrc" --model "$OUT/sim/model.pdb" \
    -o "$OUT/run" --epochs "$EPOCHS" --progress bar ${THREADS:+--threads "$THREADS"}

step "3/6 analyze"
$GEM analyze "$OUT/run" --kmeans 4

step "4/6 reconstruct k-means cluster 0 from its particles (deformable backprojection, half maps, FSC)"
$GEM reconstruct "$OUT/run" --kmeans 4 --cluster 0 -o "$OUT/recon/cluster0.mrc" --force --progress bar

step "5/6 check against the ground truth"
$PY benchmarks/validate.py --result "$OUT/run" --sim "$OUT/sim" -o "$OUT/run/validation.json"
checked=0
$PY tools/demo_check.py "$OUT/run" "$OUT/sim" || checked=$?
PC=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['motion_pc'])" "$OUT/run/demo_check.json" \
     2>/dev/null || echo 1)

step "6/6 open the result in headless ChimeraX, save two states along the motion (PC$PC)"
$PY tools/build_bundle.py --install > /dev/null
tools/chimerax_headless.sh --script "tools/demo_chimerax.py $OUT/run $OUT/chimerax $PC"
ls -l "$OUT/chimerax"
if [ "$checked" != 0 ]; then
    echo "FAILED: make demo's result misses its targets against the truth (step 5 above; $OUT/run/demo_check.json)"
    exit 1
fi
echo "demo done in $(( (SECONDS - start) / 60 )) min: $OUT (report: $OUT/run/analysis/report.md," \
     "reconstruction: $OUT/recon/, images: $OUT/chimerax/, check: $OUT/run/demo_check.json)"
