"""Rigid segments: the low-frequency part of a particle's deformation.

A per-Gaussian decoder moves each Gaussian on its own; a domain that turns as a whole is
then a thousand small displacements that must agree, each pulled by its own share of a
faint image (SNR 0.1 and below) and held by the neighbour graph. Measured on a 30-degree
hinge, such a decoder found the motion (per particle, correlation 0.94 with the truth)
but carried only half of it or less (docs/validation.md, "The whole motion").

This module adds what 3DFlex's coarse mesh and cryoSPHERE's segments give their models:
``K`` soft segments of the base Gaussians, each moved rigidly per particle. Segment ``k``
has a centre ``m_k`` (learned; started from a mass-weighted k-means of the Gaussians,
:func:`gaussianem.model.gaussians.weighted_kmeans`) and
owns Gaussian ``j`` with weight ``w_jk = softmax_k(-|c_j - m_k|^2 / (2 s^2))`` (a soft
Voronoi partition; ``s`` learned). A small network maps the latent to one rotation
(axis-angle) and one translation per segment, and Gaussian ``j`` moves by::

    d_j = sum_k w_jk [(R_k - I)(c_j - m_k) + t_k]

(linear blend skinning, as the atoms follow the Gaussians in
:mod:`gaussianem.model.displace`). The image gradient on a segment's six numbers is the
sum over all its Gaussians, so a whole domain moves as one; the per-Gaussian decoder adds
the local rest on top.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gaussianem.model.gaussians import weighted_kmeans


def rotation_matrices(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) for axis-angle vectors ``omega`` (..., 3), radians
    (Rodrigues' formula; exact and smooth through zero)."""
    t2 = (omega * omega).sum(-1, keepdim=True)[..., None]                # (..., 1, 1)
    t = torch.sqrt(t2.clamp_min(1e-12))
    small = t2 < 1e-6
    a = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(t)) / t2.clamp_min(1e-12))
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*omega.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a * k + b * (k @ k)


def motion_net(zdim: int, dim: int, layers: int, n: int) -> nn.Sequential:
    """Latent -> six numbers (axis-angle, translation) for each of ``n`` rigid parts, the
    last layer near zero so that training starts from no motion."""
    mods: list[nn.Module] = [nn.Linear(zdim, dim), nn.SiLU()]
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, dim), nn.SiLU()]
    last = nn.Linear(dim, 6 * n)
    nn.init.normal_(last.weight, std=1e-3)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*mods, last)


