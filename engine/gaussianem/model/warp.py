"""The deformed consensus: the consensus map carried by the Gaussians' motions.

A map rendered from a few hundred Gaussians is a blurred picture of a state. The
consensus map holds the detail; what the model knows is how each Gaussian moves and how
its density changes. :class:`ConsensusWarp` moves the consensus map's own density with
them, by ownership rather than by one blended displacement per voxel:

* the consensus map ``C`` is shared among the base Gaussians in proportion to their
  density, ``C = sum_j K_j C / Z`` with ``K_j(y) = |a_j| exp(-|y - c_j|^2 / (2 s_j^2))``
  and ``Z = sum_j K_j`` (the base Gaussians rendered, :func:`gaussianem.physics.render.
  render_volume`): a partition of the map, each Gaussian owning the density it explains;
* each Gaussian carries its share with its own local rigid motion, the Kabsch rotation
  ``R_j`` of its neighbourhood (as :class:`~gaussianem.model.displace.AtomInterpolator`
  moves atoms) and its displacement ``d_j``, and scales it by its decoded ``amp_factor``
  ``f_j``::

      deformed(x) = sum_j f_j K_j(y_j) rho(y_j),   y_j = R_j^T (x - c_j - d_j) + c_j,
      rho = C Z / (Z^2 + (eps max Z)^2)

  (``K_j(y_j)`` is the moved Gaussian ``j`` at ``x``: rotations keep distances).

So a part that moves rigidly moves rigidly and exactly (all its ``y_j`` coincide and its
shares add back to ``C``), two parts that move differently each take their own density
along, without the tearing and mixing a single blended displacement field suffers at an
interface, and an absent part fades out with its Gaussians' amplitudes. With no motion
the map is the consensus map where the Gaussians cover it (``Z`` above ~1% of its peak;
solvent beyond fades out); if the consensus were exactly the Gaussians' map, the
deformed map would be exactly the Gaussians' deformed map. Width changes are ignored.

The work is :func:`gaussianem.physics.render.render_volume`'s: each Gaussian visits its
own window of +-``cutoff`` widths (grouped by window size, bounded pieces), samples
``rho`` trilinearly there (``torch.nn.functional.grid_sample``) and adds into the map;
batched tensor work on the warp's device, no neighbour search. Positions are Angstrom in
the engine frame, ``(0, 0, 0)`` at voxel ``box // 2`` of every map
(:mod:`gaussianem.physics.grid`); maps are (z, y, x).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gaussianem.errors import InputError
from gaussianem.model.displace import local_rotations, neighbourhoods
from gaussianem.physics.render import render_volume, volume_plan

PIECE_ELEMENTS = 1 << 21        # window voxels per piece on a CPU (x8 on a GPU): bounded memory


def _normalised(points: torch.Tensor, box: int, apix: float) -> torch.Tensor:
    """Engine-frame points (..., 3) xyz -> grid_sample coordinates (align_corners=True)
    of a ``box``^3 map of ``apix`` voxels with voxel ``box // 2`` at the origin."""
    return (points / apix + box // 2) * (2.0 / (box - 1)) - 1.0


class ConsensusWarp:
    """The consensus map ``consensus`` (D, D, D) of ``apix`` voxels, shared among base
    Gaussians ``centres`` (N, 3), ``amplitudes`` (N,), ``widths`` (N,) (engine frame)."""

    def __init__(self, consensus, apix: float, centres, amplitudes, widths, k: int = 8,
                 rigid: bool = True, eps: float = 1e-3, cutoff: float = 4.0, device="cpu"):
        vol = torch.tensor(np.asarray(consensus), dtype=torch.float32)
        if vol.ndim != 3 or len(set(vol.shape)) != 1 or vol.shape[0] < 2:
            raise InputError(f"the consensus map must be a cubic 3D array, got shape {tuple(vol.shape)}")
        c = np.asarray(centres, np.float64).reshape(-1, 3)
        if len(c) < 1:
            raise InputError("a warp needs at least one Gaussian")
        self.device = torch.device(device)
        self.box, self.apix = int(vol.shape[0]), float(apix)
        self.cutoff = float(cutoff)
        self.rigid = rigid and len(c) >= 3
        self.centres = torch.from_numpy(c).float().to(self.device)
        self.weights = torch.as_tensor(amplitudes).detach().float().abs().reshape(-1).to(self.device)
        self.widths = torch.as_tensor(widths).detach().float().reshape(-1).to(self.device)
        if not len(self.weights) == len(self.widths) == len(c):
            raise InputError("centres, amplitudes and widths must describe the same Gaussians")
        self.neighbours = neighbourhoods(c, k).to(self.device)
        vol = vol.to(self.device)
        z = render_volume(self.centres, self.weights, self.widths, self.box, self.apix, cutoff)
        floor = eps * float(z.max()) if float(z.max()) > 0 else 1.0
        self.cover = z                                                        # Z, owners' density
        self.rho = (vol * z / (z * z + floor * floor))[None, None]           # (1, 1, D, D, D)

    def rotations(self, displacement: torch.Tensor) -> torch.Tensor:
        """Local rigid rotations (B, N, 3, 3): each Gaussian's neighbourhood, Kabsch."""
        c = self.centres.double()
        return local_rotations(c, c + displacement.double(), self.neighbours).float()

    @torch.no_grad()
    def __call__(self, displacement, amp_factor=None, box: int | None = None,
                 apix: float | None = None) -> torch.Tensor:
        """Deformed maps (B, box, box, box) from Gaussian displacements (B, N, 3) (or (N, 3))
        and amplitude factors (B, N) (default 1), on ``box`` voxels of ``apix`` (default:
        the consensus map's grid) with voxel ``box // 2`` at the engine origin."""
        d = torch.as_tensor(displacement, device=self.device).float()
        d = d[None] if d.ndim == 2 else d
        B, N = d.shape[:2]
        if N != len(self.centres):
            raise InputError(f"{N} displacements for {len(self.centres)} Gaussians")
        f = (torch.ones(B, N, device=self.device) if amp_factor is None
             else torch.as_tensor(amp_factor, device=self.device).float().reshape(B, N))
        box = int(box or self.box)
        apix = float(apix or self.apix)
        Rt = (self.rotations(d).transpose(-1, -2) if self.rigid
              else torch.eye(3, device=self.device).expand(B, N, 3, 3))
        budget = PIECE_ELEMENTS * (8 if self.device.type == "cuda" else 1)
        plan = volume_plan(self.widths, box, apix, self.cutoff, budget=budget)
        out = torch.zeros(B, box ** 3, device=self.device)
        for b in range(B):
            moved = self.centres + d[b]
            for piece in plan:
                out[b].index_add_(0, *self._piece(piece, moved, Rt[b], f[b], box, apix))
        return out.reshape(B, box, box, box)

    def _piece(self, piece, moved, Rt, f, box: int, apix: float):
        """(flat voxel indices, values) of one piece of windows."""
        sl, h = piece.index, piece.half
        dev = self.device
        pos = moved[sl] / apix + box // 2                                     # (n, 3) voxel xyz
        offs = torch.arange(-h, h + 1, device=dev)
        zoffs = torch.arange(piece.z0, piece.z1 + 1, device=dev)
        ix = torch.round(pos[:, 0]).long()[:, None] + offs                    # (n, w)
        iy = torch.round(pos[:, 1]).long()[:, None] + offs
        iz = torch.round(pos[:, 2]).long()[:, None] + zoffs
        shape = (len(sl), len(zoffs), len(offs), len(offs))
        X = torch.stack(torch.broadcast_tensors(ix[:, None, None, :], iy[:, None, :, None],
                                                iz[:, :, None, None]), -1)  # (n, z, y, x, 3)
        inside = ((X >= 0) & (X < box)).all(-1)
        rel = (X - box // 2).float() * apix - moved[sl][:, None, None, None, :]
        s = self.widths[sl][:, None, None, None]
        kern = (self.weights[sl] * f[sl])[:, None, None, None] * torch.exp(
            -0.5 * rel.square().sum(-1) / s.square()) * inside
        y = torch.einsum("nij,nzyxj->nzyxi", Rt[sl], rel) + self.centres[sl][:, None, None, None, :]
        g = _normalised(y.reshape(1, -1, 1, 1, 3), self.box, self.apix)
        r = F.grid_sample(self.rho, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        vals = kern * r.reshape(shape)
        Xc = X.clamp(0, box - 1)
        flat = (Xc[..., 2] * box + Xc[..., 1]) * box + Xc[..., 0]
        return flat.reshape(-1), vals.reshape(-1)
