"""Maps at another pixel size by Fourier cropping (the volume low-passed to the new
Nyquist frequency and sampled on the coarser grid) or padding (sampled on a finer grid,
nothing added above the old Nyquist), voxel ``box // 2`` staying at the engine frame's
origin (so positions in Angstrom are unchanged), values preserved."""

from __future__ import annotations

import numpy as np

from gaussianem.errors import InputError


def fourier_crop_volume(vol: np.ndarray, box: int) -> np.ndarray:
    """Fourier-crop a cubic map (D, D, D) to (box, box, box), ``box`` even and <= D; the
    map's pixel size grows by D / box. Returns the input when box == D."""
    vol = np.asarray(vol)
    d = vol.shape[0]
    if vol.shape != (d, d, d):
        raise InputError(f"fourier_crop_volume needs a cubic map, got shape {vol.shape}")
    if box % 2 or not 0 < box <= d:
        raise InputError(f"the cropped box must be an even number of voxels up to {d}, got {box}")
    if box == d:
        return vol
    h = box // 2
    f = np.fft.rfftn(vol.astype(np.float64))
    keep = np.r_[0:h, d - h:d]
    f = f[keep][:, keep][:, :, :h + 1]
    return (np.fft.irfftn(f, s=(box, box, box)) * (box / d) ** 3).astype(np.float32)


def fourier_pad_volume(vol: np.ndarray, box: int) -> np.ndarray:
    """Fourier-pad a cubic map (D, D, D), D even, to (box, box, box), ``box`` even and >= D:
    the same band-limited density sampled ``box / D`` times finer (the inverse of
    :func:`fourier_crop_volume`). Returns the input when box == D."""
    vol = np.asarray(vol)
    d = vol.shape[0]
    if vol.shape != (d, d, d) or d % 2:
        raise InputError(f"fourier_pad_volume needs a cubic map of an even size, got shape {vol.shape}")
    if box % 2 or box < d:
        raise InputError(f"the padded box must be an even number of voxels of at least {d}, got {box}")
    if box == d:
        return vol
    f = np.fft.fftshift(np.fft.fftn(vol.astype(np.float64)))
    a = box // 2 - d // 2
    out = np.zeros((box, box, box), np.complex128)
    out[a:a + d, a:a + d, a:a + d] = f
    return (np.fft.ifftn(np.fft.ifftshift(out)).real * (box / d) ** 3).astype(np.float32)


def even_box(length_a: float, apix: float) -> int:
    """The even number of voxels of ``apix`` closest to ``length_a`` Angstrom."""
    return max(2, 2 * int(round(length_a / apix / 2)))
