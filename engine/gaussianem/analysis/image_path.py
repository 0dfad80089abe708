"""Particles placed along a rigid-domain path by their images, for the states at the ends.

The latent orders the particles along a motion but compresses its ends: on the hinge
cells (SNR 0.1) the 200 particles nearest the latent of the last motion level have a mean
true motion of 0.86-0.90, so a fit to them lands short of the end, whatever the fit. The
images hold more: scored against the true models of eleven motion levels, each particle's
best level follows its true one with correlation 0.94 (against 0.86 for what the
latent's neighbourhood gives). So, once per model:

1. the path: each rigid domain moved by a multiple ``s`` of its rigid motion (Kabsch) from
   the model as given (``s`` = 0) to an end state (``s`` = 1), as a screw motion (a hinge
   turns about its axis by ``s`` times its angle). The end is the model fitted to the particles of the k-means
   centre of the latents that moves it most (:func:`~gaussianem.analysis.domain_fit.domains_by_images`):
   the decoded motion alone can be a small part of the true one (a sixth, on one hinge
   run) and off its axis;
2. each particle's place on the path, ``s_p``: the best of ``STEPS`` values of ``s`` by
   the matched filter of :class:`~gaussianem.analysis.state_particles.StateParticles`,
   refined by a parabola through its neighbours;
3. a linear read-out of ``s_p`` from the latents (least squares; its R^2 says whether the
   latent and the images agree on the path: below ``MIN_R2`` the path is not used).

For a latent ``z``, the latent read-out gives ``z``'s quantile among the particles, the
images give the ``s`` at that quantile, and the state's particles are those of the
``POOL`` x particles nearest ``z`` whose ``s_p`` lie nearest it (:meth:`ImagePath.select`).
The ranks come from the latent, the spread from the images: a state at the end of the
latent's range gets the particles at the end of the images' range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import expm, logm

from gaussianem.analysis.domains import Domains
from gaussianem.model.rigid_groups import kabsch
from gaussianem.analysis.result import Result
from gaussianem.analysis.state_particles import StateParticles, nearest_particles

STEPS = np.linspace(-1.5, 1.5, 17)      # places on the path scored for each particle
MAX_PARTICLES = 3000                    # particles scored (a random subset beyond)
MIN_R2 = 0.3                            # latent read-out needed to trust the path
POOL = 3                                # the state's particles come from POOL x n nearest


def path_coords(model, domains: Domains, end: np.ndarray, s: float) -> np.ndarray:
    """Atoms (M, 3) with each domain moved by the multiple ``s`` of its rigid motion
    (least squares) from the model's coordinates to ``end`` (M, 3): the power ``s`` of the
    4 x 4 transform, a screw motion (a hinge turns about its axis, its atoms on arcs)."""
    x0 = np.asarray(model.coords, dtype=np.float64)
    out = x0.copy()
    for k in range(domains.n):
        g = np.flatnonzero(domains.atom_labels == k)
        r, pc, qc = kabsch(x0[g], np.asarray(end, dtype=np.float64)[g])
        t = np.eye(4)
        t[:3, :3], t[:3, 3] = r, qc - r @ pc
        ts = expm(s * logm(t).real)
        out[g] = x0[g] @ ts[:3, :3].T + ts[:3, 3]
    return out


@dataclass
class ImagePath:
    """Scored particles ``indices`` (rows of the particle file), their places ``s`` on the
    path, and the latent read-out ``s ~ intercept + z @ slope`` with its ``r2``; the path's
    ``domains`` and ``end`` (M, 3)."""

    indices: np.ndarray
    s: np.ndarray
    slope: np.ndarray
    intercept: float
    r2: float
    domains: Domains | None = None
    end: np.ndarray | None = None

    def coords_at(self, model, z: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """The model (M, 3) on the path at the place of latent ``z`` (:meth:`target`): a start
        for a state's fit that carries the images' motion, not only the decoder's part of it."""
        return path_coords(model, self.domains, self.end, self.target(z, zs))

    @property
    def usable(self) -> bool:
        return self.r2 >= MIN_R2

    def target(self, z: np.ndarray, zs: np.ndarray) -> float:
        """The place on the path of latent ``z``: the images' ``s`` at the quantile that
        the latent read-out gives ``z`` among the scored particles (latents ``zs``)."""
        read = zs[self.indices] @ self.slope
        q = float(np.mean(read < float(np.asarray(z) @ self.slope)))
        return float(np.quantile(self.s, min(max(q, 0.0), 1.0)))

    def select(self, result: Result, z: np.ndarray, n: int, usable: np.ndarray | None = None) -> np.ndarray:
        """The ``n`` particles for the state at ``z``: among the ``POOL * n`` nearest ``z``
        in latent space that were scored, those whose place on the path lies nearest
        :meth:`target`."""
        zs = result.require_z()
        place = np.full(len(zs), np.nan)
        place[self.indices] = self.s
        pool = nearest_particles(result, z, POOL * int(n), usable)
        pool = pool[np.isfinite(place[pool])]
        order = np.argsort(np.abs(place[pool] - self.target(z, zs)), kind="stable")
        return np.sort(pool[order[:int(n)]])


def _engine(result: Result, coords: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(result.grid.to_engine(coords).astype(np.float32)).to(device)


def image_path(result: Result, model, domains: Domains, end: np.ndarray, interpolator, reference,
               usable: np.ndarray | None = None, max_particles: int = MAX_PARTICLES, seed: int = 0) -> ImagePath:
    """Each usable particle's place on the path from ``model`` to ``end`` (M, 3; its
    ``s`` = 1) and the latent read-out of it."""
    zs = result.require_z()
    idx = np.flatnonzero(usable) if usable is not None else np.arange(len(zs))
    if len(idx) > max_particles:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_particles, replace=False))
    z = reference if reference is not None else zs[idx].mean(0)
    state = StateParticles(result, model, np.asarray(z, dtype=np.float32), interpolator, indices=idx)
    scores = []
    for s in STEPS:
        scores.append(state.scores(_engine(result, path_coords(model, domains, end, float(s)), state.device)))
    scores = np.stack(scores)                                     # (STEPS, n)
    best = scores.argmax(0)
    i = np.clip(best, 1, len(STEPS) - 2)
    ym, y0, yp = (scores[i + d, np.arange(len(i))] for d in (-1, 0, 1))
    curv = ym - 2 * y0 + yp
    shift = np.where(curv < 0, 0.5 * (ym - yp) / np.where(curv < 0, curv, -1.0), 0.0)
    step = STEPS[1] - STEPS[0]
    s = np.where((best > 0) & (best < len(STEPS) - 1), STEPS[i] + np.clip(shift, -0.5, 0.5) * step, STEPS[best])
    a = np.c_[np.ones(len(idx)), zs[idx]]
    coef, *_ = np.linalg.lstsq(a, s, rcond=None)
    pred = a @ coef
    r2 = 1.0 - float(((s - pred) ** 2).sum() / max(((s - s.mean()) ** 2).sum(), 1e-12))
    return ImagePath(idx, s, coef[1:], float(coef[0]), r2, domains, np.asarray(end, dtype=np.float64))
