"""Voxel-volume projector by the Fourier-slice theorem (independent of the Gaussians).

Used by the simulator (so that training data are not made by the training model's own
forward model) and by the tests that check the Gaussian renderer's pose conventions.

The central-slice theorem: the 2D transform of a projection along z of the volume turned
by ``A`` is the 3D transform at ``A.T @ (kx, ky, 0)``. The volume is zero-padded by
``oversample`` before its 3D FFT and the slice is read by trilinear interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gaussianem.physics import ctf as ctf_mod


def volume_spectrum(vol: torch.Tensor, oversample: int = 2) -> torch.Tensor:
    """Centred 3D spectrum (zero frequency at index P//2) of a (D, D, D) z,y,x volume."""
    D = vol.shape[-1]
    P = D * oversample
    pad = (P - D) // 2
    volp = F.pad(vol.float(), (pad, P - D - pad) * 3)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(volp)))


def slice_spectrum(spec: torch.Tensor, rotations: torch.Tensor, box: int) -> torch.Tensor:
    """Central slices (B, box, box) of a centred spectrum, image frequencies centred too."""
    P = spec.shape[-1]
    device = spec.device
    k = (torch.arange(box, device=device, dtype=torch.float32) - box // 2) / box  # cycles/px
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    k2 = torch.stack([kx, ky, torch.zeros_like(kx)], dim=-1)                     # (H, W, 3)
    q = torch.einsum("bji,hwj->bhwi", rotations.float().to(device), k2)          # A^T k
    idx = q * P + P // 2
    grid = idx / (P - 1) * 2 - 1                                                  # x,y,z order
    B = rotations.shape[0]
    src = torch.stack([spec.real, spec.imag])[None]                               # (1,2,P,P,P)
    out = F.grid_sample(src.expand(B, -1, -1, -1, -1), grid[:, None], mode="bilinear",
                        padding_mode="zeros", align_corners=True)                 # (B,2,1,H,W)
    return torch.complex(out[:, 0, 0], out[:, 1, 0])


def project_volume(vol: torch.Tensor, rotations: torch.Tensor, shifts: torch.Tensor, apix,
                   ctf_params: torch.Tensor | None = None, oversample: int = 2,
                   batch: int = 64, spec: torch.Tensor | None = None) -> torch.Tensor:
    """Projections (B, D, D) of a voxel volume for RELION poses, origins and CTFs.

    vol: (D, D, D) z,y,x with the origin at voxel D//2; rotations (B, 3, 3); shifts (B, 2)
    Angstrom; apix float or (B,); ctf_params (B, 9) (or (B, 8), see ctf.evaluate) or None. Images are sums of voxel values
    along z (multiplied by the CTF when given), with the particle centred at
    ``-origin`` as RELION's convention requires.
    """
    D = vol.shape[-1]
    device = vol.device
    if spec is None:
        spec = volume_spectrum(vol, oversample)
    B = rotations.shape[0]
    if not isinstance(apix, torch.Tensor):
        apix = torch.full((B,), float(apix))
    apix = apix.float().to(device)
    k = (torch.arange(D, device=device, dtype=torch.float32) - D // 2) / D
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    out = []
    for s in range(0, B, batch):
        sl = slice(s, min(B, s + batch))
        g = slice_spectrum(spec, rotations[sl].to(device), D)
        sh = shifts[sl].float().to(device) / apix[sl, None]                          # pixels
        phase = 2 * torch.pi * (kx * sh[:, 0, None, None] + ky * sh[:, 1, None, None])
        g = g * torch.polar(torch.ones_like(phase), phase)
        if ctf_params is not None:
            freqs = torch.stack([kx, ky], -1)[None] / apix[sl, None, None, None]
            g = g * ctf_mod.evaluate(freqs, ctf_params[sl].float().to(device))
        img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(g, dim=(-2, -1))), dim=(-2, -1))
        out.append(img.real)
    return torch.cat(out)
