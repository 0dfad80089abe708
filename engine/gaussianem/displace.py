"""Carrying Gaussian displacements onto an atomic model.

Each atom moves by a smooth, distance-weighted average of the displacements of its ``k``
nearest base Gaussians (weights ``exp(-d^2 / (2 sigma^2))``, normalised; ``sigma``
defaults to the Gaussians' median nearest-neighbour distance). The neighbour-graph
losses keep neighbouring Gaussians moving alike, so the interpolated field is locally
near-rigid and bond geometry survives (see ``bond_length_rms_change`` in
:mod:`gaussianem.structure`). The weights are computed once per model
(:class:`AtomInterpolator`); moving a model to a new latent is one small matrix product.
"""

from __future__ import annotations

import numpy as np
import torch


class ModelOutsideMapError(ValueError):
    pass


class AtomInterpolator:
    """Weights from atoms (engine frame, (M, 3)) to the base Gaussians' centres (N, 3)."""

    def __init__(self, atoms_xyz: np.ndarray, centres: np.ndarray, k: int = 8,
                 sigma: float | None = None, name: str = "the atomic model"):
        from scipy.spatial import cKDTree
        centres = np.asarray(centres, dtype=np.float64)
        atoms = np.asarray(atoms_xyz, dtype=np.float64)
        tree = cKDTree(centres)
        if sigma is None:
            nn = tree.query(centres, k=2)[0][:, 1]
            sigma = float(np.median(nn))
        k = min(k, len(centres))
        dist, idx = tree.query(atoms, k=k)
        dist = dist.reshape(len(atoms), k)
        idx = idx.reshape(len(atoms), k)
        near = dist[:, 0] < 3 * sigma
        if near.mean() < 0.5:
            raise ModelOutsideMapError(
                f"{name} does not overlap the Gaussians of the map: only {near.mean():.0%} of its "
                f"atoms lie within {3 * sigma:.1f} A of a Gaussian (is it fitted into the consensus map, "
                "in the same coordinate frame?)")
        w = np.exp(-0.5 * (dist / sigma) ** 2)
        w[~near] = np.exp(-0.5 * ((dist[~near] - dist[~near, :1]) / sigma) ** 2)  # far atoms: nearest dominate
        w /= w.sum(1, keepdims=True)
        self.idx = torch.from_numpy(idx)
        self.weights = torch.from_numpy(w.astype(np.float32))
        self.sigma = sigma
        self.fraction_near = float(near.mean())

    def __call__(self, displacement: torch.Tensor) -> torch.Tensor:
        """Gaussian displacements (N, 3) or (B, N, 3) -> atom displacements (M, 3) / (B, M, 3)."""
        d = displacement.detach().float().cpu()
        gathered = d[..., self.idx, :]                                   # (..., M, k, 3)
        return (gathered * self.weights[..., None]).sum(-2)
