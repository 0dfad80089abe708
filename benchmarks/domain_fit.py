"""Rigid domains fitted to the particles: does the hinge land? (issue 14 item 5, a prototype)

The decoder finds the hinge of the robustness matrix (each particle's decoded motion
follows its true one, corr 0.94) but carries only part of it (docs/validation.md,
"Displaced models"). This asks whether the particle images themselves bring the model the
rest of the way, after training, without retraining:

1. the fitted model (the true model at motion 0, as ``model_landing.py``) is displaced to
   each true motion level's median latent relative to its own latent (``generate --model
   --reference auto``), heavy atoms;
2. domains, from the decoded displacement at the level that moves most (no ground truth):
   ``--domains kmeans`` (default) splits the heavy atoms in two by k-means on their
   displacement vectors, ``rotation`` the residues by k-means on how their neighbourhoods
   turn (:func:`rotation_domains`; agreed no better with the true split: 0.89 against
   0.91); ``oracle`` takes the true moving part (an upper bound);
3. each domain starts at the rigid (Kabsch) fit of its decoded displacement and is then
   fitted as a rigid body (rotation vector and translation per domain, Adam, ``--steps``)
   to the ``--particles`` particles nearest the level's latent in latent space: the
   objective is the mean over particles of <projection, image> / |projection|, the heavy
   atoms rendered as 1.5 A Gaussians with each particle's pose, CTF and intensity scale
   (``model.encoding.Physics``), images normalised as training does;
4. moving-part heavy-atom RMSD to the true frame: decoded, Kabsch start, fitted.

  .venv/bin/python benchmarks/domain_fit.py CELL [--run RUN] [--domains kmeans|oracle] -o OUT.json

CELL holds ``sim/`` (``model.pdb``, ``spec.json``, ground truth) and ``run/`` (a trained
result) as the robustness matrix writes them. Not in the engine yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def rotation(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: the rotation matrix of rotation vector ``w`` (3,)."""
    th = w.norm() + 1e-12
    k = w / th
    kx = torch.stack([torch.stack([0 * k[0], -k[2], k[1]]), torch.stack([k[2], 0 * k[0], -k[0]]),
                      torch.stack([-k[1], k[0], 0 * k[0]])])
    return torch.eye(3) + torch.sin(th) * kx + (1 - torch.cos(th)) * kx @ kx


def kabsch(p: np.ndarray, q: np.ndarray):
    """(R, centre of p, centre of q): the rotation taking p onto q about their centres."""
    pc, qc = p.mean(0), q.mean(0)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1, 1, d]) @ u.T, pc, qc


def rotation_domains(model, heavy: np.ndarray, u: np.ndarray, k: int = 12) -> np.ndarray:
    """Two domains of the heavy atoms by how their neighbourhoods turn (DynDom's idea): each
    residue's rotation vector (Kabsch of its ``k`` nearest residues' centres, fitted model
    against fitted + decoded displacement ``u`` of the heavy atoms), split by k-means; the
    atoms take their residue's label."""
    from scipy.cluster.vq import kmeans2
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation
    ri = model.res_index[heavy]
    n = int(ri.max()) + 1
    cnt = np.maximum(np.bincount(ri, minlength=n), 1)[:, None]
    x0 = model.coords[heavy]
    c0 = np.stack([np.bincount(ri, x0[:, a], minlength=n) for a in range(3)], 1) / cnt
    c1 = np.stack([np.bincount(ri, (x0 + u)[:, a], minlength=n) for a in range(3)], 1) / cnt
    nb = cKDTree(c0).query(c0, k=min(k, n))[1]
    rotvec = np.array([Rotation.from_matrix(kabsch(c0[j], c1[j])[0]).as_rotvec() for j in nb])
    _, lab = kmeans2(np.degrees(rotvec), 2, minit="++", seed=0)
    return lab[ri]


