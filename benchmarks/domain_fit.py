"""Rigid domains fitted to the particles: does the hinge land? (issue 14 item 5)

The decoder finds the hinge of the robustness matrix (each particle's decoded motion
follows its true one) but carries only part of it (docs/validation.md, "Displaced
models"). ``gaussianem generate --model M --fit-domains`` finds the model's rigid domains
from the decoded displacements (:mod:`gaussianem.analysis.domains`) and fits them as rigid
bodies to the particles of each state (:mod:`gaussianem.analysis.domain_fit`). This
measures it against the truth:

1. the fitted model is the true model at motion 0 (as ``model_landing.py``), its latent
   found as ``generate --reference auto`` finds it;
2. per true motion level, the latent is the median latent of that level's particles
   (good, subunit-present particles);
3. domains: ``--domains found`` (default, what ``generate`` does) or ``oracle`` (the true
   moving part; for a hinge cell only: an upper bound);
4. heavy-atom RMSD to the true frame, over the moving part (hinge; for a normal mode the
   atoms that move more than the median) and over all atoms: undisplaced, displaced
   (``generate --model``), fitted (``--fit-domains``); bond-length RMS change.

  .venv/bin/python benchmarks/domain_fit.py CELL [--run RUN] [--domains found|oracle] -o OUT.json

CELL holds ``sim/`` (``model.pdb``, ``spec.json``, ground truth) and ``run/`` (a trained
result) as the robustness matrix writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def domain_fit(cell: str, run: str, domains: str = "found", particles: int = 200, steps: int = 80,
               sort: str = "images", fitted_at: float = 0.0) -> dict:
    from realistic import Motion, RealisticSpec
    from gaussianem.analysis import evaluate as ev
    from gaussianem.analysis.domain_fit import (OWN_STATE_MAX, checked_fit, displaced_fit, domains_by_images,
                                                model_domains, own_state_shift, usable_particles)
    from gaussianem.analysis.domains import Domains
    from gaussianem.analysis.reference import model_latent
    from gaussianem.analysis.result import load_result
    from gaussianem.analysis.state_particles import nearest_particles
    from gaussianem.io.models import bond_length_rms_change, bond_pairs, read_model
    with open(f"{cell}/sim/spec.json") as f:
        spec = RealisticSpec(**json.load(f)["spec"])
    model = read_model(f"{cell}/sim/model.pdb")
    motion = Motion(model, spec)
    res = load_result(run)
    truth = ev.load_truth(f"{cell}/sim")
    fitted = model.with_coords(motion.coords(fitted_at))
    pairs = bond_pairs(fitted)
    if spec.motion == "hinge":
        moving = motion.mask
    elif spec.motion == "two_hinges":
        moving = motion.mask | motion.mask2
    else:
        far = np.linalg.norm(motion.coords(1.0) - motion.coords(0.0), axis=1)
        moving = far > np.median(far)
    ref = model_latent(res, fitted).z
    interp = res.interpolator(fitted.coords, name="the fitted model", bonds=pairs, reference=ref,
                              residues=fitted.sequence)
    t0 = time.perf_counter()
    if domains == "oracle":
        if spec.motion != "hinge":
            raise SystemExit("--domains oracle needs a hinge cell")
        lab = moving.astype(int)
        dom = Domains(np.bincount(fitted.res_index, lab) > 0, lab)
        dom.residue_labels = dom.residue_labels.astype(int)
    else:
        dom = model_domains(res, fitted, interp, ref)
    seg_seconds = time.perf_counter() - t0
    usable, note = usable_particles(res)                  # as generate: the run's junk left out
    agree = float(max(((dom.atom_labels == k) == moving).mean() for k in range(dom.n)))
    path, found_path, path_note = None, None, {}
    if sort == "images":
        t1 = time.perf_counter()
        found, path = domains_by_images(res, fitted, dom, interp, ref, usable, particles, steps)
        if domains == "found":                        # oracle domains stay as they are
            dom = found.domains
        tp = truth["motion"][path.indices]
        path_note = {"r2": round(path.r2, 3), "scored": len(path.indices), "seconds": round(time.perf_counter() - t1, 1),
                     "judged": found.judged,
                     "corr_with_true_motion": round(float(np.corrcoef(path.s, tp)[0, 1]), 3) if spec.motion == "hinge"
                     else None, "boundaries": found.moves,
                     "agreement_before": round(agree, 4),
                     "agreement": round(float(max(((dom.atom_labels == k) == moving).mean() for k in range(dom.n))), 4)}
        print(json.dumps({"path": path_note}), flush=True)
        agree = path_note["agreement"]
        found_path, path = path, (path if path.usable else None)
    shift = own_state_shift(res, fitted, dom, ref, interp, found_path, particles, steps, usable) if (
        dom.n > 1 and found_path is not None) else None     # as generate: an unusable path still gives the end
    sunk = shift is not None and shift > OWN_STATE_MAX         # as generate: the displaced models are written
    print(json.dumps({"own_state_shift": shift, "displaced_written": sunk}), flush=True)
    good = ~truth["junk"].astype(bool) & truth["present"].astype(bool)
    levels, t = truth["eval_motion"], truth["motion"]
    half = 0.5 / max(len(levels) - 1, 1)
    rows = []
    for level in levels:
        z = np.median(res.z[good & (np.abs(t - level) <= half * 0.5 + 1e-6)], axis=0).astype(np.float32)
        true = motion.coords(float(level))
        moved = res.displace_model(fitted, z[None], interpolator=interp, reference=ref)
        chosen = path.select(res, z, particles, usable) if path is not None else None
        fit = displaced_fit(moved.coords, dom, interp, particles, "own state moved") if sunk else checked_fit(
            res, fitted, moved.coords, dom, z, interp, particles=particles, steps=steps, usable=usable,
            indices=chosen,           # as generate --fit-domains: checked on held-out particles
            start=path.coords_at(fitted, z, res.z) if path is not None else None)
        chosen = chosen if chosen is not None else nearest_particles(res, z, particles, usable)

        def rmsd(x, sel=moving):
            return round(float(np.sqrt(((x - true)[sel] ** 2).sum(-1).mean())), 3)
        rows.append({"motion": round(float(level), 3),
                     "moving_rmsd": {"undisplaced": rmsd(fitted.coords), "displaced": rmsd(moved.coords),
                                     "fitted": rmsd(fit.coords)},
                     "all_rmsd": {"undisplaced": rmsd(fitted.coords, slice(None)),
                                  "displaced": rmsd(moved.coords, slice(None)),
                                  "fitted": rmsd(fit.coords, slice(None))},
                     "bond_length_rms_change": round(bond_length_rms_change(fitted, fit.coords, pairs), 4),
                     "particles_true_motion": round(float(t[chosen].mean()), 3),
                     "fit": fit.summary()})
        print(json.dumps(rows[-1]), flush=True)
    mean = {k: round(float(np.mean([r["moving_rmsd"][k] for r in rows])), 3) for k in rows[0]["moving_rmsd"]}
    return {"cell": cell, "run": run, "motion": spec.motion, "fitted_at": fitted_at, "domains": domains,
            "found": dom.summary(),
            "segmentation_agreement": round(agree, 4), "segmentation_seconds": round(seg_seconds, 1),
            "left_out": note, "usable_particles": int(usable.sum()),
            "particles": particles, "steps": steps, "sort": sort, "path": path_note, "own_state_shift": shift,
            "displaced_written": sunk, "rows": rows, "mean_moving_rmsd": mean,
            "max_moving_rmsd": {k: max(r["moving_rmsd"][k] for r in rows) for k in rows[0]["moving_rmsd"]}}


def both_ends(cell: str, run: str, particles: int = 200, steps: int = 80) -> dict:
    """``generate --fit-domains`` with the model at either end of the motion (issue 33): per
    end, the domains found, the images' judgements of finer splits, and the moving atoms'
    RMSD to the truth over the five levels (mean and worst; fitted and plain displaced)."""
    out = {}
    for name, at in (("start", 0.0), ("far_end", 1.0)):
        r = domain_fit(cell, run, particles=particles, steps=steps, fitted_at=at)
        out[name] = {"domains": r["found"]["domains"], "judged": (r["path"] or {}).get("judged"),
                     "fitted": [x["moving_rmsd"]["fitted"] for x in r["rows"]],
                     "displaced": [x["moving_rmsd"]["displaced"] for x in r["rows"]],
                     "mean": r["mean_moving_rmsd"], "worst": r["max_moving_rmsd"],
                     "under_2A": bool(r["max_moving_rmsd"]["fitted"] < 2.0)}
    return out


def main():
    import torch
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cell")
    p.add_argument("--run", help="the trained result (default CELL/run)")
    p.add_argument("--domains", choices=["found", "oracle"], default="found")
    p.add_argument("--particles", type=int, default=200)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--sort", choices=["images", "latent"], default="images",
                   help="each state's particles: by their place on the domains' path (images) or nearest its latent")
    p.add_argument("--fitted-at", type=float, default=0.0, help="motion coordinate of the fitted model (0 or 1: "
                                                                   "either end)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from gaussianem.io.atomic import write_json
    write_json(a.output, domain_fit(a.cell, a.run or f"{a.cell}/run", a.domains, a.particles, a.steps, a.sort,
                                       a.fitted_at))


if __name__ == "__main__":
    main()
