"""Do displaced models land on the state? (issue 14 item 5; ``gaussianem generate --model``)

On cells of the robustness matrix (``CELL/sim``: ``model.pdb``, ``spec.json``,
``ground_truth.npz``; ``CELL/run``: the trained result), the fitted model a user would have
is the true model at one END of the motion (``--fitted-at``, default 0: the "closed"
state), not the consensus' average. For each true motion level (the median latent of the
non-junk, complete particles there, as ``analysis.evaluate.per_conformation_fsc``) the
model is moved with ``Result.displace_model`` relative to the latent it stands for
(``analysis.reference.model_latent``, what ``generate --reference auto`` does) and
compared with the true frame of that level (``benchmarks/realistic.py``'s ``Motion``):

* heavy-atom RMSD of the displaced and of the undisplaced model to the true frame, over
  all atoms and over the moving part (the hinge's moving part; for normal modes the 30%
  of atoms that move most end to end);
* how much of the true motion arrives: RMS displacement of the moving part, decoded
  (displaced - fitted) against true (true frame - fitted frame);
* bond lengths kept: RMS change of covalent bond lengths in the displaced model
  (``io.models.bond_length_rms_change``, bonds of ``bond_pairs``, as ``generate`` reports).

  .venv/bin/python benchmarks/model_landing.py bench_out/robustness_final/hinge -o benchmarks/results/model_landing_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def rms(x) -> float:
    return float(np.sqrt((np.asarray(x) ** 2).sum(-1).mean()))


def moving_atoms(spec, motion) -> np.ndarray:
    """The moving part (atom mask): the hinges' moving atoms, or for normal modes the 30%
    of atoms that move most end to end."""
    if spec.motion == "hinge":
        return motion.mask.copy()
    if spec.motion == "two_hinges":
        return motion.mask | motion.mask2
    amp = np.linalg.norm(motion.coords(1.0) - motion.coords(0.0), axis=1)
    return amp >= np.quantile(amp, 0.7)


def landing(cell: str, fitted_at: float = 0.0, reference: str = "auto") -> dict:
    from realistic import Motion, RealisticSpec
    from gaussianem.analysis import evaluate as ev
    from gaussianem.analysis.reference import model_latent
    from gaussianem.analysis.result import load_result
    from gaussianem.io.models import bond_length_rms_change, bond_pairs, read_model
    with open(f"{cell}/sim/spec.json") as f:
        spec = RealisticSpec(**json.load(f)["spec"])
    model = read_model(f"{cell}/sim/model.pdb")
    motion = Motion(model, spec)
    res = load_result(f"{cell}/run")
    truth = ev.load_truth(f"{cell}/sim")
    heavy = model.elements != "H" if hasattr(model, "elements") else np.ones(len(model.coords), bool)
    fitted_xyz = motion.coords(fitted_at)
    fitted = model.with_coords(fitted_xyz)
    moving = moving_atoms(spec, motion) & heavy
    pairs = bond_pairs(fitted)
    ref = model_latent(res, fitted).z if reference == "auto" else None
    good = ~truth["junk"].astype(bool) & truth["present"].astype(bool)
    levels, t = truth["eval_motion"], truth["motion"]
    half = 0.5 / max(len(levels) - 1, 1)
    rows = []
    for level in levels:
        sel = good & (np.abs(t - level) <= half * 0.5 + 1e-6)
        if not sel.any():
            continue
        z = np.median(res.z[sel], axis=0)
        moved = res.displace_model(fitted, z, reference=ref).coords
        true = motion.coords(float(level))
        rows.append({
            "motion": round(float(level), 3), "n": int(sel.sum()),
            "rmsd_displaced": round(rms((moved - true)[heavy]), 3),
            "rmsd_undisplaced": round(rms((fitted_xyz - true)[heavy]), 3),
            "moving_rmsd_displaced": round(rms((moved - true)[moving]), 3),
            "moving_rmsd_undisplaced": round(rms((fitted_xyz - true)[moving]), 3),
            "moving_decoded_motion": round(rms((moved - fitted_xyz)[moving]), 3),
            "moving_true_motion": round(rms((true - fitted_xyz)[moving]), 3),
            "bond_rms_change": round(bond_length_rms_change(fitted, moved, pairs), 4)})
        print(json.dumps(rows[-1]), flush=True)
    keys = [k for k in rows[0] if k not in ("motion", "n")]
    arrival = motion_arrival(rows)
    print(json.dumps(arrival), flush=True)
    return {"cell": cell, "fitted_at": fitted_at, "reference": reference,
            "reference_latent": None if ref is None else [float(v) for v in ref],
            "rows": rows, "mean": {k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys},
            **arrival}


def motion_arrival(rows) -> dict:
    """Issue 27's measure: arrival = 1 - RMSD(displaced, truth) / RMSD(undisplaced, truth)
    over the moving atoms, per state (states where the fitted model already is, under
    0.5 A from the truth, have nothing to arrive and are left out), at the far end (the
    state farthest from the fitted model), the middle one, the first, and the mean."""
    use = [r for r in rows if r["moving_rmsd_undisplaced"] >= 0.5]
    if not use:
        return {"arrival": []}
    a = [round(1 - r["moving_rmsd_displaced"] / r["moving_rmsd_undisplaced"], 3) for r in use]
    far = int(np.argmax([r["moving_rmsd_undisplaced"] for r in use]))
    near = int(np.argmin([r["moving_rmsd_undisplaced"] for r in use]))
    return {"arrival": a, "arrival_far_end": a[far], "arrival_first": a[near], "arrival_middle": a[len(a) // 2],
            "arrival_mean": round(float(np.mean(a)), 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", nargs="+")
    p.add_argument("--fitted-at", type=float, default=0.0, help="motion coordinate of the fitted model (0..1)")
    p.add_argument("--reference", choices=["auto", "consensus"], default="auto")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    from gaussianem.io.atomic import write_json
    write_json(a.output, {"cells": [landing(c, a.fitted_at, a.reference) for c in a.cells]})


if __name__ == "__main__":
    main()
