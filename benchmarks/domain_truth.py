"""Do the domains training found match the true ones? And how much motion can a median
latent decode? (issue 27, session 19)

  PYTHONPATH=engine .venv/bin/python benchmarks/domain_truth.py CELL [CELL ...]

For each hinge cell of the robustness matrix (``CELL/sim``, the run in ``CELL/run``): the
run's domains (its ``--domain-motion`` labels, else the neighbour-graph labels of its last
checkpoint) against the truth. Each base Gaussian within 3 A of a heavy atom of the middle
state takes that atom's class (chain A's moving third or the core); printed: how many of
the third's Gaussians its main domain holds and what share of their far-end displacement,
the core Gaussians turning with it, and the third's Gaussians left in the core's domain.
Then the latent's own spread: for each motion level, the mean true motion of the 200
complete particles nearest that level's median conformational latent (a decoder that gives
each latent the mean motion of its particles carries at most the spread between the ends).
docs/validation.md, "The whole motion, session 19".
"""

import json
import os
import sys

import numpy as np
import torch
from scipy.spatial import cKDTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from realistic import Motion, RealisticSpec
from gaussianem.analysis import evaluate as ev
from gaussianem.analysis.result import load_result
from gaussianem.io.models import read_model

NEAR = 3.0        # Angstrom: a Gaussian this close to a heavy atom takes its class
NEAREST = 200     # particles nearest a level's median latent


def run_labels(result, run: str) -> tuple[np.ndarray, str]:
    if getattr(result.model.cfg, "domain_motion", False):
        return result.model.domain_field.labels.numpy(), "rigid domains"
    ck = torch.load(os.path.join(run, "checkpoint.pt"), map_location="cpu", weights_only=False)
    return np.asarray(ck["graph_labels"]), "graph labels"


def domain_match(cell: str, result) -> dict:
    spec = RealisticSpec(**json.load(open(f"{cell}/sim/spec.json"))["spec"])
    model = read_model(f"{cell}/sim/model.pdb")
    mo = Motion(model, spec)
    lab, source = run_labels(result, f"{cell}/run")
    heavy = model.elements != "H"
    x = result.grid.to_engine(mo.coords(0.5))[heavy]
    far = np.linalg.norm(mo.coords(1.0) - mo.coords(0.0), axis=1)[heavy]
    d, i = cKDTree(x).query(result.base.centres.numpy())
    third, core = mo.mask[heavy][i] & (d < NEAR), ~mo.mask[heavy][i] & (d < NEAR)
    main, core_dom = np.bincount(lab[third]).argmax(), np.bincount(lab[core]).argmax()
    w = far[i]
    held, left = third & (lab == main), third & (lab == core_dom)
    return {"source": source, "domains": int(len(np.unique(lab))), "third": int(third.sum()),
            "third_in_main": int(held.sum()), "main_share_of_displacement": round(float(w[held].sum() / w[third].sum()), 3),
            "core_in_main": int((core & (lab == main)).sum()), "third_in_core_domain": int(left.sum()),
            "their_far_displacement_A": round(float(w[left].mean()), 2) if left.any() else None,
            "third_far_displacement_A": round(float(w[third].mean()), 2)}


def latent_spread(cell: str, result) -> list:
    truth = ev.load_truth(f"{cell}/sim")
    good = ~truth["junk"].astype(bool) & truth["present"].astype(bool)
    t = truth["motion"]
    cfg = result.model.cfg
    zc = result.z[:, :cfg.zdim_conf] if cfg.split else result.z
    out = []
    for level in truth["eval_motion"]:
        zm = np.median(zc[good & (np.abs(t - level) <= 0.0626)], axis=0)
        d = np.linalg.norm(zc - zm, axis=1)
        d[~good] = np.inf
        near = np.argsort(d)[:NEAREST]
        out.append({"level": round(float(level), 2), "mean_true_motion": round(float(t[near].mean()), 3)})
    return out


if __name__ == "__main__":
    for cell in sys.argv[1:]:
        res = load_result(f"{cell}/run")
        print(json.dumps({"cell": cell, "domains": domain_match(cell, res), "latent": latent_spread(cell, res)}))
