"""Carrying Gaussian displacements onto an atomic model.

Each atom follows its ``k`` nearest base Gaussians by linear blend skinning: every
Gaussian ``j`` gets a local rigid motion ``(R_j, t_j)``, the least-squares rotation
(Kabsch) that takes its neighbourhood of base centres to their displaced positions, and
an atom moves to the weighted average of those local motions applied to it::

    x' = sum_j w_aj (R_j (x - c_j) + c_j + d_j),   w_aj ~ exp(-|x - c_j|^2 / (2 sigma^2))

For a motion that is rigid over an atom's neighbourhood this is exact (bonds keep their
length), which a plain average of displacements is not: averaging translations of a
rotating domain shrinks it slightly. ``sigma`` defaults to the Gaussians' median
nearest-neighbour distance. Weights and neighbourhoods are computed once per model
(:class:`AtomInterpolator`); moving the model to a new latent is a batched 3x3 SVD per
Gaussian and a small gather.

Where two parts of a model pack against each other, an atom's nearest Gaussians include
the other part's, and a domain that turns away drags its surface atoms back by up to half
their motion. Given the model's chains and residues, each Gaussian belongs to the residue
of its nearest atom, and an atom follows only the Gaussians of its own chain within
``SEQUENCE_WINDOW`` residues of its own (:func:`sequence_weights`). On a 30-degree hinge
whose moving domain packs against another chain, the moving atoms' arrival rose from 0.64
to 0.76 (docs/validation.md, "The whole motion, session 20").
"""

from __future__ import annotations

import numpy as np
import torch

from gaussianem.errors import InputError


SEQUENCE_WINDOW = 5          # residues: an atom follows the Gaussians of residues this near in sequence


class ModelOutsideMapError(InputError):
    pass


def sequence_weights(atoms: np.ndarray, centres: np.ndarray, idx: np.ndarray, weights: np.ndarray,
                     chains: np.ndarray, residues: np.ndarray, window: int = SEQUENCE_WINDOW) -> np.ndarray:
    """``weights`` (M, k) of atoms (M, 3) over their nearest Gaussians ``idx`` (M, k) of
    ``centres`` (N, 3), restricted to the Gaussians whose nearest atom lies in the atom's
    own chain (``chains`` (M,)) within ``window`` residues (``residues`` (M,), the residue's
    place in the model) of its own; rows normalised. An atom with none keeps its weights."""
    from scipy.spatial import cKDTree
    owner = cKDTree(atoms).query(centres)[1]                                   # (N,)
    chains, residues = np.asarray(chains), np.asarray(residues, dtype=np.int64)
    own = (chains[owner][idx] == chains[:, None]) & (np.abs(residues[owner][idx] - residues[:, None]) <= window)
    kept = weights * own
    out = np.where((kept.sum(1) > 0)[:, None], kept, weights)
    return out / out.sum(1, keepdims=True)


def neighbourhoods(centres: np.ndarray, k: int = 8, tree=None) -> torch.Tensor:
    """Indices (N, min(k, N)) of each Gaussian's ``k`` nearest Gaussians (itself first):
    the neighbourhoods :func:`local_rotations` fits. ``tree``: a ``cKDTree`` of
    ``centres``, if the caller has one."""
    from scipy.spatial import cKDTree
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    tree = tree if tree is not None else cKDTree(c)
    return torch.from_numpy(tree.query(c, k=min(k, len(c)))[1].reshape(len(c), -1))


