"""Does the consensus map match the particle images? Checked before training.

A consensus map of the wrong hand, another map, a featureless one or one at the wrong
pixel size still correlates with the images a little (every protein is a blob of about
the right size), so training on it ran, and its health looked fine (issue 29: a mirrored,
a 90-degree-turned and a featureless consensus each trained to exit 0). Here the images
are compared with projections (each particle's pose, origin and CTF) of the map and of
controls that a right map must beat:

* its **mirror image** (the hand flipped: reflected through its centre along z, as
  ChimeraX's ``volume flip``): the same mass and radial profile, so it fits the images as
  well as the map does unless the map's hand, and its features, are the images';
* the map **low-passed** to ``LOWPASS`` (30 A): the same overall shape without features;
* the map **magnified** and **shrunk** by ``SCALE`` (10%): a wrong pixel size (or box)
  shows as one of them fitting better.

Up to ``MAX_PARTICLES`` particles (at random, from the optics groups at the map's pixel
size) are compared at a working pixel size of ``WORK_APIX`` (the map's, if coarser): each
correlation is the best over origins within ``SHIFT_SEARCH`` pixel (star files' shift
errors), and the per-particle differences give paired z-scores, ``mean / (sd / sqrt(n))``.
The map must beat its mirror image and its low-pass by ``MARGIN`` of its own correlation
(a symmetric blob equals its mirror image and nearly its low-pass), by more than
:meth:`ConsensusMatch.threshold` standard errors, and neither rescaled map may beat it
by as much. Measured on right and wrong maps at SNR 0.1 and 0.01 (docs/engine.md,
"Consensus check"; ``benchmarks/consensus_check.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import affine_transform

from gaussianem.io.images import ParticleImages
from gaussianem.io.particle_data import ParticleData
from gaussianem.physics import fourier_slice
from gaussianem.physics.resample import even_box, fourier_crop_volume

WORK_APIX = 5.0          # Angstrom: the working pixel size (Nyquist 10 A), or the map's if coarser
LOWPASS = 30.0           # Angstrom: the featureless control
MAX_PARTICLES = 2000     # particles compared (a random subset of larger sets)
MIN_PARTICLES = 50       # fewer: too few to judge, not checked
Z_MIN = 7.0              # the map must beat each control by this many standard errors (2000 particles)
Z_FLOOR = 3.0            # ... with fewer particles the same effect per particle, but at least this
MARGIN = 0.03            # ... by at least this fraction of its own correlation (mirror, low-pass)
SCALE = 1.1              # the magnified and shrunk controls (a wrong pixel size)
SHIFT_SEARCH = 1         # working pixels: each correlation is the best over origins this far off
BATCH = 128


@dataclass
class ConsensusMatch:
    """How the consensus map's projections match the images, against its controls."""

    particles: int               # particles compared
    apix: float                  # Angstrom: the working pixel size
    correlation: float           # mean per-particle correlation of the images with the map's projections
    z_mirror: float              # paired z-score, map less MARGIN minus its mirror image
    z_lowpass: float             # paired z-score, map less MARGIN minus itself low-passed to LOWPASS
    z_hand: float = 0.0          # paired z-score, map minus its mirror image (no margin)
    z_larger: float = 0.0        # paired z-score, map minus the map magnified by SCALE
    z_smaller: float = 0.0       # paired z-score, map minus the map shrunk by SCALE
    controls: list | None = None  # mean correlations: map, mirror, low-pass, larger, smaller
    sign: float = 1.0            # -1: the images correlate negatively with the map (inverted contrast)

    def as_dict(self) -> dict:
        return {k: v if isinstance(v, (int, list)) else float(v) for k, v in self.__dict__.items()}

    def threshold(self) -> float:
        """The z-score a right map must beat its controls by: ``Z_MIN`` at
        ``MAX_PARTICLES`` particles, the same effect per particle with fewer (``Z_MIN``
        x sqrt(particles / ``MAX_PARTICLES``)), never under ``Z_FLOOR``."""
        return max(Z_FLOOR, Z_MIN * float(np.sqrt(self.particles / MAX_PARTICLES)))

    def problems(self, z_min: float | None = None) -> list[str]:
        """What looks wrong, in words (empty: the map matches the images); ``z_min``:
        default :meth:`threshold`."""
        z_min = self.threshold() if z_min is None else z_min
        out = []
        beat = f"a right map wins by over {z_min:g} standard errors"
        if self.z_hand < -z_min:
            out.append(f"its mirror image matches the images better ({-self.z_mirror:.1f} standard errors): the "
                       "map has the wrong hand (flip it, e.g. ChimeraX 'volume flip', if the poses were refined "
                       "against the other hand)")
        elif self.z_mirror < z_min:
            out.append(f"it matches the images no better than its mirror image ({self.z_mirror:.1f} standard "
                       f"errors; {beat} by {MARGIN:.0%} of its correlation)")
        if self.z_lowpass < z_min:
            out.append(f"it matches the images no better than itself low-passed to {LOWPASS:g} A "
                       f"({self.z_lowpass:.1f} standard errors; {beat} by {MARGIN:.0%} of its correlation): "
                       "its features are not the images'")
        for z, how, apix in ((self.z_larger, "magnified", "too small"), (self.z_smaller, "shrunk", "too large")):
            if z < -z_min:
                out.append(f"the map {how} by {SCALE:g} matches the images better ({-z:.1f} standard errors): is "
                           f"its pixel size {apix} (or the particles' the other way)?")
        return out


