"""Does the training loss ask for the true motion? (issue 27, session 18)

  PYTHONPATH=engine .venv/bin/python benchmarks/motion_loss.py CELL [RUN] [--json OUT]

On a robustness cell (``CELL/sim``; the run in ``CELL/run`` unless RUN is given): the
decoded state at the median latent of the complete particles is matched to the true
motion level it looks most like (the level whose atoms the present Gaussians lie nearest).
From there each Gaussian follows its nearest atom along the true motion, which gives
"true" positions for every particle. For up to 64 complete particles at each end of the
motion the image loss (full band, as training ends) is compared between the decoded
positions, the positions half way to the true ones and the true ones, the moving
Gaussians only (within 4 A of the moving atoms), with each particle's decoded amplitudes;
and the structure terms of training (neighbour distance on the held edges of the run's
cut graph, alignment, spacing) for the decoded and the true positions of every Gaussian.
docs/validation.md, "The whole motion, session 18".
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from scipy.spatial import cKDTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_landing import moving_atoms
from realistic import Motion, RealisticSpec
from gaussianem.analysis import evaluate as ev
from gaussianem.analysis.result import load_result
from gaussianem.io.models import read_model
from gaussianem.model import intensity, losses
from gaussianem.train.step import NeighbourGraph

NEAR = 4.0        # Angstrom: a Gaussian this close to a moving atom is a moving Gaussian
ENDS = ((0.85, 1.01), (0.0, 0.15))


def matched_level(g_ref, present, grid, motion, moving):
    """The true motion level whose atoms the present decoded Gaussians ``g_ref`` lie nearest."""
    best = None
    for level in np.linspace(0, 1, 41):
        d, _ = cKDTree(grid.to_engine(motion.coords(float(level)))).query(g_ref[present])
        score = float(np.mean(np.minimum(d, NEAR) ** 2))
        if best is None or score < best[0]:
            best = (score, float(level))
    return best[1]


@torch.no_grad()
def measure(cell: str, run: str) -> dict:
    spec = RealisticSpec(**json.load(open(f"{cell}/sim/spec.json"))["spec"])
    model = read_model(f"{cell}/sim/model.pdb")
    motion = Motion(model, spec)
    res, truth = load_result(run), ev.load_truth(f"{cell}/sim")
    grid, m = res.grid, res.model
    moving = moving_atoms(spec, motion) & (model.elements != "H")
    good = ~truth["junk"].astype(bool) & truth["present"].astype(bool)
    t = truth["motion"]
    images, phys = res.particle_source()
    emb = m.embed()
    z_ref = np.median(res.z[good], 0)
    o = m.decode(torch.from_numpy(z_ref[None]).float(), emb)
    g_ref = (m.centres + o["displacement"][0]).double().numpy()
    present = o["amp_factor"][0].reshape(-1).numpy() > 0.5
    level = matched_level(g_ref, present, grid, motion, moving)
    atoms_ref = grid.to_engine(motion.coords(level))
    dist, near = cKDTree(atoms_ref).query(g_ref)
    sel = torch.from_numpy((dist < NEAR) & moving[near])
    ck = torch.load(os.path.join(run, "checkpoint.pt"), map_location="cpu", weights_only=False)
    graph = NeighbourGraph.build(res.base, None, "cpu").cut(ck.get("graph_labels"))
    c0, s2 = m.centres.double(), graph.edge_scale ** 2
    out = {"cell": cell, "run": run, "centre_matches_level": level, "moving_gaussians": int(sel.sum())}
    for lo, hi in ENDS:
        rows = np.flatnonzero(good & (t >= lo) & (t < hi))[:64]
        target = intensity.normalise(images.__getitems__(rows)["image"], res.image_std)
        dec_out = m.decode(torch.from_numpy(res.z[rows]).float(), emb)
        dec = (m.centres + dec_out["displacement"]).double()
        true = torch.stack([torch.from_numpy(g_ref + grid.to_engine(motion.coords(float(t[r])))[near]
                                             - atoms_ref[near]) for r in rows])

        def image(pos):
            pred = phys.project(pos.float(), dec_out["amplitudes"], dec_out["widths"], torch.from_numpy(rows),
                                m.cfg.box) * m.scale
            return ((pred - target) ** 2).mean((-2, -1)).double()

        def moved(a):                       # the moving Gaussians a of the way to the true positions
            pos = dec.clone()
            pos[:, sel] = dec[:, sel] + a * (true[:, sel] - dec[:, sel])
            return pos

        base = image(dec)
        end = {}
        for a in (0.5, 1.0):
            loss = image(moved(a))
            end[f"image_{a}_minus_decoded_x1e4"] = round(1e4 * float((loss - base).mean()), 3)
            end[f"particles_preferring_{a}"] = round(float((loss < base).double().mean()), 3)
        rel = true[:, sel] - torch.from_numpy(g_ref[sel.numpy()])
        end["carried_on_moving_gaussians"] = round(float(
            ((dec[:, sel] - torch.from_numpy(g_ref[sel.numpy()])) * rel).sum((1, 2)).div(rel.pow(2).sum((1, 2)))
            .median()), 3)
        for name, pos in (("decoded", dec), ("true", true)):
            end[f"terms_{name}"] = {
                "image": round(float(image(pos).mean()), 6),
                "distance": round(float(losses.distance_loss(c0, pos, graph.strained)) / s2, 6),
                "alignment": round(float(losses.alignment_loss(pos - c0, graph.strained)) / s2, 6),
                "spacing": round(float(losses.spacing_loss(pos, graph.edges, graph.min_dist)), 6)}
        out[f"motion_{lo}_{hi}"] = end
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cell")
    p.add_argument("run", nargs="?")
    p.add_argument("--json", help="append the result to this JSON list")
    a = p.parse_args()
    torch.set_num_threads(1)
    out = measure(a.cell, a.run or os.path.join(a.cell, "run"))
    print(json.dumps(out, indent=1))
    if a.json:
        old = json.load(open(a.json)) if os.path.exists(a.json) else []
        json.dump(old + [out], open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
