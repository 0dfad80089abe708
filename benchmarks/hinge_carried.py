"""How much of a hinge the decoder carries, on the Gaussians themselves (issue 14 item 5).

``model_landing.py`` measures the displaced atomic model; this looks one step earlier, at
the decoded displacements of the base Gaussians, on hinge cells of the robustness matrix
(``CELL/sim``, ``CELL/run``; ``spec.motion == "hinge"``):

* the moving Gaussians: those within 4 A of an atom of the hinge's moving part;
* their true motion between the two ends (motion 0 and 1) from the hinge geometry;
* ``carried``: the decoded displacement between the median latents of the particles at
  the two ends, projected on the true one (1: all of it), overall and by distance from
  the hinge axis;
* per particle, the decoded hinge amplitude (the same projection, each particle's own
  latent, -0.5..0.5 for the true ends) against the particle's true motion: ``slope`` 1 and
  ``corr`` 1 when the decoder follows the motion fully; a high corr with a low slope is
  a motion found but shrunk;
* ``composition``: the correlation of each particle's compositional latent (the split
  latent's last part) with its true motion, among complete particles (it should carry
  presence, not motion).

  .venv/bin/python benchmarks/hinge_carried.py bench_out/robustness_final/hinge -o benchmarks/results/hinge_carried_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def carried(cell: str) -> dict:
    from scipy.spatial import cKDTree
    from realistic import Motion, RealisticSpec
    from gaussianem.analysis import evaluate as ev
    from gaussianem.analysis.result import load_result
    from gaussianem.io.models import read_model
    from gaussianem.sim.geometry import hinge_rotation
    with open(f"{cell}/sim/spec.json") as f:
        spec = RealisticSpec(**json.load(f)["spec"])
    if spec.motion != "hinge":
        raise SystemExit(f"{cell}: not a hinge cell (motion {spec.motion})")
    model = read_model(f"{cell}/sim/model.pdb")
    motion = Motion(model, spec)
    truth = ev.load_truth(f"{cell}/sim")
    res = load_result(f"{cell}/run")
    good = ~truth["junk"].astype(bool) & truth["present"].astype(bool)
    t = truth["motion"]
    g = res.base.centres.numpy().astype(np.float64)
    atoms = res.grid.to_engine(model.coords)
    off = model.coords[0] - atoms[0]                     # engine frame -> model frame
    dist, nn = cKDTree(atoms).query(g)
    mov = motion.mask[nn] & (dist < 4.0)
    ends = [hinge_rotation(g + off, mov, motion.point, motion.axis, s * spec.hinge_angle) for s in (-0.5, 0.5)]
    true = (ends[1] - ends[0])[mov]
    z0, z1 = (np.median(res.z[good & sel], 0) for sel in (t < 0.1, t > 0.9))
    d0, d1 = (res.decode(z[None])["displacement"][0].numpy()[mov] for z in (z0, z1))
    dd = d1 - d0
    axis = motion.axis / np.linalg.norm(motion.axis)
    r = np.linalg.norm(np.cross(g[mov] + off - motion.point, axis), axis=1)
    by_radius = {}
    for lo, hi in ((0, 10), (10, 20), (20, 30), (30, 100)):
        s = (r >= lo) & (r < hi)
        if s.any():
            by_radius[f"{lo}-{hi} A"] = round(float((dd[s] * true[s]).sum() / (true[s] ** 2).sum()), 3)
    idx = np.where(good)[0]
    disp = res.decode(res.z[idx])["displacement"].numpy()[:, mov]
    amp = (disp * true[None]).sum((1, 2)) / (true ** 2).sum()
    slope = float(np.polyfit(t[idx], amp, 1)[0])
    out = {"cell": cell, "moving_gaussians": int(mov.sum()), "gaussians": len(g),
           "true_rms_end_to_end": round(float(np.sqrt((true ** 2).sum(1).mean())), 2),
           "carried": round(float((dd * true).sum() / (true ** 2).sum()), 3), "carried_by_axis_distance": by_radius,
           "per_particle_slope": round(slope, 3), "per_particle_corr": round(float(np.corrcoef(t[idx], amp)[0, 1]), 3)}
    if res.model_config.split:
        zc = res.z[idx, res.model_config.zdim_conf:]
        out["composition_latent_vs_motion_corr"] = round(float(max(abs(np.corrcoef(t[idx], c)[0, 1]) for c in zc.T)), 3)
    print(json.dumps(out), flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", nargs="+")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    from gaussianem.io.atomic import write_json
    write_json(a.output, {"cells": [carried(c) for c in a.cells]})


if __name__ == "__main__":
    main()