def _magnified(vol: np.ndarray, factor: float) -> np.ndarray:
    """The map magnified by ``factor`` about its centre voxel (as it would be with a pixel
    size ``factor`` times its own)."""
    d = vol.shape[0]
    c = np.full(3, d // 2, np.float64)
    out = affine_transform(vol.astype(np.float64), np.eye(3) / factor, offset=c - c / factor, order=3)
    return out.astype(np.float32)


def _mirror(vol: np.ndarray) -> np.ndarray:
    """The map reflected along z through its centre voxel (``D // 2``)."""
    flipped = np.flip(vol, 0)
    return np.ascontiguousarray(np.roll(flipped, 1, 0) if vol.shape[0] % 2 == 0 else flipped)


def _lowpass(vol: np.ndarray, apix: float, resolution: float) -> np.ndarray:
    """The map times a Gaussian in Fourier space that is 0.5 at 1 / ``resolution``."""
    d = vol.shape[0]
    k = np.fft.fftfreq(d, d=apix)
    kr = np.fft.rfftfreq(d, d=apix)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kr[None, None, :] ** 2
    f = np.fft.rfftn(vol.astype(np.float64)) * np.exp(-np.log(2) * k2 * resolution ** 2)
    return np.fft.irfftn(f, s=vol.shape).astype(np.float32)


def working_map(vol: np.ndarray, map_apix: float, box: int, work_box: int) -> np.ndarray:
    """The map cut (or padded) to the particles' extent (``box`` voxels about its centre, at
    the same pixel size) and Fourier-cropped to ``work_box``."""
    d = vol.shape[0]
    if d > box:
        lo = d // 2 - box // 2
        vol = vol[lo:lo + box, lo:lo + box, lo:lo + box]
    elif d < box:                                   # a map a little smaller than the images
        before = box // 2 - d // 2
        vol = np.pad(vol, [(before, box - d - before)] * 3)
    return fourier_crop_volume(np.asarray(vol, np.float32), work_box)


def _z(d: np.ndarray) -> float:
    sd = float(np.std(d, ddof=1))
    return float(np.mean(d) / max(sd, 1e-12) * np.sqrt(len(d)))


@torch.no_grad()
def consensus_match(vol: np.ndarray, map_apix: float, data: ParticleData, invert: bool = False,
                    seed: int = 0, max_particles: int = MAX_PARTICLES) -> ConsensusMatch | None:
    """Compare the images of ``data`` with projections of the map ``vol`` (z, y, x, pixel
    size ``map_apix``, origin at voxel ``D // 2``), its mirror image and its low-pass
    (module docstring). ``invert``: the images' contrast is flipped as training flips it.
    None when fewer than ``MIN_PARTICLES`` particles are at the map's pixel size."""
    same = np.flatnonzero(np.abs(np.asarray(data.apix) - map_apix) < 0.01 * map_apix)
    if len(same) < MIN_PARTICLES:
        return None
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(same, size=min(len(same), max_particles), replace=False))
    sub = data.subset(idx)
    work_box = min(data.box, even_box(data.box * map_apix, max(WORK_APIX, map_apix)))
    v = working_map(vol, map_apix, data.box, work_box)
    work_box = v.shape[0]
    apix = map_apix * data.box / work_box
    maps = [v, _mirror(v), _lowpass(v, apix, LOWPASS), _magnified(v, SCALE), _magnified(v, 1 / SCALE)]
    specs = [fourier_slice.volume_spectrum(torch.from_numpy(m)) for m in maps]
    images = ParticleImages(sub, box=work_box, invert=invert)
    rot = torch.from_numpy(np.asarray(sub.rotations)).float()
    shifts = torch.from_numpy(np.asarray(sub.shifts)).float()
    ctf = sub.ctf.as_tensor()
    corr = np.zeros((len(maps), len(sub)))
    window = torch.arange(-SHIFT_SEARCH, SHIFT_SEARCH + 1) % work_box     # origins off by up to a pixel
    for s in range(0, len(sub), BATCH):
        sl = slice(s, min(len(sub), s + BATCH))
        x = images.__getitems__(np.arange(sl.start, sl.stop))["image"].float()
        x = x - x.mean((-2, -1), keepdim=True)
        fx = torch.fft.rfft2(x)
        xn = x.flatten(1).norm(dim=1)
        for k, spec in enumerate(specs):
            p = fourier_slice.project_volume(torch.from_numpy(maps[k]), rot[sl], shifts[sl], apix, ctf[sl],
                                             spec=spec, batch=BATCH)
            p = p - p.mean((-2, -1), keepdim=True)
            cc = torch.fft.irfft2(fx * torch.fft.rfft2(p).conj(), s=x.shape[-2:])[:, window][:, :, window]
            c = cc.flatten(1).max(1).values / (p.flatten(1).norm(dim=1) * xn).clamp_min(1e-30)
            corr[k, sl] = c.double().numpy()
    sign = 1.0 if corr[0].mean() >= 0 else -1.0       # inverted contrast: the intensity scale reports it
    corr *= sign
    return ConsensusMatch(particles=len(sub), apix=float(apix), correlation=float(corr[0].mean()),
                          z_mirror=_z((1 - MARGIN) * corr[0] - corr[1]), z_hand=_z(corr[0] - corr[1]),
                          z_lowpass=_z((1 - MARGIN) * corr[0] - corr[2]),
                          z_larger=_z(corr[0] - corr[3]), z_smaller=_z(corr[0] - corr[4]),
                          controls=[float(c) for c in corr.mean(1)], sign=sign)
