"""Where between the Gaussians and the atoms is a motion lost? (issue 27, session 17)

  PYTHONPATH=engine .venv/bin/python benchmarks/motion_carried.py CELL [FITTED_AT]

On a robustness cell (``CELL/sim``, ``CELL/run``), at the median latent of each true
motion level: motion arrival on the atoms (``generate --model``, as
``model_landing.py``); the same on the Gaussians within 3 A of the moving atoms, with
their amplitude factors (do fades stand in for the motion?); and the arrival with other
ways of carrying the Gaussians onto the atoms (more neighbours, only the Gaussians
present at the model state, rigid domains fitted to the atoms or to the Gaussians, by
the run's graph-cut labels or the true ones). docs/validation.md, "The whole motion,
session 17".
"""

import json
import os
import sys

import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_landing import moving_atoms, rms as r
from realistic import Motion, RealisticSpec
from gaussianem.io.models import read_model
from gaussianem.analysis.result import load_result
from gaussianem.analysis.reference import model_latent
from gaussianem.analysis import evaluate as ev, domains as dm
from gaussianem.model.displace import AtomInterpolator
from gaussianem.model.rigid_groups import kabsch
cell = sys.argv[1]; fitted_at = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
spec = RealisticSpec(**json.load(open(f"{cell}/sim/spec.json"))["spec"])
model = read_model(f"{cell}/sim/model.pdb"); mo = Motion(model, spec)
res = load_result(f"{cell}/run"); truth = ev.load_truth(f"{cell}/sim")
fitted = model.with_coords(mo.coords(fitted_at)); x0 = fitted.coords
heavy = model.elements != "H"
moving = moving_atoms(spec, mo) & heavy
good = ~truth["junk"].astype(bool) & truth["present"].astype(bool); t = truth["motion"]
ref = model_latent(res, fitted).z
levels = [l for l in truth["eval_motion"] if abs(l - fitted_at) > 0.05]
zs = np.stack([np.median(res.z[good & (np.abs(t - l) <= 0.0626)], axis=0) for l in levels])
g = res.grid
with torch.no_grad():
    out_ref = res.decode(res.check_z(ref)[:1]); out = res.decode(res.check_z(zs))
dref = out_ref["displacement"][0].double().numpy(); amp_ref = out_ref["amp_factor"][0].double().numpy().reshape(-1)
D = out["displacement"].double().numpy()            # (L, N, 3) engine frame
base = res.base.centres.numpy().astype(np.float64)
xe = g.to_engine(x0)
def arrivals(disp_atoms):   # (L, M, 3) engine-frame displacements -> arrival list
    a = []
    for i, l in enumerate(levels):
        true = mo.coords(float(l)); moved_phys = g.to_physical(xe + disp_atoms[i])
        a.append(1 - r((moved_phys - true)[moving]) / r((x0 - true)[moving]))
    return np.round(a, 3)
def report(name, disp_atoms):
    a = arrivals(disp_atoms); print(f"{name:28s} arrival {a} mean {a.mean():.3f}", flush=True)
# 1 current
interp = AtomInterpolator(xe, base, offset=dref)
report("current LBS", np.stack([interp(torch.from_numpy(d)).double().numpy() for d in D]))
# 2 Gaussians: carried fraction, on Gaussians near moving atoms at the ref state
from scipy.spatial import cKDTree
gref = base + dref; tree = cKDTree(xe); dist, near = tree.query(gref)
sel = (dist < 3.0) & moving[near]
print("amp at ref of Gaussians near moving atoms: median", np.median(amp_ref[sel]).round(3), "frac<0.5", (amp_ref[sel] < 0.5).mean().round(3), "n", sel.sum())
for i, l in enumerate(levels):
    true_d = g.to_engine(mo.coords(float(l)))[near[sel]] - xe[near[sel]]
    dec = D[i][sel] - dref[sel]
    print(f"  level {l:.2f} gauss arrival {1 - r(dec - true_d) / r(true_d):.3f} proj {float((dec*true_d).sum()/(true_d*true_d).sum()):.3f}  amp med {np.median(out['amp_factor'][i].numpy().reshape(-1)[sel]):.3f}")
# 3 amplitude-masked interpolation
keep = amp_ref > 0.5
interp2 = AtomInterpolator(xe, base[keep], offset=dref[keep])
report("LBS on present Gaussians", np.stack([interp2(torch.from_numpy(d[keep])).double().numpy() for d in D]))
# 4 k and sigma
for k, s in ((16, None), (32, 3.0)):
    i3 = AtomInterpolator(xe, base, offset=dref, k=k, sigma=s)
    report(f"LBS k{k} sigma{s}", np.stack([i3(torch.from_numpy(d)).double().numpy() for d in D]))
# 5 domain-rigid from decoded atom displacements
disp_atoms = np.stack([interp(torch.from_numpy(d)).double().numpy() for d in D])
for accept in (0.6, 0.8):
    doms = dm.segment(fitted, disp_atoms, accept=accept)
    lab = doms.atom_labels; out5 = np.zeros_like(disp_atoms)
    for i in range(len(D)):
        for j in np.unique(lab):
            m = lab == j
            R, pc, qc = kabsch(xe[m], xe[m] + disp_atoms[i][m])
            out5[i][m] = (xe[m] - pc) @ R.T + qc - xe[m]
    report(f"domain-rigid k={lab.max()+1} acc{accept}", out5)
# 6 rigid projection of the Gaussians' displacements per domain (graph-cut labels / oracle labels), then LBS
ck = torch.load(f"{cell}/run/checkpoint.pt", map_location="cpu", weights_only=False)
gl = ck.get("graph_labels")
orc_lab = np.zeros(len(base), int); _, nn_all = tree.query(gref); orc_lab[moving[nn_all]] = 1
if spec.motion == "two_hinges":
    orc_lab[mo.mask2[nn_all]] = 2
def rigid_proj(d, lab):
    out = d.copy()
    for j in np.unique(lab):
        m = lab == j
        if m.sum() < 3: continue
        Rm, pc, qc = kabsch(gref[m], gref[m] + d[m] - dref[m])
        out[m] = (gref[m] - pc) @ Rm.T + qc - gref[m] + dref[m]
    return out
for name, lab in (("graph-cut labels", gl), ("oracle labels", orc_lab)):
    if lab is None: print(name, "none"); continue
    lab = np.asarray(lab)
    Dp = np.stack([rigid_proj(d, lab) for d in D])
    report(f"rigid proj {name} k={len(np.unique(lab))}", np.stack([interp(torch.from_numpy(d)).double().numpy() for d in Dp]))
