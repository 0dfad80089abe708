"""Deformation fields on a map's grid, from the Gaussians' decoded motions.

A particle's state moves each base Gaussian ``j`` (centre ``c_j``) by ``d_j`` and turns its
neighbourhood by the local rigid rotation ``R_j`` (Kabsch, as
:class:`~gaussianem.model.displace.AtomInterpolator` moves atoms). A point ``x`` of the
consensus frame goes where its owners take it::

    x -> x + u(x),   u(x) = sum_j w_j(x) [(R_j - I)(x - c_j) + d_j],
    w_j(x) = K_j(x) / (sum_l K_l(x) + floor),   K_j(x) = |a_j| exp(-|x - c_j|^2 / (2 s_j^2))

(the ownership of :mod:`gaussianem.model.warp`, over each point's ``k`` nearest
Gaussians; the floor, a small fraction of the densest point's cover, lets the field fall
to zero in the solvent). A part that moves rigidly is moved rigidly.

:class:`DeformationField` evaluates ``u`` on a control grid of about one Gaussian width
spacing over the map's cube (the ownership weights are fixed, so a batch of states is one
sparse-matrix product) and reads it at any points by trilinear interpolation
(``grid_sample``); :meth:`DeformationField.inverse` finds the consensus point a state's
deformation sends to a given point (fixed-point iteration). Used by
:mod:`gaussianem.analysis.reconstruct` for deformable backprojection.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gaussianem.errors import InputError
from gaussianem.model.displace import local_rotations, neighbourhoods


class DeformationField:
    """Fields over the cube of ``box`` voxels of ``apix`` (engine frame, voxel ``box // 2``
    at the origin) for base Gaussians ``centres`` (N, 3), ``amplitudes`` (N,) and
    ``widths`` (N,). ``control``: control points per axis (default: about one median
    width apart, at least 8 and at most 48 or half the box)."""

    def __init__(self, centres, amplitudes, widths, box: int, apix: float, control: int | None = None,
                 k: int = 8, floor: float = 0.01, device="cpu"):
        from scipy.spatial import cKDTree
        c = np.asarray(centres, np.float64).reshape(-1, 3)
        a = np.abs(np.asarray(amplitudes, np.float64).reshape(-1))
        s = np.asarray(widths, np.float64).reshape(-1)
        if not len(c) == len(a) == len(s) or len(c) < 1:
            raise InputError("a deformation field needs centres, amplitudes and widths of the same Gaussians")
        self.device = torch.device(device)
        self.lo = -(box // 2) * float(apix)
        self.hi = (box - 1 - box // 2) * float(apix)
        if control is None:
            most = max(8, min(48, box // 2))
            control = int(np.clip(np.ceil((self.hi - self.lo) / max(float(np.median(s)), 1e-3)) + 1, 8, most))
        self.control = int(control)
        g = np.linspace(self.lo, self.hi, self.control)
        zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
        q = np.stack([xx, yy, zz], -1).reshape(-1, 3)                     # (Q, 3) x y z, (z, y, x) order
        kk = min(k, len(c))
        tree = cKDTree(c)
        dist, idx = tree.query(q, k=kk)
        dist, idx = dist.reshape(len(q), kk), idx.reshape(len(q), kk)
        kern = a[idx] * np.exp(-0.5 * dist ** 2 / s[idx] ** 2)
        total = kern.sum(1)
        w = kern / (total + floor * max(float(total.max()), 1e-30))[:, None]
        rows = np.repeat(np.arange(len(q)), kk)
        self.weights = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows, idx.reshape(-1)])), torch.from_numpy(w.reshape(-1)).float(),
            (len(q), len(c)), check_invariants=True).coalesce().to(self.device)
        G = self.control
        self.total = torch.from_numpy(w.sum(1)).float().reshape(1, 1, G, G, G).to(self.device)
        self.points = torch.from_numpy(q).float().to(self.device)
        self.centres = torch.from_numpy(c).float().to(self.device)
        self.neighbours = neighbourhoods(c, k, tree).to(self.device)

    def __call__(self, displacement: torch.Tensor) -> torch.Tensor:
        """Fields (B, 3, G, G, G) (x, y, z components, Angstrom) on the control grid for
        Gaussian displacements (B, N, 3)."""
        d = torch.as_tensor(displacement, device=self.device).float()
        d = d[None] if d.ndim == 2 else d
        B, N = d.shape[:2]
        if N != len(self.centres):
            raise InputError(f"{N} displacements for {len(self.centres)} Gaussians")
        c = self.centres.double()
        A = (local_rotations(c, c + d.double(), self.neighbours).float()
             - torch.eye(3, device=self.device)) if N >= 3 else torch.zeros(B, N, 3, 3, device=self.device)
        t = d - torch.einsum("bnij,nj->bni", A, self.centres)               # u_j(x) = A_j x + t_j
        per = torch.cat([A.reshape(B, N, 9), t], -1).permute(1, 0, 2).reshape(N, B * 12)
        m = torch.sparse.mm(self.weights, per).reshape(-1, B, 12).permute(1, 0, 2)   # (B, Q, 12)
        u = torch.einsum("bqij,qj->bqi", m[..., :9].reshape(B, -1, 3, 3), self.points) + m[..., 9:]
        G = self.control
        return u.permute(0, 2, 1).reshape(B, 3, G, G, G)

    def sample(self, field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Field values (B, P, 3) at ``points`` ((P, 3) shared or (B, P, 3)); trilinear,
        the border value outside the cube."""
        B = field.shape[0]
        p = points if points.ndim == 3 else points[None].expand(B, -1, -1)
        g = (p - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        out = F.grid_sample(field, g[:, :, None, None, :], mode="bilinear", padding_mode="border",
                            align_corners=True)                                  # (B, 3, P, 1, 1)
        return out[:, :, :, 0, 0].transpose(1, 2)

    def support(self, points: torch.Tensor, threshold: float = 1e-4) -> torch.Tensor:
        """Which ``points`` (P, 3) any field can move: those whose ownership weights add up
        to more than ``threshold`` (beyond them every field is below ``threshold`` times
        the largest motion: the solvent far from the Gaussians)."""
        g = (points - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        t = F.grid_sample(self.total, g[None, :, None, None, :], mode="bilinear", padding_mode="zeros",
                          align_corners=True)
        return t.reshape(-1) > threshold

    def inverse(self, field: torch.Tensor, points: torch.Tensor, iterations: int = 12) -> torch.Tensor:
        """The consensus points ``x`` (P, 3) that one state's ``field`` (1, 3, G, G, G)
        sends to ``points`` (P, 3): ``x + u(x) = points`` by fixed-point iteration."""
        x = points.clone()
        for _ in range(iterations):
            x = points - self.sample(field, x[None])[0]
        return x
