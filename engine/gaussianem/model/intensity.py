"""The intensity scale between particle images and projections of the Gaussians.

Particle images come in any units (counts, normalised by RELION, scaled by a
preprocessing tool) with any offset, and their contrast varies between micrographs (ice
thickness, dose). The model of a particle image ``x_i`` is

    x_i = s_i * CTF_i * P_i(Gaussians) + offset_i + noise,

and nothing in training may have to absorb a wrong ``s_i``: a decoder whose amplitudes
must make up a 12-fold mismatch collapses to empty maps (what happened on a data set in
arbitrary units before this module). So, before training:

* **offsets**: every image loses its mean (:func:`normalise`), and the image loss
  compares mean-free images (the zero frequency carries offset, not structure);
* **units**: images are divided by one global standard deviation (of mean-free images);
* **scale per optics group**: the least-squares scale ``s_g = sum <p, x> / sum <p, p>``
  of the images on the consensus projections ``p`` (pose and CTF applied, low-pass
  filtered to the training's starting band) over the group's particles. A clearly
  negative ``s_g`` means inverted contrast (:class:`~gaussianem.errors.TrainingError`
  suggesting ``--invert``); one indistinguishable from zero means the images do not
  match the map and poses at all;
* **per particle** (RELION's ``rlnNormCorrection``, cryoSPARC's per-particle scale): the
  particle's own least-squares scale, shrunk towards its group's by the fraction of
  their spread that noise explains (an empirical-Bayes / James-Stein estimate), so that
  at low SNR a particle keeps its group's scale and at high SNR its own; clipped to
  [0.5, 2] times the group's.

Training multiplies every projection by ``s_i`` (and a learned global factor near 1 for
what the Gaussians' fit to the map leaves).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gaussianem.errors import TrainingError
from gaussianem.io.images import make_loader

CLIP = (0.5, 2.0)          # a particle's scale relative to its group's


def normalise(images: torch.Tensor, image_std: float, remove_offset: bool = True) -> torch.Tensor:
    """Mean-free images (each its own mean removed) in units of the data set's noise-level
    standard deviation (``image_std``)."""
    images = images.float()
    if remove_offset:
        images = images - images.mean((-2, -1), keepdim=True)
    return images / image_std


def image_std(images, n: int = 256, seed: int = 0) -> float:
    """Standard deviation of mean-free images over a random sample of ``n`` particles of a
    :class:`~gaussianem.io.images.ParticleImages`."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), size=min(n, len(images)), replace=False)
    x = images.__getitems__(np.sort(idx))["image"]
    s = float((x - x.mean((-2, -1), keepdim=True)).std())
    if not np.isfinite(s) or s <= 0:
        cache = getattr(images, "cache", None)          # io.cache.CachedImages
        where = "" if cache is None else (f" as read from the particle cache {cache.path} (if the images "
                                          "themselves are fine, remove the cache to have it rebuilt)")
        raise TrainingError(f"particle images in {images.data.source} are constant or not finite{where}")
    return s


