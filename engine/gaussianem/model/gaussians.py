"""The Gaussian representation of a map: the set, its initialisation and its fit.

A :class:`GaussianSet` holds N isotropic 3D Gaussians in the engine frame (Angstrom,
origin at the consensus box centre; see :mod:`gaussianem.physics.grid`): centres (N, 3), peak
amplitudes (N,) and widths (standard deviations, Angstrom, (N,)). Widths are stored per
Gaussian as one number; an anisotropic set would add a (N, 3, 3) covariance field, and
the renderer's separable form would become a full quadratic form (door left open).

Initialisation:

* ``grid``: GaussianEM's scheme: voxels above a threshold on a regular sampling grid.
* ``kmeans`` (default): density-weighted k-means of the voxels above the threshold to a
  target count, so Gaussians follow the mass rather than a lattice.
* from an atomic model: one Gaussian per residue (or per ``n`` heavy atoms), placed at
  the residues' centres.

:func:`fit_to_map` then refines amplitudes and widths (optionally centres) against the
map, prunes near-zero Gaussians and reports correlation and FSC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gaussianem.errors import GaussianEMError, InputError
from gaussianem.io.atomic import atomic_torch_save
from gaussianem.io.models import AtomicModel
from gaussianem.physics import fsc as fsc_mod
from gaussianem.physics.grid import Grid
from gaussianem.physics.render import render_volume

RESIDUE_VOLUME = 135.0   # Angstrom^3 of protein per residue (0.81 Da/A^3, 110 Da/residue)


@dataclass
class GaussianSet:
    centres: torch.Tensor       # (N, 3) Angstrom, engine frame
    amplitudes: torch.Tensor    # (N,) peak density
    widths: torch.Tensor        # (N,) standard deviation, Angstrom

    def __post_init__(self):
        n = self.centres.shape[0]
        if self.centres.shape != (n, 3) or self.amplitudes.shape != (n,) or self.widths.shape != (n,):
            raise InputError("GaussianSet needs centres (N,3), amplitudes (N,), widths (N,); got "
                             f"{tuple(self.centres.shape)}, {tuple(self.amplitudes.shape)}, "
                             f"{tuple(self.widths.shape)}")

    def __len__(self) -> int:
        return self.centres.shape[0]

    def to(self, device=None, dtype=torch.float32) -> "GaussianSet":
        return GaussianSet(*(t.to(device=device, dtype=dtype) for t in
                             (self.centres, self.amplitudes, self.widths)))

    def detach(self) -> "GaussianSet":
        return GaussianSet(self.centres.detach(), self.amplitudes.detach(), self.widths.detach())

    def subset(self, idx) -> "GaussianSet":
        return GaussianSet(self.centres[idx], self.amplitudes[idx], self.widths[idx])

    def volume(self, box: int, apix: float) -> torch.Tensor:
        return render_volume(self.centres, self.amplitudes, self.widths, box, apix)

    def state_dict(self) -> dict:
        return {"centres": self.centres.detach().cpu(), "amplitudes": self.amplitudes.detach().cpu(),
                "widths": self.widths.detach().cpu()}

    @classmethod
    def from_state_dict(cls, d: dict) -> "GaussianSet":
        return cls(d["centres"].float(), d["amplitudes"].float(), d["widths"].float())

    def save(self, path) -> None:
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path) -> "GaussianSet":
        return cls.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))




def default_threshold(vol: np.ndarray) -> float:
    """A contour level for a consensus map: the larger of mean + 3 sd of the whole box and
    5% of the maximum (robust for clean simulated maps and noisy real ones)."""
    v = np.asarray(vol, dtype=np.float64)
    return float(max(v.mean() + 3 * v.std(), 0.05 * v.max()))


def _voxel_coords(vol: np.ndarray, apix: float, mask: np.ndarray) -> np.ndarray:
    box = vol.shape[0]
    zyx = np.argwhere(mask)
    return (zyx[:, ::-1] - box // 2) * apix                      # engine frame, x y z


COUNT_BLUR = 2.0          # Angstrom: the map is smoothed by this sigma before its volume is measured


def auto_count(vol: np.ndarray, apix: float, threshold: float | None = None) -> int:
    """Default number of Gaussians: one per residue's worth of the molecule's volume,
    within [64, 20000].

    The volume is measured on the map smoothed by a Gaussian of sigma ``COUNT_BLUR`` (2 A)
    at its default contour, so it is the molecule's envelope at any pixel size
    (thresholding the raw map instead shrinks with resolution); that gives about 1.2
    Gaussians per residue (calibration in docs/validation.md).
    A ``threshold`` (in the raw map's units, as ``--threshold``) keeps only the envelope
    near density above it (within about ``COUNT_BLUR``): a higher contour that leaves out
    detergent or noise leaves it out of the count too.
    """
    from scipy.ndimage import gaussian_filter
    vol = np.asarray(vol, dtype=np.float32)
    sigma = COUNT_BLUR / apix
    smooth = gaussian_filter(vol, sigma)
    envelope = smooth > default_threshold(smooth)
    if threshold is not None:
        envelope &= gaussian_filter((vol > float(threshold)).astype(np.float32), sigma) > 0.05
    v = float(envelope.sum()) * apix ** 3
    return int(np.clip(round(v / RESIDUE_VOLUME), 64, 20000))


# Coarse to fine (gaussianem.train.stages): the count that carries detail to a given resolution.
COUNT_RESOLUTION = 4.0    # Angstrom: the resolution auto_count's ~1.2 per residue carries
                          # (docs/validation.md)
COUNT_EXPONENT = 3.0      # the count grows as (COUNT_RESOLUTION / resolution) ** this


def count_for_resolution(vol: np.ndarray, apix: float, resolution: float,
                         threshold: float | None = None) -> int:
    """Gaussians to carry the map's detail to ``resolution`` (Angstrom): ``auto_count``
    scaled by ``(COUNT_RESOLUTION / resolution) ** COUNT_EXPONENT``, never fewer than
    ``auto_count`` and at most 20000: as many Gaussians as resolution elements, so the
    cube of the resolution ratio (calibration: docs/validation.md, "Coarse to fine")."""
    if not resolution > 0:
        raise InputError(f"resolution must be positive (Angstrom), got {resolution}")
    n = auto_count(vol, apix, threshold)
    scale = max(1.0, (COUNT_RESOLUTION / resolution) ** COUNT_EXPONENT)
    return int(min(20000, round(n * scale)))


def init_from_map(vol, apix: float, n: int | None = None, method: str = "kmeans",
                  threshold: float | None = None, seed: int = 0, iterations: int = 15,
                  device=None) -> GaussianSet:
    """Initial Gaussians from a consensus map (z, y, x array, origin at voxel box//2)."""
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise InputError(f"the consensus map must be a cubic 3D array, got shape {vol.shape}")
    thr = default_threshold(vol) if threshold is None else float(threshold)
    mask = vol > thr
    if mask.sum() < 4:
        raise InputError(f"only {int(mask.sum())} voxels of the map lie above the threshold "
                         f"{thr:.4g}: lower --threshold")
    if n is None:
        n = auto_count(vol, apix, threshold)
    rng = np.random.default_rng(seed)
    if method == "grid":
        stride = max(1, int(round((mask.sum() / n) ** (1 / 3))))
        sub = np.zeros_like(mask)
        sub[::stride, ::stride, ::stride] = True
        pts = _voxel_coords(vol, apix, mask & sub)
        cell = stride * apix
    elif method == "kmeans":
        pts = weighted_kmeans(_voxel_coords(vol, apix, mask), vol[mask], min(n, int(mask.sum())),
                               rng, iterations, device)
        cell = (mask.sum() * apix ** 3 / len(pts)) ** (1 / 3)
    else:
        raise InputError(f"unknown initialisation method {method!r}: expected 'kmeans' or 'grid'")
    centres = torch.from_numpy(pts.astype(np.float32))
    amps = torch.from_numpy(sample_map(vol, apix, pts).astype(np.float32)).clamp_min(1e-3 * float(vol.max()))
    widths = torch.full((len(pts),), float(max(0.5 * cell, apix)))
    return GaussianSet(centres, amps, widths)


def weighted_kmeans(x: np.ndarray, w: np.ndarray, k: int, rng, iterations: int, device) -> np.ndarray:
    """Lloyd's algorithm with density weights; initial centres drawn with probability ~ w."""
    p = np.clip(w, 0, None).astype(np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(len(w), 1 / len(w))
    init = rng.choice(len(x), size=k, replace=False, p=p)
    X = torch.from_numpy(x.astype(np.float32)).to(device)
    W = torch.from_numpy(np.clip(w, 0, None).astype(np.float32)).to(device)
    C = X[torch.from_numpy(init).to(X.device)].clone()
    for _ in range(iterations):
        assign = torch.cat([torch.cdist(X[i:i + 8192], C).argmin(1) for i in range(0, len(X), 8192)])
        wsum = torch.zeros(k, device=X.device).index_add_(0, assign, W)
        csum = torch.zeros(k, 3, device=X.device).index_add_(0, assign, X * W[:, None])
        nonempty = wsum > 0
        C[nonempty] = csum[nonempty] / wsum[nonempty, None]
    return C.cpu().numpy()


def sample_map(vol: np.ndarray, apix: float, xyz: np.ndarray) -> np.ndarray:
    """Trilinear map values at engine-frame points (outside the box: 0)."""
    from scipy.ndimage import map_coordinates
    box = vol.shape[0]
    idx = (np.asarray(xyz) / apix + box // 2)[:, ::-1].T              # z, y, x
    return map_coordinates(np.asarray(vol, dtype=np.float32), idx, order=1, mode="constant")


def init_from_model(residue_centres, apix: float, electrons=None, width: float | None = None) -> GaussianSet:
    """One Gaussian per residue (or atom group) at the given engine-frame centres."""
    c = torch.as_tensor(np.asarray(residue_centres, dtype=np.float32))
    if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0:
        raise InputError("an atomic model gave no residue centres to place Gaussians on")
    amps = torch.ones(len(c)) if electrons is None else torch.as_tensor(np.asarray(electrons, np.float32))
    amps = amps / amps.mean()
    w = float(width) if width is not None else max(2.0, apix)
    return GaussianSet(c, amps, torch.full((len(c),), w))


def init_from_atoms(model: AtomicModel, grid: Grid, vol: np.ndarray, atoms_per_gaussian: int | None = None,
                    name: str = "the atomic model") -> GaussianSet:
    """One Gaussian per residue (or per ``atoms_per_gaussian`` heavy atoms) of an atomic
    model in the consensus map's frame, amplitudes at the map's 99.9th percentile (the
    fit to the map sets them). Residues outside the box are left out; a model mostly
    outside it is an error."""
    centres = grid.to_engine(model.group_centres(atoms_per_gaussian) if atoms_per_gaussian
                             else model.residue_centres())
    inside = np.all(np.abs(centres) < grid.box * grid.apix / 2, axis=1)
    if inside.mean() < 0.5:
        raise GaussianEMError(f"{name} does not overlap the consensus map (only {inside.mean():.0%} of "
                              "residues inside the box): is it in the map's frame?")
    base = init_from_model(centres[inside], grid.apix)
    base.amplitudes = base.amplitudes * float(np.percentile(vol, 99.9))
    return base


@dataclass
class FitReport:
    correlation: float         # Pearson correlation of map and rendered Gaussians, whole box
    masked_correlation: float  # the same inside the map's thresholded region (dilated)
    fsc_auc: float
    fsc_resolution: float      # Angstrom at FSC = 0.5
    n_gaussians: int
    n_pruned: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@torch.enable_grad()         # also when called inside a no_grad context (e.g. a user's script)
def fit_to_map(gset: GaussianSet, vol, apix: float, steps: int = 200, lr: float = 0.05,
               fit_centres: bool = False, prune: float = 0.02, device=None,
               min_width: float | None = None, progress=None) -> tuple[GaussianSet, FitReport]:
    """Refine amplitudes and widths (and centres if asked) to match a map (least squares).

    Gaussians whose integrated density (amplitude x width^3) falls below ``prune`` times the
    median are removed at the end.
    ``progress`` (callable(step, loss)) is called every 20 steps.
    """
    vol_t = torch.tensor(np.asarray(vol, dtype=np.float32), device=device)
    box = vol_t.shape[0]
    g = gset.to(device)
    min_w = float(min_width) if min_width is not None else 0.5 * apix
    scale = float(vol_t.abs().max()) or 1.0
    raw_a = torch.log(torch.expm1((g.amplitudes / scale).clamp_min(1e-4))).requires_grad_(True)
    raw_w = torch.log((g.widths - min_w).clamp_min(1e-3)).requires_grad_(True)
    centres = g.centres.clone().requires_grad_(fit_centres)
    params = [raw_a, raw_w] + ([centres] if fit_centres else [])
    opt = torch.optim.Adam(params, lr=lr)
    target = vol_t / scale
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        amp = torch.nn.functional.softplus(raw_a)
        wid = min_w + torch.exp(raw_w)
        pred = render_volume(centres, amp, wid, box, apix)
        loss = torch.mean((pred - target) ** 2)
        loss.backward()
        opt.step()
        if progress is not None and step % 20 == 0:
            progress(step, float(loss))
    with torch.no_grad():
        amp = torch.nn.functional.softplus(raw_a) * scale
        wid = min_w + torch.exp(raw_w)
        mass = amp * wid ** 3                      # integrated density, up to a constant
        keep = mass > prune * mass.median()
        out = GaussianSet(centres.detach()[keep].cpu(), amp[keep].cpu(), wid[keep].cpu())
    return out, evaluate_fit(out, vol, apix, n_pruned=int((~keep).sum()))


def evaluate_fit(gset: GaussianSet, vol, apix: float, n_pruned: int = 0) -> FitReport:
    vol = np.asarray(vol, dtype=np.float32)
    pred = gset.volume(vol.shape[0], apix).cpu().numpy()
    corr = float(np.corrcoef(pred.ravel(), vol.ravel())[0, 1])
    from scipy.ndimage import binary_dilation
    m = binary_dilation(vol > default_threshold(vol), iterations=2)
    mcorr = float(np.corrcoef(pred[m], vol[m])[0, 1]) if m.sum() > 2 else float("nan")
    f, v = fsc_mod.fsc(pred, vol, apix)
    return FitReport(corr, mcorr, fsc_mod.auc(v), fsc_mod.resolution_at(f, v), len(gset), n_pruned)