def bounded_motions(o: torch.Tensor, max_angle: float, max_shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotations (..., 3, 3) and translations (..., 3) from a :func:`motion_net`'s output
    (..., 6), scaled so that a unit of output is a sizeable motion (like the per-Gaussian
    decoder's x10) and bounded smoothly by ``max_angle`` (radians) and ``max_shift`` (A)."""
    omega = max_angle * torch.tanh(o[..., :3] * (3.0 / max_angle))
    shift = max_shift * torch.tanh(o[..., 3:] * (10.0 / max_shift))
    return rotation_matrices(omega), shift


class SegmentField(nn.Module):
    """Latent (B, zdim) -> rigid-segment displacements (B, N, 3) of the base Gaussians
    ``centres`` (N, 3) (``mass`` (N,) weights the initial k-means). ``max_angle``
    (radians) and ``max_shift`` (Angstrom) bound each segment's motion."""

    def __init__(self, zdim: int, centres: torch.Tensor, mass: torch.Tensor, n_segments: int,
                 dim: int = 128, layers: int = 2, max_angle: float = math.pi / 3, max_shift: float = 20.0):
        super().__init__()
        c = centres.detach().cpu().double().numpy()
        m = weighted_kmeans(c, mass.detach().cpu().double().numpy(), min(n_segments, len(c)),
                            np.random.default_rng(0), 30, "cpu").astype(np.float64)
        self.n = len(m)
        self.max_angle, self.max_shift = float(max_angle), float(max_shift)
        self.seg_centres = nn.Parameter(torch.from_numpy(m).float())
        # soft boundaries: the logit gap across a boundary grows by |m_k - m_l| / s^2 per
        # Angstrom; s^2 = spacing^2 / 8 puts the 10-90% blend within ~a quarter spacing
        spacing = float(np.median(np.sqrt(((m[:, None] - m[None]) ** 2).sum(-1) + np.eye(len(m)) * 1e30).min(1))) \
            if len(m) > 1 else 10.0
        self.log_s = nn.Parameter(torch.tensor(math.log(max(spacing, 1.0) / math.sqrt(8.0))))
        self.net = motion_net(zdim, dim, layers, self.n)

    def assignment(self, centres: torch.Tensor) -> torch.Tensor:
        """Each Gaussian's weights over the segments (N, K), rows summing to 1."""
        d2 = ((centres[:, None, :] - self.seg_centres[None]) ** 2).sum(-1)
        return torch.softmax(-0.5 * d2 * torch.exp(-2 * self.log_s), dim=1)

    def motions(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-segment rotations (B, K, 3, 3) and translations (B, K, 3) for latents z."""
        return bounded_motions(self.net(z.float()).reshape(z.shape[0], self.n, 6), self.max_angle, self.max_shift)

    def forward(self, z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        R, t = self.motions(z)
        w = self.assignment(centres)                                     # (N, K)
        A = R - torch.eye(3, device=R.device, dtype=R.dtype)             # (B, K, 3, 3)
        # sum_k w_jk [A_k c_j - A_k m_k + t_k] = (sum_k w_jk A_k) c_j + sum_k w_jk (t_k - A_k m_k)
        M = torch.einsum("nk,bkij->bnij", w, A)
        off = torch.einsum("nk,bki->bni", w, t - torch.einsum("bkij,kj->bki", A, self.seg_centres))
        return torch.einsum("bnij,nj->bni", M, centres) + off


class DomainField(nn.Module):
    """Latent (B, zdim) -> rigid motions of the domains training finds (``--domain-motion``):
    the hard partition of a :mod:`gaussianem.train.graph_cut` pass, not k-means segments
    (which straddle a hinge). Until :meth:`assign` is called every Gaussian is unassigned
    and the field is zero. Domain ``k`` turns about its pivot ``p_k`` and shifts, and Gaussian ``j``
    of domain ``k`` moves by ``(R_k - I)(c_j - p_k) + t_k``; the per-Gaussian decoder adds
    the rest, and the structure terms charge only that rest (a domain's rigid turn strains
    no edge within it). At most ``max_domains``; Gaussians of further domains have no rigid
    part. Measured: docs/validation.md, "The whole motion, session 19"."""

    def __init__(self, zdim: int, n_gaussians: int, max_domains: int = 16, dim: int = 128, layers: int = 2,
                 max_angle: float = math.pi / 3, max_shift: float = 20.0):
        super().__init__()
        self.n, self.max_angle, self.max_shift = int(max_domains), float(max_angle), float(max_shift)
        self.register_buffer("labels", torch.full((n_gaussians,), -1, dtype=torch.long))
        self.register_buffer("pivots", torch.zeros(self.n, 3))
        self.net = motion_net(zdim, dim, layers, self.n)

    @property
    def assigned(self) -> bool:
        return bool((self.labels >= 0).any())

    @torch.no_grad()
    def assign(self, labels, centres: torch.Tensor, mass: torch.Tensor) -> None:
        """Take the domains ``labels`` (N,) (a later cut refines an earlier one): each new
        domain inherits the motion and pivot of the earlier domain most of its Gaussians
        belonged to, so the decoded motion is unchanged at the moment of the cut; a domain
        with no earlier one pivots about its mass-weighted centre."""
        new = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=self.labels.device)
        old, last = self.labels.clone(), self.net[-1]
        w, b = last.weight.view(self.n, 6, -1).clone(), last.bias.view(self.n, 6).clone()
        pivots = self.pivots.clone()
        for k in range(min(int(new.max()) + 1, self.n)):
            sel = new == k
            parents = old[sel]
            parents = parents[(parents >= 0) & (parents < self.n)]
            if len(parents):
                p = int(torch.mode(parents).values)
                last.weight.data.view(self.n, 6, -1)[k] = w[p]
                last.bias.data.view(self.n, 6)[k] = b[p]
                self.pivots[k] = pivots[p]
            else:
                m = mass[sel].to(centres.dtype)
                self.pivots[k] = (m[:, None] * centres[sel]).sum(0) / m.sum().clamp_min(1e-30)
        self.labels.copy_(new)

    def forward(self, z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """(B, N, 3): each Gaussian's share of its domain's rigid motion (0 unassigned)."""
        R, shift = bounded_motions(self.net(z.float()).reshape(z.shape[0], self.n, 6), self.max_angle, self.max_shift)
        A = R - torch.eye(3, device=z.device, dtype=R.dtype)                               # (B, K, 3, 3)
        lab = self.labels
        on = ((lab >= 0) & (lab < self.n)).to(centres.dtype)
        k = lab.clamp(0, self.n - 1)
        rel = centres - self.pivots[k]                                                      # (N, 3)
        moved = torch.einsum("bnij,nj->bni", A[:, k], rel) + shift[:, k]
        return moved * on[None, :, None]
