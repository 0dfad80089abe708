"""cryoDRGN on a robustness cell's data with the images put back into RELION-like units
(offset removed, unit scale): is cryoDRGN's failure on the arbitrary-units cell its
normalisation or the data? (cryoDRGN normalises by the spread of the Hartley transforms
with the mean set to 0, so a constant image offset stays in its zero frequency.)

  .venv/bin/python benchmarks/cryodrgn_normalised.py --cell base --epochs 12
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mrcfile  # noqa: E402
import numpy as np  # noqa: E402

import robustness  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", default="base")
    p.add_argument("--outdir", default=os.path.join(robustness.ROOT, "bench_out", "robustness"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output")
    a = p.parse_args(argv)
    sim = os.path.join(a.outdir, a.cell, "sim")
    with open(os.path.join(sim, "spec.json")) as f:
        spec = robustness.RealisticSpec(**json.load(f)["spec"])
    work = os.path.join(a.outdir, a.cell + "_cryodrgn_normalised")
    norm = os.path.join(work, "sim")
    if not os.path.exists(os.path.join(norm, "particles.mrcs")):
        shutil.copytree(sim, norm, dirs_exist_ok=True)
        with mrcfile.open(os.path.join(norm, "particles.mrcs"), "r+") as m:
            x = m.data.astype(np.float64)
            m.data[:] = ((x - x.mean((1, 2), keepdims=True)) / x.std()).astype(np.float32)
    ns = argparse.Namespace(cryodrgn_venv=os.path.join(robustness.ROOT, ".venv-cryodrgn"), threads=a.threads,
                            epochs=a.epochs, reuse=False)
    out = robustness.cryodrgn_cell(ns, spec, norm, work)
    out["note"] = "images per-image mean removed and scaled to unit std before cryoDRGN's parse_star"
    path = a.output or os.path.join(robustness.ROOT, "benchmarks", "results",
                                    f"cryodrgn_normalised_{a.cell}_e{a.epochs}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2, default=float)
    os.replace(path + ".tmp", path)
    m = out["metrics"]
    print(f"cryoDRGN on {a.cell} (normalised images): motion probe {m['motion_linear_probe_full_z']:.3f}, "
          f"presence 2-means {m['presence_kmeans_full_z']:.3f}, probe {m['presence_linear_probe_full_z']:.3f}, "
          f"FSC AUC {m['fsc_auc_mean']:.3f}")


if __name__ == "__main__":
    main()