def local_rotations(centres: torch.Tensor, moved: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Kabsch rotations (..., N, 3, 3) taking each Gaussian's neighbourhood (indices
    (N, k), base ``centres`` (N, 3)) to ``moved`` (..., N, 3), about its own centre."""
    p = centres[neighbours] - centres[:, None, :]                         # (N, k, 3)
    q = moved[..., neighbours, :] - moved[..., :, None, :]                # (..., N, k, 3)
    h = torch.einsum("nki,...nkj->...nij", p, q)                          # covariance
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
    fix = torch.ones(*d.shape, 3, dtype=h.dtype, device=h.device)
    fix[..., 2] = torch.where(d == 0, torch.ones_like(d), d)         # a degenerate neighbourhood: no flip
    return vt.transpose(-1, -2) @ (fix[..., None] * u.transpose(-1, -2))


def keep_bond_lengths(coords: torch.Tensor, pairs: torch.Tensor, lengths: torch.Tensor,
                      iterations: int = 60) -> torch.Tensor:
    """Moved atoms (..., M, 3) nudged until each bond ``pairs`` (E, 2) has its ``lengths``
    (E,) again: each iteration moves both atoms of every bond half-way to its length, each
    atom by the mean of its bonds' corrections (Jacobi, as SHAKE's first-order step). A
    smooth displacement field stretches bonds a little where parts move differently; this
    takes it out without moving the model as a whole."""
    if len(pairs) == 0:
        return coords
    x = coords.clone()
    i, j = pairs[:, 0], pairs[:, 1]
    count = torch.zeros(x.shape[-2], dtype=x.dtype).index_add_(0, i, torch.ones(len(i), dtype=x.dtype))
    count = count.index_add_(0, j, torch.ones(len(j), dtype=x.dtype)).clamp_min(1)[:, None]
    for _ in range(iterations):
        v = x[..., j, :] - x[..., i, :]
        length = v.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        corr = 0.5 * (length - lengths[:, None]) / length * v
        step = torch.zeros_like(x).index_add_(-2, i, corr).index_add_(-2, j, -corr)
        x = x + step / count
    return x


class AtomInterpolator:
    """Atoms (engine frame, (M, 3)) following base Gaussians (centres (N, 3)); ``bonds``
    (E, 2) atom index pairs (e.g. :func:`gaussianem.io.models.bond_pairs`) keep their
    lengths in :meth:`keep_bonds`.

    ``offset`` (N, 3): the Gaussians' displacement at the state the atoms are in (a model
    fitted at one end of a motion, not at the consensus). The atoms then follow the
    Gaussians of that state, ``centres + offset``, and a displacement ``d`` moves them by
    ``d - offset``: atoms of a domain that sits 6 A from its smeared consensus Gaussians
    are tied to the Gaussians that carry it there (on the robustness matrix's normal-mode
    cell, motion arrival 0.79 -> 0.85; docs/validation.md, "The whole motion")."""

    def __init__(self, atoms_xyz: np.ndarray, centres: np.ndarray, k: int = 8,
                 sigma: float | None = None, name: str = "the atomic model", rigid: bool = True,
                 bonds=None, offset=None, residues=None):
        from scipy.spatial import cKDTree
        centres = np.asarray(centres, dtype=np.float64)
        self.offset = None
        if offset is not None:
            offset = np.asarray(offset, dtype=np.float64).reshape(centres.shape)
            centres = centres + offset
            self.offset = torch.from_numpy(offset)
        atoms = np.asarray(atoms_xyz, dtype=np.float64)
        tree = cKDTree(centres)
        if sigma is None:
            sigma = float(np.median(tree.query(centres, k=2)[0][:, 1]))
        k = min(k, len(centres))
        dist, idx = tree.query(atoms, k=k)
        dist, idx = dist.reshape(len(atoms), k), idx.reshape(len(atoms), k)
        near = dist[:, 0] < 3 * sigma
        if near.mean() < 0.5:
            raise ModelOutsideMapError(
                f"{name} does not overlap the Gaussians of the map: only {near.mean():.0%} of its "
                f"atoms lie within {3 * sigma:.1f} A of a Gaussian (is it fitted into the consensus map, "
                "in the same coordinate frame?)")
        # relative to the nearest Gaussian, so far atoms follow their nearest neighbours
        w = np.exp(-0.5 * ((dist - dist[:, :1]) / sigma) ** 2)
        w /= w.sum(1, keepdims=True)
        if residues is not None:
            w = sequence_weights(atoms, centres, idx, w, *residues)
        self.idx = torch.from_numpy(idx)
        self.weights = torch.from_numpy(w)
        self.atoms = torch.from_numpy(atoms)
        self.centres = torch.from_numpy(centres)
        self.gauss_neighbours = neighbourhoods(centres, k, tree)
        self.sigma = sigma
        self.rigid = rigid
        self.fraction_near = float(near.mean())
        pairs = np.zeros((0, 2), np.int64) if bonds is None else np.asarray(bonds, np.int64).reshape(-1, 2)
        self.bonds = torch.from_numpy(pairs)
        self.bond_lengths = torch.from_numpy(np.linalg.norm(atoms[pairs[:, 0]] - atoms[pairs[:, 1]], axis=1))

    def keep_bonds(self, coords) -> np.ndarray:
        """Moved coordinates (M, 3) or (B, M, 3) (any frame) with this model's bond lengths
        restored (:func:`keep_bond_lengths`)."""
        x = torch.as_tensor(np.asarray(coords), dtype=torch.float64)
        return keep_bond_lengths(x, self.bonds, self.bond_lengths).numpy()

    def __call__(self, displacement: torch.Tensor) -> torch.Tensor:
        """Gaussian displacements (N, 3) or (B, N, 3) -> atom displacements (M, 3) / (B, M, 3)."""
        d = displacement.detach().to(torch.float64).cpu()
        if self.offset is not None:
            d = d - self.offset
        if not self.rigid:
            return (d[..., self.idx, :] * self.weights[..., None]).sum(-2).float()
        R = local_rotations(self.centres, self.centres + d, self.gauss_neighbours)   # (..., N, 3, 3)
        rel = self.atoms[:, None, :] - self.centres[self.idx]                          # (M, k, 3)
        Rk = R[..., self.idx, :, :]                                                    # (..., M, k, 3, 3)
        moved = torch.einsum("...mkij,mkj->...mki", Rk, rel) + self.centres[self.idx] + d[..., self.idx, :]
        new = (moved * self.weights[..., None]).sum(-2)
        return (new - self.atoms).float()
