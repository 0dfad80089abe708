#!/usr/bin/env bash
# Extra packages for benchmarks/robustness.py and benchmarks/realistic.py, into .venv.
# Idempotent: does nothing when the pinned version is already installed.
#
# MDAnalysisTests (pinned) only for its data files (real atomic structures under
# MDAnalysisTests/data/), installed with --no-deps: its dependency MDAnalysis (and
# hypothesis, GridDataFormats...) is not needed, since realistic.py finds the data folder
# without importing the package. About 60 MB to download, 113 MB installed, ~15 s.
# Normal modes are computed with numpy/scipy (realistic.py), so ProDy is not installed.
#
#   bash benchmarks/setup_robustness.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MDAT_VERSION=2.11.0
if [ ! -x "$PY" ]; then
    echo "no .venv: run make setup first" >&2
    exit 1
fi
have=$("$PY" - <<'PYEOF'
from importlib import metadata
try:
    print(metadata.version("MDAnalysisTests"))
except metadata.PackageNotFoundError:
    print("")
PYEOF
)
if [ "$have" = "$MDAT_VERSION" ]; then
    echo "robustness extras ready: MDAnalysisTests $have"
    exit 0
fi
t0=$(date +%s)
PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install -q --no-deps "MDAnalysisTests==$MDAT_VERSION"
"$PY" - <<'PYEOF'
import importlib.util, os
spec = importlib.util.find_spec("MDAnalysisTests")
data = os.path.join(list(spec.submodule_search_locations)[0], "data")
for f in ("1a28.pdb.gz", "1hvr.pdb", "19hc.pdb.gz", "4E43.pdb", "6msm.pdb.bz2"):
    assert os.path.isfile(os.path.join(data, f)), f"{f} missing from {data}"
print(f"MDAnalysisTests data: {data}")
PYEOF
echo "robustness extras ready: MDAnalysisTests $MDAT_VERSION ($(( $(date +%s) - t0 )) s)"
