"""The particles of one state, read as training reads them, and how well a model
matches them: which particles a fit may use (:func:`usable_particles`: the run's junk
left out), the particles nearest a latent (:func:`nearest_particles`), and the matched
filter ``<projection, image> / |projection|`` of atoms against them
(:class:`StateParticles`), per particle or averaged.

The atoms are projected one Gaussian per residue (:class:`ResidueBlobs`): each residue's
atoms, of width ``WIDTH`` and weighted by atomic number, merged into one Gaussian at their
weighted centre with their integral and their spread added to the width. A rigid-domain
fit moves residues whole, and the images it reads (the training box, 2 A/pixel and coarser
on the robustness matrix) hold no detail finer than that; it projects about eight times
fewer Gaussians than atom by atom."""

from __future__ import annotations

import numpy as np
import torch

from gaussianem.analysis.result import Result
from gaussianem.analysis.selection import select_particles
from gaussianem.errors import InputError
from gaussianem.model import intensity
from gaussianem.train import health

PARTICLES = 200
WIDTH = 1.5                 # A: the atoms' Gaussian width
BATCH = 100                 # particles projected at once


def usable_particles(result: Result) -> tuple[np.ndarray, str]:
    """((N,) bool, note): the particles a fit may use. All of them, less the motion
    outliers when they are over ``OUTLIER_WARNING`` of the particles and the low-signal
    particles when they are over ``LOW_SIGNAL_WARNING`` (the run health's rules for junk,
    :mod:`gaussianem.train.health`, computed afresh so that runs judged before them count
    too; the particles are those of :func:`~gaussianem.analysis.selection.select_particles`
    with ``outliers`` and ``low_signal``). On a clean run nothing is left out: particles
    without a subunit, say, stay."""
    ok = np.ones(len(result.require_z()), dtype=bool)
    notes = []
    for kind, limit, name in (("outliers", health.OUTLIER_WARNING, "motion outliers"),
                              ("low_signal", health.LOW_SIGNAL_WARNING, "low-signal particles")):
        chosen = select_particles(result, **{kind: True}).indices
        if len(chosen) > limit * len(ok):
            ok[chosen] = False
            notes.append(f"{len(chosen)} {name}")
    return ok, ("left out: " + " and ".join(notes) + " (the run's junk)") if notes else ""