def domain_fit(cell: str, run: str, domains: str = "kmeans", n_particles: int = 200, steps: int = 80,
               lr: float = 0.01, width: float = 1.5) -> dict:
    from realistic import Motion, RealisticSpec
    from scipy.cluster.vq import kmeans2
    from gaussianem.analysis import evaluate as ev
    from gaussianem.analysis.reference import model_latent
    from gaussianem.analysis.result import load_result
    from gaussianem.analysis.selection import source_particles
    from gaussianem.io.cache import PlainReadImages
    from gaussianem.io.models import bond_pairs, read_model
    from gaussianem.model import intensity
    from gaussianem.model.encoding import Physics
    with open(f"{cell}/sim/spec.json") as f:
        spec = RealisticSpec(**json.load(f)["spec"])
    model = read_model(f"{cell}/sim/model.pdb")
    motion = Motion(model, spec)
    if spec.motion != "hinge":
        raise SystemExit(f"{cell}: not a hinge cell")
    res = load_result(run)
    truth = ev.load_truth(f"{cell}/sim")
    heavy = ~np.isin(np.char.upper(model.elements), ["H", "D"])
    fitted_xyz = motion.coords(0.0)
    fitted = model.with_coords(fitted_xyz)
    moving = motion.mask[heavy]
    interp = res.interpolator(fitted.coords, name="the fitted model", bonds=bond_pairs(fitted))
    ref = model_latent(res, fitted).z
    data = source_particles(res)
    box = res.model_config.box
    images = PlainReadImages(data, box=box, invert=bool(res.config["train"].get("invert", False)))
    phys = Physics(data, box, res.device)
    phys.set_intensity(res.intensity)
    centre = torch.from_numpy(res.grid.centre.astype(np.float32))
    atoms = torch.from_numpy(fitted_xyz[heavy].astype(np.float32))
    amps, widths = torch.ones(len(atoms)), torch.full((len(atoms),), width)

    good = ~truth["junk"].astype(bool) & truth["present"].astype(bool)
    levels, t = truth["eval_motion"], truth["motion"]
    half = 0.5 / max(len(levels) - 1, 1)
    zs = [np.median(res.z[good & (np.abs(t - lv) <= half * 0.5 + 1e-6)], axis=0) for lv in levels]
    us = [(interp(res.decode(z)["displacement"]) - interp(res.decode(ref)["displacement"])).numpy()[0][heavy]
          for z in zs]
    far = int(np.argmax([np.sqrt((u ** 2).sum(-1).mean()) for u in us]))
    if domains == "oracle":
        labels = moving.astype(int)
    elif domains == "rotation":
        labels = rotation_domains(fitted, heavy, us[far])
    else:
        _, labels = kmeans2(us[far].astype(np.float64), 2, minit="++", seed=0)
    agree = float(max(((labels == 1) == moving).mean(), ((labels == 0) == moving).mean()))
    groups = [torch.from_numpy(labels == k) for k in np.unique(labels)]
    rows = []
    for level, z, u in zip(levels, zs, us):
        true = motion.coords(float(level))[heavy]
        near = np.argsort(np.linalg.norm(res.z - z, axis=1))[:n_particles]
        raw = torch.stack([images[int(i)]["image"] for i in near]).float()
        imgs = intensity.normalise(raw, res.image_std, phys.remove_offset)
        idx = torch.as_tensor(near)
        starts, params = [], []
        for g in groups:
            r0, pc, qc = kabsch(fitted_xyz[heavy][g.numpy()], (fitted_xyz[heavy] + u)[g.numpy()])
            starts.append(tuple(torch.tensor(a, dtype=torch.float32) for a in (r0, pc, qc)))
            params += [torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)]

        def place(fit: bool = True) -> torch.Tensor:
            x = atoms.clone()
            for k, g in enumerate(groups):
                r0, pc, qc = starts[k]
                r = rotation(params[2 * k]) @ r0 if fit else r0
                x[g] = (atoms[g] - pc) @ r.T + qc + (10.0 * params[2 * k + 1] if fit else 0)
            return x

        opt = torch.optim.Adam(params, lr=lr)
        t0 = time.perf_counter()
        for _ in range(steps):
            p = phys.project(place() - centre, amps, widths, idx, box)
            score = ((p * imgs).sum((-2, -1)) / p.pow(2).sum((-2, -1)).sqrt().clamp_min(1e-6)).mean()
            opt.zero_grad()
            (-score).backward()
            opt.step()
        with torch.no_grad():
            fit, start = place().numpy(), place(fit=False).numpy()

        def rmsd(x, sel=moving):
            return round(float(np.sqrt(((x - true)[sel] ** 2).sum(-1).mean())), 3)
        decoded = fitted_xyz[heavy] + u
        rows.append({"motion": round(float(level), 3), "particles": len(near),
                     "moving_rmsd": {"undisplaced": rmsd(fitted_xyz[heavy]), "decoded": rmsd(decoded),
                                     "kabsch_start": rmsd(start), "fitted": rmsd(fit)},
                     "all_rmsd": {"decoded": rmsd(decoded, slice(None)), "fitted": rmsd(fit, slice(None))},
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    mean = {k: round(float(np.mean([r["moving_rmsd"][k] for r in rows])), 3) for k in rows[0]["moving_rmsd"]}
    return {"cell": cell, "run": run, "domains": domains, "segmentation_agreement": round(agree, 3),
            "particles": n_particles, "steps": steps, "rows": rows, "mean_moving_rmsd": mean}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cell")
    p.add_argument("--run", help="the trained result (default CELL/run)")
    p.add_argument("--domains", choices=["kmeans", "rotation", "oracle"], default="kmeans")
    p.add_argument("--particles", type=int, default=200)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from gaussianem.io.atomic import write_json
    write_json(a.output, domain_fit(a.cell, a.run or f"{a.cell}/run", a.domains, a.particles, a.steps))


if __name__ == "__main__":
    main()