@dataclass
class IntensityScale:
    """Scales of the training particles and what is needed to scale new ones."""

    groups: list = field(default_factory=list)         # optics group numbers
    group_scale: list = field(default_factory=list)    # least-squares scale of each group
    group_z: list = field(default_factory=list)        # each scale in units of its standard error
    shrink: float = 0.0        # weight of a particle's own estimate (0: group's scale, 1: its own)
    particle: np.ndarray | None = None   # (N,) float32 per-particle scales, input order
    correlation: float = 0.0   # overall correlation of images and consensus projections
    band: float | None = None  # Angstrom: the low-pass the estimate used
    remove_offset: bool = True  # False only for runs written before this module
    shift_correction: np.ndarray | None = None  # (N, 2) Angstrom, added to the star's origins

    @classmethod
    def legacy(cls, n: int) -> "IntensityScale":
        """What runs trained before scales were estimated used: 1 for every particle and
        images with their offsets."""
        return cls(particle=np.ones(n, np.float32), remove_offset=False)

    def as_dict(self) -> dict:
        return {"groups": [int(g) for g in self.groups], "group_scale": [float(s) for s in self.group_scale],
                "group_z": [float(z) for z in self.group_z], "shrink": float(self.shrink),
                "particle": None if self.particle is None else np.asarray(self.particle, np.float32),
                "correlation": float(self.correlation), "band": self.band, "remove_offset": self.remove_offset,
                "shift_correction": None if self.shift_correction is None
                else np.asarray(self.shift_correction, np.float32)}

    @classmethod
    def from_dict(cls, d: dict | None, n: int) -> "IntensityScale":
        if d is None:
            return cls.legacy(n)
        d = {**d, "particle": np.asarray(d["particle"], np.float32)}
        if d.get("shift_correction") is not None:
            d["shift_correction"] = np.asarray(d["shift_correction"], np.float32)
        return cls(**d)

    def summary(self, groups: np.ndarray | None = None) -> dict:
        """For health.json and the logs: the group scales and the per-particle spread; with
        each particle's optics group (``groups``) also the fraction of low-signal particles
        (:meth:`low_signal`)."""
        p = np.asarray(self.particle if self.particle is not None else [1.0])
        sc = self.shift_correction
        shifts = {} if sc is None else {"shift_correction_rms_A": float(np.sqrt((np.asarray(sc) ** 2).sum(1).mean()))}
        return {**shifts, "group_scale": dict(zip((str(g) for g in self.groups), map(float, self.group_scale))),
                "shrink": float(self.shrink), "correlation": float(self.correlation),
                "particle_scale_p5_p95": [float(np.percentile(p, 5)), float(np.percentile(p, 95))],
                **({} if groups is None else {"low_signal_fraction": float(self.low_signal(groups).mean())})}

    def low_signal(self, groups: np.ndarray) -> np.ndarray:
        """(N,) bool: the particles whose scale sits at the lower clip, half their optics
        group's (``groups``: each particle's group): images that match the consensus
        projections at under half the typical strength even after shrinkage, e.g. junk
        without the protein (all 229 pure-noise images of the junk_noise robustness cell,
        and 0.05-1.9% of the particles of the cells without junk)."""
        p = np.asarray(self.particle, np.float64)
        if not self.group_scale or len(p) != len(groups):
            return np.zeros(len(p), bool)
        return p <= CLIP[0] * self.group_scales(groups) * (1 + 1e-4)

    def group_scales(self, groups: np.ndarray) -> np.ndarray:
        """Each particle's optics-group scale (``groups``: their group numbers); a group
        this run has not seen gets the median group's."""
        table = dict(zip(self.groups, self.group_scale))
        default = float(np.median(self.group_scale))
        return np.array([table.get(int(g), default) for g in groups])

    def scale_new(self, num: np.ndarray, den: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Scales of particles not in the training set from their ``<p, x>`` and
        ``<p, p>``, with the training run's group scales (the median for unknown groups)
        and shrinkage."""
        if not self.group_scale:
            return np.ones(len(num), np.float32)
        sg = self.group_scales(groups) if groups is not None else np.full(len(num), np.median(self.group_scale))
        raw = num / np.maximum(den, 1e-30)
        rel = np.clip(1 + self.shrink * (raw / sg - 1), *CLIP)
        return (sg * rel).astype(np.float32)


SHIFT_RADIUS = 3           # whole-pixel offsets searched by the shift correction, each way


@torch.no_grad()
def projections_dot(centres, amplitudes, widths, images: torch.Tensor, idx, phys, box: int,
                    band: float | None, window: int = 0):
    """For a batch of normalised images ``x``: ``<p, x>``, ``<p, p>`` and ``<x, x>``, with
    ``p`` the mean-free projection of the Gaussians (pose and CTF applied, low-passed to
    ``band``, no intensity scale); with ``window`` r > 0 also the cross-correlations
    ``<x(r + d), p(r)>`` for whole-pixel offsets ``|d_x|, |d_y| <= r``, (B, 2r+1, 2r+1)
    (indexed [d_y + r, d_x + r]; the centre is ``<p, x>``), else None."""
    p = phys.project(centres, amplitudes, widths, idx, box, band, scaled=False)
    x = images.float()
    cc = None
    if window:
        rows = torch.arange(-window, window + 1, device=x.device) % box
        cc = torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(p).conj(), s=(box, box))[:, rows][:, :, rows]
    return (p * x).sum((-2, -1)), (p * p).sum((-2, -1)), (x * x).sum((-2, -1)), cc


def measure(base, images, phys, box: int, std: float, band: float | None, device,
            batch_size: int = 256, window: int = 0):
    """Per-particle ``<p,x>``, ``<p,p>``, ``<x,x>`` and (``window`` > 0) cross-correlation
    windows (see :func:`projections_dot`) of all particles of ``images`` (a
    ParticleImages) against the Gaussians ``base``: one batched pass over the data."""
    n = len(images)
    num, den, xx = (np.zeros(n) for _ in range(3))
    cc = torch.zeros(n, 2 * window + 1, 2 * window + 1) if window else None
    c, a, w = (t.to(device) for t in (base.centres, base.amplitudes, base.widths))
    loader = make_loader(images, batch_size, shuffle=False, sampler=list(range(n)), device=device)
    for batch in loader:
        idx = batch["index"].to(device)
        x = normalise(batch["image"].to(device), std)
        *sums, ccb = projections_dot(c, a, w, x, idx, phys, box, band, window)
        i = batch["index"].numpy()
        for dst, v in zip((num, den, xx), sums):
            dst[i] = v.double().cpu().numpy()
        if window:
            cc[i] = ccb.float().cpu()
    return num, den, xx, cc


def estimate(base, images, phys, box: int, std: float, band: float | None, device,
             refine_shifts: bool = True) -> IntensityScale:
    """:class:`IntensityScale` of all particles of ``images`` against the Gaussians ``base``;
    with ``refine_shifts``, also each particle's in-plane shift correction
    (:func:`shift_posterior`, from the same pass), applied to ``phys`` and the scales
    measured again with it."""
    groups = np.asarray(images.data.optics_group)
    num, den, xx, cc = measure(base, images, phys, box, std, band, device,
                               window=SHIFT_RADIUS if refine_shifts else 0)
    est = from_sums(num, den, xx, box * box, groups, band, images.data.source)
    if not refine_shifts:
        return est
    noise_var = np.maximum(xx - num ** 2 / np.maximum(den, 1e-30), 1e-12) / (box * box)
    corr = shift_posterior(cc, est.particle / noise_var, phys.apix.cpu().numpy())
    phys.shift = phys.star_shift + torch.from_numpy(corr).to(phys.shift)
    num, den, xx, _ = measure(base, images, phys, box, std, band, device)
    est = from_sums(num, den, xx, box * box, groups, band, images.data.source)
    est.shift_correction = corr
    return est


def shift_posterior(cc: torch.Tensor, weight: np.ndarray, apix: np.ndarray, em_steps: int = 20) -> np.ndarray:
    """Each particle's in-plane shift error (N, 2) in Angstrom, to add to its origin, from
    its cross-correlation window ``cc`` (N, 2r+1, 2r+1) with the consensus projection
    (:func:`projections_dot`), ``weight`` = scale / per-pixel noise variance and the pixel
    sizes ``apix``: the posterior mean over whole-pixel offsets ``d`` of
    ``exp(s <x, p_d> / sigma^2) * N(d; 0, w^2)``, the exact Gaussian-noise likelihood of
    the image ``x`` being the consensus projection ``p`` moved by ``d``, under a Gaussian
    prior whose width ``w`` is fitted to the data by expectation-maximisation (empirical
    Bayes): star files with shift errors get a wide prior and their errors corrected;
    exact origins get a narrow one and corrections near 0 (a correction there would only
    trade motion for an offset). At low SNR the posterior is the prior. A latent left to
    explain shift errors learns each particle's offset instead of its state."""
    r = (cc.shape[-1] - 1) // 2
    off = torch.arange(-r, r + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(off, off, indexing="ij")
    d2 = dx ** 2 + dy ** 2
    loglik = cc * torch.from_numpy(np.asarray(weight, np.float32))[:, None, None]
    width2 = 1.0
    for _ in range(em_steps):                       # the prior's width from the data
        post = torch.softmax((loglik - d2 / (2 * width2)).flatten(1), 1).view_as(loglik)
        width2 = float(np.clip((post * d2).sum((1, 2)).mean() / 2, 0.01, r * r / 4))
    post = torch.softmax((loglik - d2 / (2 * width2)).flatten(1), 1).view_as(loglik)
    d_px = torch.stack([(post * dx).sum((1, 2)), (post * dy).sum((1, 2))], 1).numpy()   # content moved by +d
    # render.project puts a centre at -origin / apix: content moved by +d pixels means the
    # origin must shrink by d pixels
    return (-d_px * np.asarray(apix)[:, None]).astype(np.float32)


def from_sums(num, den, xx, npix: int, groups, band=None, source: str = "the particles") -> IntensityScale:
    """Group and shrunk per-particle scales from per-particle ``<p,x>``, ``<p,p>`` and
    ``<x,x>`` over ``npix`` pixels. The noise is taken as white with the per-pixel variance
    of what the scaled projection leaves, so ``<p,x>`` has variance ``var * <p,p>``."""
    num, den, xx = (np.asarray(v, np.float64) for v in (num, den, xx))
    groups = np.asarray(groups)
    ok = den > 0
    if not ok.any():
        raise TrainingError(f"the consensus Gaussians project to nothing for every particle of {source}: "
                            "the map and the particles' poses do not overlap")
    dd = np.where(ok, den, 1.0)
    var = np.maximum(xx - np.where(ok, num ** 2 / dd, 0.0), 0) / npix
    gs, gz, ids, spread_noise, spread_all = [], [], [], [], []
    for g in np.unique(groups):
        sel = (groups == g) & ok
        if not sel.any():
            continue
        s_g = num[sel].sum() / den[sel].sum()
        se = np.sqrt((var[sel] * den[sel]).sum()) / den[sel].sum()
        z = s_g / max(se, 1e-30)
        if z < -5:
            raise TrainingError(
                f"the particle images in {source} (optics group {int(g)}) have inverted contrast: they "
                f"correlate negatively with the consensus map's projections (scale {s_g:.3g}, {abs(z):.0f} "
                "standard errors below zero). Train with --invert (ChimeraX: invert true), or without it "
                "if you gave it.")
        if z < 5:
            raise TrainingError(
                f"the particle images in {source} (optics group {int(g)}) do not match the consensus map "
                f"with their poses and CTF (least-squares scale {s_g:.3g} is within {abs(z):.1f} standard "
                "errors of zero). Check that the map is the one these poses were refined against, the "
                "pixel size, and the Euler-angle and origin columns.")
        raw = num[sel] / den[sel] / s_g
        spread_all.append(np.var(raw) * sel.sum())
        spread_noise.append(np.sum(var[sel] / den[sel]) / s_g ** 2)
        gs.append(float(s_g))
        gz.append(float(z))
        ids.append(int(g))
    total = float(np.sum(spread_all))
    shrink = float(np.clip(1 - np.sum(spread_noise) / total, 0, 1)) if total > 0 else 0.0
    table = dict(zip(ids, gs))
    sg = np.array([table.get(int(g), np.median(gs)) for g in groups])
    raw = np.where(ok, num / dd / sg, 1.0)
    scales = sg * np.clip(1 + shrink * (raw - 1), *CLIP)
    corr = float(np.mean(num[ok] / np.sqrt(den[ok] * np.maximum(xx[ok], 1e-30))))
    return IntensityScale(groups=ids, group_scale=gs, group_z=gz, shrink=shrink,
                          particle=scales.astype(np.float32), correlation=corr, band=band)