def nearest_particles(result: Result, z: np.ndarray, n: int, usable: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` particles whose latents lie nearest ``z`` (nearest first),
    among the ``usable`` ones ((N,) bool; default all)."""
    zs = result.require_z()
    if n < 1:
        raise InputError(f"the number of particles to fit to must be at least 1, got {n}")
    d = np.linalg.norm(zs - np.asarray(z, dtype=np.float32)[None], axis=1)
    if usable is not None:
        d = np.where(usable, d, np.inf)
        n = min(int(n), int(np.count_nonzero(usable)))
        if n == 0:
            raise InputError("no particle is left to fit to: all are motion outliers or low-signal particles")
    return np.argsort(d, kind="stable")[:min(int(n), len(zs))]


class ResidueBlobs:
    """One Gaussian per residue of a model whose atoms (weights ``weights`` (M,), width
    ``width``) move with their residue: :meth:`centres` maps atom coordinates (M, 3) to
    the residues' weighted centres (R, 3); ``amplitudes`` and ``widths`` (R,) keep each
    residue's integral and add its atoms' spread (from ``coords``) to ``width``."""

    def __init__(self, residue: np.ndarray, weights: torch.Tensor, coords: np.ndarray, width: float, device):
        res = torch.from_numpy(np.asarray(residue, dtype=np.int64))
        w = weights.double().cpu()
        n = int(res.max()) + 1 if len(res) else 0
        total = torch.zeros(n, dtype=torch.float64).index_add_(0, res, w)
        keep = total > 0
        x = torch.from_numpy(np.asarray(coords, dtype=np.float64))
        centre = torch.zeros(n, 3, dtype=torch.float64).index_add_(0, res, w[:, None] * x)
        centre = centre / total.clamp_min(1e-30)[:, None]
        spread = torch.zeros(n, dtype=torch.float64).index_add_(0, res, w * ((x - centre[res]) ** 2).sum(1))
        sigma = torch.sqrt(width ** 2 + spread / total.clamp_min(1e-30) / 3)
        self.residue = res.to(device)
        self.share = (w / total.clamp_min(1e-30)[res]).float().to(device)
        self.n = n
        self.amplitudes = (total * (width / sigma) ** 3 * keep).float().to(device)
        self.widths = sigma.float().to(device)

    def centres(self, atoms: torch.Tensor) -> torch.Tensor:
        """(R, 3) the residues' weighted centres for atoms (M, 3) (differentiable)."""
        out = torch.zeros(self.n, 3, dtype=atoms.dtype, device=atoms.device)
        return out.index_add(0, self.residue, self.share[:, None].to(atoms.dtype) * atoms)


class StateParticles:
    """The particles of one state, read and normalised as training reads them, and the
    matched-filter score of a model against them (:meth:`score`). ``z``: the state's
    latent (the atoms are weighted by the decoded amplitude factor there); ``indices``:
    the particles (default: the ``particles`` nearest ``z`` among the ``usable`` ones,
    :func:`usable_particles`)."""

    def __init__(self, result: Result, model, z: np.ndarray, interpolator, particles: int = PARTICLES,
                 indices=None, width: float = WIDTH, usable: np.ndarray | None = None):
        self.device = result.device
        z = result.check_z(z)[0]
        with torch.no_grad():
            amp = result.decode(z[None])["amp_factor"].float().cpu()[0].clamp(0, 1).double()
        weights = (amp[interpolator.idx] * interpolator.weights).sum(-1)          # (M,) per atom
        weights = weights * torch.from_numpy(model.atomic_numbers().astype(np.float64))
        images, self.phys = result.particle_source()
        if indices is None:
            idx = nearest_particles(result, z, particles, usable)
        else:
            idx = np.unique(np.asarray(indices, dtype=np.int64))
            if len(idx) == 0 or idx[0] < 0 or idx[-1] >= len(images):
                raise InputError(f"particle indices must lie in 0..{len(images) - 1}, got {len(idx)} indices")
        self.n = len(idx)
        self.box = result.model_config.box
        self.blobs = ResidueBlobs(model.res_index, weights, model.coords, float(width), self.device)
        self.centre = torch.from_numpy(np.asarray(result.grid.centre, dtype=np.float32)).to(self.device)
        self.batches = []
        for s in range(0, len(idx), BATCH):
            part = idx[s:s + BATCH]
            raw = images.__getitems__(part)["image"].to(self.device)
            self.batches.append((torch.as_tensor(part, device=self.device),
                                 intensity.normalise(raw, result.image_std, self.phys.remove_offset)))

    def engine(self, coords: np.ndarray) -> torch.Tensor:
        """Atoms (M, 3), physical frame, as :meth:`score` takes them (engine frame, on the device)."""
        return torch.from_numpy(np.asarray(coords, dtype=np.float32)).to(self.device) - self.centre

    def _matched(self, x: torch.Tensor, part, imgs) -> torch.Tensor:
        b = self.blobs
        p = self.phys.project(b.centres(x), b.amplitudes, b.widths, part, self.box)
        return (p * imgs).sum((-2, -1)) / p.pow(2).sum((-2, -1)).sqrt().clamp_min(1e-6)

    def score(self, x: torch.Tensor, backward: bool = False) -> float:
        """Mean over the particles of <projection, image> / |projection| for atoms ``x``
        (M, 3), engine frame; with ``backward`` its negative's gradient is accumulated."""
        total = 0.0
        for part, imgs in self.batches:
            s = self._matched(x, part, imgs).sum() / self.n
            if backward:
                (-s).backward(retain_graph=True)
            total += float(s.detach())
        return total

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> np.ndarray:
        """(n,) each particle's <projection, image> / |projection| for atoms ``x``, in the
        order of the particle indices (sorted)."""
        return torch.cat([self._matched(x, part, imgs) for part, imgs in self.batches]).cpu().numpy()
