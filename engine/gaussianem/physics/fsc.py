"""Fourier shell correlation between two maps, and the numbers users quote from it."""

from __future__ import annotations

import numpy as np
import torch

from gaussianem.errors import InputError
from gaussianem.physics.render import render_volume


def shell_index(box: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier shell (rounded radius in voxels) of every element of a ``box``^3 map's
    ``rfftn``, flattened, and which of them lie within Nyquist (shell <= box // 2)."""
    kz = torch.fft.fftfreq(box) * box
    kx = torch.fft.rfftfreq(box) * box
    r = torch.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    shell = torch.round(r).long().flatten()
    return shell, shell <= box // 2


def shell_frequencies(box: int, apix: float = 1.0) -> np.ndarray:
    """Spatial frequency (1/Angstrom) of the FSC's shells 1 .. box // 2."""
    return np.arange(1, box // 2 + 1) / (box * apix)


def fsc(vol1, vol2, apix: float = 1.0, mask=None):
    """FSC of two cubic maps (each multiplied by ``mask`` first, when given). Returns
    (frequencies in 1/Angstrom, fsc values), shells up to Nyquist (box//2 shells,
    skipping the zero shell)."""
    a = torch.from_numpy(np.array(vol1, dtype=np.float32))
    b = torch.from_numpy(np.array(vol2, dtype=np.float32))
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise InputError(f"FSC needs two cubic maps of the same size, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if mask is not None:
        m = torch.from_numpy(np.array(mask, dtype=np.float32))
        if m.shape != a.shape:
            raise InputError(f"FSC mask of shape {tuple(m.shape)} for maps of shape {tuple(a.shape)}")
        a, b = a * m, b * m
    D = a.shape[0]
    fa, fb = torch.fft.rfftn(a), torch.fft.rfftn(b)
    shell, keep = shell_index(D)
    n = D // 2 + 1
    shell = shell[keep]
    num = torch.zeros(n, dtype=torch.float64).index_add_(
        0, shell, (fa * fb.conj()).real.flatten()[keep].double())
    p1 = torch.zeros(n, dtype=torch.float64).index_add_(0, shell, (fa.abs() ** 2).flatten()[keep].double())
    p2 = torch.zeros(n, dtype=torch.float64).index_add_(0, shell, (fb.abs() ** 2).flatten()[keep].double())
    vals = (num / torch.sqrt(p1 * p2).clamp_min(1e-30)).numpy()[1:]
    return shell_frequencies(D, apix), vals


def resolution_at(freqs, values, threshold: float = 0.5) -> float:
    """Resolution (Angstrom) where the FSC first drops below ``threshold`` (Nyquist if never)."""
    below = np.nonzero(np.asarray(values) < threshold)[0]
    if len(below) == 0:
        return float(1 / freqs[-1])
    i = below[0]
    if i == 0:
        return float(1 / freqs[0])
    # linear interpolation between shells i-1 and i
    f0, f1, v0, v1 = freqs[i - 1], freqs[i], values[i - 1], values[i]
    f = f0 + (v0 - threshold) / (v0 - v1) * (f1 - f0)
    return float(1 / f)


def auc(values) -> float:
    """Area under the FSC curve, normalised to [0, 1] over the shells to Nyquist."""
    return float(np.mean(np.clip(values, 0, 1)))


def phase_randomised(vol, from_shell: int, seed: int = 0) -> np.ndarray:
    """The map with the phases of every Fourier component at shell >= ``from_shell``
    replaced by random ones (amplitudes kept; Hermitian symmetry kept through ``rfftn``):
    the reference for correcting a masked FSC (Chen et al. 2013, RELION's postprocess)."""
    a = torch.from_numpy(np.array(vol, dtype=np.float32))
    D = a.shape[0]
    f = torch.fft.rfftn(a)
    shell, _ = shell_index(D)
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.fft.rfftn(torch.randn(a.shape, generator=g))          # phases of real noise: Hermitian
    rand = (shell >= int(from_shell)).reshape(f.shape)
    f = torch.where(rand, f.abs() * noise / noise.abs().clamp_min(1e-30), f)
    return torch.fft.irfftn(f, s=a.shape).numpy()


def corrected_masked_fsc(half1, half2, mask, apix: float = 1.0, seed: int = 0, *, masked=None, unmasked=None):
    """Masked FSC of two half maps corrected for the mask's own correlation:
    ``(FSC_masked - FSC_rand) / (1 - FSC_rand)`` beyond the shell where the unmasked FSC
    first falls below 0.8, ``FSC_rand`` the masked FSC of the halves with their phases
    randomised from there. ``masked`` / ``unmasked``: the halves' FSC curves, when the
    caller has them already. Returns (frequencies, corrected values, the shell used)."""
    freqs, unmasked = fsc(half1, half2, apix) if unmasked is None else (shell_frequencies(np.shape(half1)[0], apix), unmasked)
    if masked is None:
        masked = fsc(half1, half2, apix, mask=mask)[1]
    below = np.nonzero(unmasked < 0.8)[0]
    start = int(below[0]) + 1 if len(below) else len(unmasked) + 1         # shells count from 1
    if start > len(unmasked):
        return freqs, masked, start
    _, rand = fsc(phase_randomised(half1, start, seed), phase_randomised(half2, start, seed + 1), apix, mask=mask)
    out = masked.copy()
    tail = np.arange(len(masked)) >= start - 1
    out[tail] = (masked[tail] - rand[tail]) / np.clip(1 - rand[tail], 1e-6, None)
    return freqs, out, start


def soft_mask(centres: torch.Tensor, widths: torch.Tensor, grid) -> np.ndarray:
    """Unit-height Gaussians at ``centres`` (engine frame) with ``widths`` (Angstrom),
    rendered on ``grid`` (a :class:`~gaussianem.physics.grid.Grid`) and divided by a tenth
    of their peak: 1 inside, falling to 0."""
    m = render_volume(centres, torch.ones(len(centres)), widths, grid.box, grid.apix)
    return (m / (0.1 * m.max().clamp_min(1e-30))).clamp(0, 1).numpy()
