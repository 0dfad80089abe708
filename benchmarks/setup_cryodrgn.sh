#!/usr/bin/env bash
# Create .venv-cryodrgn (Python 3.11) with cryoDRGN, for benchmarks/compare_cryodrgn.py.
# Idempotent: does nothing when .venv-cryodrgn/.stamp is newer than this script.
#
# torch is installed FIRST and pinned (torch==2.13.0, the CPU wheel on this machine's
# disk) and then held by a constraints file, so that cryodrgn's "torch>=2" cannot pull
# a newer (multi-GB CUDA) build. cryodrgn 4.3.1 asks for numpy>=1.25 with no upper
# bound; numpy is pinned to 1.26.4 as in the project's own .venv.
#
#   bash benchmarks/setup_cryodrgn.sh            # then .venv-cryodrgn/bin/cryodrgn --help
#   CRYODRGN_VERSION=4.2.1 bash benchmarks/setup_cryodrgn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=.venv-cryodrgn
CRYODRGN_VERSION=${CRYODRGN_VERSION:-4.3.1}
TORCH_VERSION=2.13.0

if [ -f "$VENV/.stamp" ] && [ "$VENV/.stamp" -nt "$0" ] \
        && grep -qx "cryodrgn==$CRYODRGN_VERSION" "$VENV/.stamp"; then
    echo "cryoDRGN environment ready: $VENV (cryodrgn $CRYODRGN_VERSION)"
    exit 0
fi
t0=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
echo '*' > "$VENV/.gitignore"            # keep the environment out of git
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "numpy==1.26.4" psutil
constraints="$VENV/constraints.txt"
printf 'torch==%s\nnumpy==1.26.4\n' "$TORCH_VERSION" > "$constraints"
"$VENV/bin/python" -m pip install -q -c "$constraints" "cryodrgn==$CRYODRGN_VERSION"
# the installed torch must still be the pinned CPU build
"$VENV/bin/python" - "$TORCH_VERSION" <<'EOF'
import sys, torch, cryodrgn
want = sys.argv[1]
if not torch.__version__.startswith(want):
    sys.exit(f"torch {torch.__version__} was installed, expected {want}")
print(f"cryodrgn {cryodrgn.__version__}, torch {torch.__version__} (cuda: {torch.version.cuda})")
EOF
"$VENV/bin/cryodrgn" --help > /dev/null
echo "cryodrgn==$CRYODRGN_VERSION" > "$VENV/.stamp"
echo "cryoDRGN environment ready: $VENV ($(du -sh "$VENV" | cut -f1), $(( $(date +%s) - t0 )) s)"
