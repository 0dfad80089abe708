"""The latent a fitted atomic model stands for.

Decoded displacements move the base Gaussians, which were fitted to the consensus map: an
average over the particles' states. An atomic model fitted into that map stands for one
particular state (the one the modeller saw, often an end of the motion), so moving it by
``displacement(z)`` puts it at ``its state + (state(z) - consensus)``, off by the
difference between its state and the consensus. :func:`model_latent` finds the latent
whose deformed Gaussians best match the model, and models are then moved by
``displacement(z) - displacement(z_model)`` (``Result.displace_model(..., reference=)``).

The match: the mean distance from each residue centre of the model to the nearest
deformed Gaussian that is present (amplitude factor above one half), a soft minimum so
that it can be minimised by gradient descent. Candidates are the k-means centres of the
particles' latents (real particles' latents) and the medoid; the best is refined by
gradient descent on z, kept within the range of the particles' latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gaussianem.analysis.clusters import kmeans
from gaussianem.analysis.result import Result
from gaussianem.io.models import AtomicModel

SOFTMIN_A = 1.0          # Angstrom: the soft minimum's temperature


@dataclass
class ModelLatent:
    z: np.ndarray               # (zdim,) float32
    distance: float             # mean residue-to-nearest-Gaussian distance at z (Angstrom)
    consensus_distance: float   # the same for the undeformed Gaussians
    candidates: int


def _distance(result: Result, z: torch.Tensor, residues: torch.Tensor) -> torch.Tensor:
    """(B,) mean soft-min distance from the residues to the present deformed Gaussians."""
    out = result.model.decode(z, result._emb)
    d = torch.cdist(residues.expand(len(z), -1, -1), out["centres"].float())        # (B, R, G)
    absent = (out["amp_factor"].float() < 0.5)[:, None, :]
    d = d + absent * 1e3
    soft = -SOFTMIN_A * torch.logsumexp(-d / SOFTMIN_A, dim=-1)                       # (B, R)
    return soft.mean(-1)


def model_latent(result: Result, model: AtomicModel, k: int = 32, steps: int = 60, seed: int = 0) -> ModelLatent:
    """The latent whose deformed Gaussians best match ``model`` (consensus map frame)."""
    z_all = result.require_z()
    residues = torch.from_numpy(result.grid.to_engine(model.residue_centres()).astype(np.float32))
    residues = residues.to(result.device)[None]
    km = kmeans(z_all, min(int(k), len(z_all)), seed=seed)
    medoid = z_all[result.medoid_index()]
    cand = torch.from_numpy(np.concatenate([km.centres, medoid[None]]).astype(np.float32)).to(result.device)
    with torch.no_grad():
        scores = _distance(result, cand, residues)
        base = torch.cdist(residues[0], result.model.centres.float()).min(-1).values.mean()
    z = cand[int(torch.argmin(scores))].clone()[None].requires_grad_(True)
    lo = torch.from_numpy(np.percentile(z_all, 0.5, axis=0).astype(np.float32)).to(result.device)
    hi = torch.from_numpy(np.percentile(z_all, 99.5, axis=0).astype(np.float32)).to(result.device)
    opt = torch.optim.Adam([z], lr=0.05 * float((hi - lo).mean()))
    best = (float(scores.min()), z.detach().clone())
    with torch.enable_grad():
        for _ in range(int(steps)):
            opt.zero_grad()
            loss = _distance(result, z, residues)[0]
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.data = torch.maximum(torch.minimum(z.data, hi), lo)
                now = float(_distance(result, z, residues)[0])
                if now < best[0]:
                    best = (now, z.detach().clone())
    return ModelLatent(best[1][0].cpu().numpy().astype(np.float32), best[0], float(base), len(cand))
