"""Backprojection of particle images into a map, with Wiener filtering in Fourier space.

A reconstruction here is real-space backprojection followed by one division in Fourier
space, so that the same operator can backproject along rays that a deformation bends
(:mod:`gaussianem.analysis.reconstruct`):

1. :func:`prepare_images`: each image, offset removed, is multiplied in Fourier space by
   its CTF (times its intensity scale) and by the phase that moves its particle to the
   image centre (the RELION origin undone), giving the CTF-filtered image ``b_i``; its
   point-spread function ``p_i``, the inverse transform of ``(scale CTF)^2`` centred at
   pixel ``box // 2``, comes with it.
2. :func:`backproject`: every voxel ``x`` (engine frame, Angstrom) of the map, or the
   point a deformation sends it to, is projected with the particle's pose (pixel
   ``(A x)_xy / apix + box // 2``, the renderer's convention) and the image is read there
   bilinearly; the values of all particles add up. The adjoint of projection: the 3D
   transform of the sum is the images' spectra laid on their central slices.
3. The point-spread functions backprojected the same way, without deformation, give the
   weights ``W(k) = sum_i (scale_i CTF_i(k))^2`` on the same slices, with the same
   interpolation and slice thickness as the numerator ``N`` (so they cancel), and
   :func:`wiener` returns ``IFFT(FFT(N) / (W + reg))`` with a regulariser per shell
   (:func:`shell_regulariser`: RELION's ``1 / tau^2`` from the half maps' FSC).

Maps are (z, y, x), voxel ``box // 2`` at the engine origin (:mod:`gaussianem.physics.grid`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gaussianem.physics import ctf as ctf_mod
from gaussianem.physics.fsc import shell_index


def _upsampled(f: torch.Tensor, D: int, factor: int) -> torch.Tensor:
    """Real images (B, factor D, factor D) from rfft2 spectra (B, D, D // 2 + 1) of D-pixel
    images: zero-padded spectra (sinc interpolation), values kept, pixel 0 kept."""
    if factor == 1:
        return torch.fft.irfft2(f, s=(D, D))
    n = factor * D
    g = torch.zeros(f.shape[0], n, n // 2 + 1, dtype=f.dtype, device=f.device)
    h = D // 2
    g[:, :h, :h + 1] = f[:, :h]
    g[:, n - h:, :h + 1] = f[:, h:]
    return torch.fft.irfft2(g, s=(n, n)) * factor ** 2


def prepare_images(images: torch.Tensor, ctf_params: torch.Tensor, apix: torch.Tensor,
                   shifts: torch.Tensor, scale: torch.Tensor | None = None, oversample: int = 2) -> torch.Tensor:
    """(B, 2, oversample D, oversample D): channel 0 the CTF-filtered, centred images
    ``b_i``; channel 1 their point-spread functions ``p_i`` (see the module docstring),
    both interpolated ``oversample`` times finer (zero-padded spectra, so that reading
    them bilinearly loses little). images (B, D, D); ctf_params (B, 9); apix (B,)
    Angstrom (of ``images``; the returned images' pixels are ``apix / oversample``);
    shifts (B, 2) RELION origins, Angstrom; scale (B,) or None."""
    B, D, _ = images.shape
    x = images.float() - images.float().mean((-2, -1), keepdim=True)
    freqs = ctf_mod.fourier_grid(D, apix.float(), device=images.device)          # (B, H, W, 2)
    c = ctf_mod.evaluate(freqs, ctf_params.float())
    if scale is not None:
        c = c * scale.float()[:, None, None]
    s = shifts.float()
    phase = -2 * torch.pi * (freqs[..., 0] * s[:, 0, None, None] + freqs[..., 1] * s[:, 1, None, None])
    f = torch.fft.rfft2(x) * c * torch.polar(torch.ones_like(phase), phase)
    b = _upsampled(f, D, oversample)
    p = torch.fft.fftshift(_upsampled((c * c).to(torch.complex64), D, oversample), dim=(-2, -1))
    return torch.stack([b, p], 1)


def backproject(channels: torch.Tensor, rotations: torch.Tensor, apix: torch.Tensor,
                points: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Add the images ``channels`` (B, C, D, D) read at the projections of ``points``
    ((P, 3), or (B, P, 3) for one set per particle; engine frame, Angstrom) under poses
    ``rotations`` (B, 3, 3) and pixel sizes ``apix`` (B,) into ``out`` (C, P); returns it."""
    D = channels.shape[-1]
    r = rotations.float()[:, :2, :]
    if points.ndim == 2:
        xy = torch.einsum("bij,pj->bpi", r, points.float())
    else:
        xy = torch.einsum("bij,bpj->bpi", r, points.float())
    g = (xy / apix.float()[:, None, None] + D // 2) * (2.0 / (D - 1)) - 1.0
    s = F.grid_sample(channels.float(), g[:, :, None, :], mode="bilinear", padding_mode="zeros",
                      align_corners=True)                                           # (B, C, P, 1)
    out += s[..., 0].sum(0)
    return out


def voxel_points(box: int, apix: float, device=None) -> torch.Tensor:
    """Engine-frame positions (box^3, 3), x y z in Angstrom, of a map's voxels in (z, y, x)
    order (voxel ``box // 2`` at the origin)."""
    c = (torch.arange(box, device=device, dtype=torch.float32) - box // 2) * float(apix)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], -1).reshape(-1, 3)


def spectrum(vol: torch.Tensor) -> torch.Tensor:
    """``rfftn`` of a (D, D, D) map with voxel ``D // 2`` as the origin."""
    return torch.fft.rfftn(torch.fft.ifftshift(vol.double()))


def weights(psf_backprojection: torch.Tensor) -> torch.Tensor:
    """Fourier weights ``W(k)`` (rfftn layout, real, >= 0) from backprojected point-spread
    functions (D, D, D)."""
    return spectrum(psf_backprojection).real.clamp_min(0)


def shell_mean(values: torch.Tensor, box: int) -> np.ndarray:
    """Mean of an rfftn-layout array over each Fourier shell 0 .. box // 2."""
    shell, inside = shell_index(box)
    n = box // 2 + 1
    s = torch.zeros(n, dtype=torch.float64).index_add_(0, shell[inside], values.flatten().double().cpu()[inside])
    c = torch.zeros(n, dtype=torch.float64).index_add_(0, shell[inside], torch.ones_like(shell[inside],
                                                                                        dtype=torch.float64))
    return (s / c.clamp_min(1)).numpy()


def shell_regulariser(weight: torch.Tensor, fsc_values=None, floor: float = 1e-3,
                      initial: float = 0.1) -> np.ndarray:
    """Per-shell regulariser (box // 2 + 1,) for :func:`wiener`: RELION's ``1 / tau^2`` =
    mean weight / SSNR, SSNR = FSC / (1 - FSC) (FSC clipped to [floor, 0.999]; pass the
    full map's FSC, ``2 FSC / (1 + FSC)`` of the halves, for a map of both halves).
    Without an FSC: ``initial`` times the shell's mean weight. Never below ``floor``
    times the mean weight over the shells (the zero shell, which offset removal and the
    CTF leave nearly empty, included)."""
    box = weight.shape[0]
    mean_w = shell_mean(weight, box)
    least = floor * max(float(mean_w[1:].mean()) if len(mean_w) > 1 else 0.0, 1e-30)
    if fsc_values is None:
        return np.maximum(initial * mean_w, least)
    f = np.clip(np.concatenate([[1.0], np.asarray(fsc_values, np.float64)]), floor, 0.999)
    f = f[:len(mean_w)]
    return np.maximum(mean_w * (1 - f) / f, least)


def wiener(numerator: torch.Tensor, weight: torch.Tensor, regulariser: np.ndarray) -> torch.Tensor:
    """Map (D, D, D) float32 ``IFFT(FFT(numerator) / (weight + reg(shell)))``, zero beyond
    Nyquist; ``numerator`` (D, D, D) real space, ``weight`` from :func:`weights`."""
    D = numerator.shape[0]
    shell, inside = shell_index(D)
    reg = torch.as_tensor(np.append(regulariser, 0.0), dtype=torch.float64)
    r = reg[torch.where(inside, shell, torch.full_like(shell, len(regulariser)))].reshape(weight.shape)
    den = (weight.cpu() + r).clamp_min(1e-30)
    spec = spectrum(numerator.cpu()) / den * inside.reshape(weight.shape)
    return torch.fft.fftshift(torch.fft.irfftn(spec, s=(D, D, D))).float()
