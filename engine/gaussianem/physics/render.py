"""Rendering of Gaussian sets: batched 2D projections (with CTF) and 3D volumes.

Everything is analytic and vectorised over particles and Gaussians; there is no
per-particle Python loop and no voxel volume in between for projections.

Frames: Gaussian centres are in Angstrom with (0, 0, 0) at the centre of the box,
i.e. at voxel/pixel index ``box // 2`` (RELION's and ChimeraX's convention for a map of
even size). A Gaussian ``i`` with peak density ``a_i`` and width ``s_i`` (Angstrom) is
``a_i exp(-|r - mu_i|^2 / (2 s_i^2))``.

Projections are rendered directly in Fourier space (the ``rfft2`` half-plane), which is
exact and band-limited: the 2D transform of the projected Gaussian is separable in kx and
ky, so a batch of images is a complex batched matrix product
``F[b] = Fy[b] (d x N) @ diag(w[b]) Fx[b] (N x d/2+1)``. Projections are scaled as a sum
of voxel values along z (what a voxel projector such as RELION's computes), so that the
render of a Gaussian set and the Fourier-slice projection of its voxelised volume agree.
"""

from __future__ import annotations

import math

import torch

from gaussianem.physics import ctf as ctf_mod

TWO_PI = 2 * math.pi


def _freqs_1d(box: int, device, dtype):
    ky = torch.fft.fftfreq(box, device=device, dtype=dtype)      # rows (y), cycles/pixel
    kx = torch.fft.rfftfreq(box, device=device, dtype=dtype)     # columns (x)
    return kx, ky


def project_fourier(centres: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor,
                    rotations: torch.Tensor, shifts: torch.Tensor, box: int, apix,
                    chunk: int | None = None) -> torch.Tensor:
    """Fourier transforms (``rfft2`` layout) of projections of Gaussian sets.

    centres: (N, 3) or (B, N, 3) Angstrom; amplitudes, widths: (N,) or (B, N);
    rotations: (B, 3, 3) RELION matrices; shifts: (B, 2) RELION origins (Angstrom);
    apix: float or (B,) tensor. Returns complex64 (B, box, box//2+1), equal to
    ``torch.fft.rfft2`` of the real-space projection image (centre at pixel box//2).
    Work is chunked over Gaussians to bound memory (B x chunk x box per factor; default
    chunk 4096 on CUDA, 512 on CPU, where cache-sized pieces run ~3x faster). Always
    computed in float32/complex64, also inside an autocast region: positions in bf16 would
    be off by a large fraction of a pixel.
    """
    if chunk is None:
        chunk = 4096 if rotations.device.type == "cuda" else 512
    with torch.autocast(rotations.device.type, enabled=False):
        return _project_fourier(centres.float(), amplitudes.float(), widths.float(), rotations.float(),
                                shifts.float(), box, apix, chunk)


def _project_fourier(centres, amplitudes, widths, rotations, shifts, box, apix, chunk):
    B = rotations.shape[0]
    device = rotations.device
    dtype = torch.float32
    if centres.ndim == 2:
        centres = centres.unsqueeze(0).expand(B, -1, -1)
    if amplitudes.ndim == 1:
        amplitudes = amplitudes.unsqueeze(0).expand(B, -1)
    if widths.ndim == 1:
        widths = widths.unsqueeze(0).expand(B, -1)
    if not isinstance(apix, torch.Tensor):
        apix = torch.full((B,), float(apix), device=device, dtype=dtype)
    apix = apix.to(device=device, dtype=dtype)
    kx, ky = _freqs_1d(box, device, dtype)
    # 2D positions in pixels, relative to the array origin (pixel 0), image = proj(x + origin).
    xy = torch.einsum("bij,bnj->bni", rotations[:, :2, :].to(dtype), centres.to(dtype))
    xy = (xy - shifts[:, None, :].to(dtype)) / apix[:, None, None] + box // 2
    s_px = widths.to(dtype) / apix[:, None]                        # (B, N) width in pixels
    # Fourier transform of sum_z of a 3D Gaussian (voxel units): a (2 pi)^{3/2} s^3.
    w = amplitudes.to(dtype) * (TWO_PI ** 1.5) * s_px ** 3           # (B, N)
    out = torch.zeros(B, box, box // 2 + 1, dtype=torch.complex64, device=device)
    N = xy.shape[1]
    for start in range(0, N, chunk):
        sl = slice(start, min(N, start + chunk))
        s2 = (s_px[:, sl] ** 2)[..., None]                           # (B, n, 1)
        px, py = xy[:, sl, 0:1], xy[:, sl, 1:2]
        # separable factors: envelope and phase per axis
        ex = torch.exp(-2 * math.pi ** 2 * s2 * kx ** 2)             # (B, n, W)
        ey = torch.exp(-2 * math.pi ** 2 * s2 * ky ** 2)             # (B, n, H)
        fx = torch.polar(ex, -TWO_PI * px * kx)                      # (B, n, W)
        fy = torch.polar(ey * w[:, sl, None], -TWO_PI * py * ky)     # (B, n, H)
        out = out + torch.bmm(fy.transpose(1, 2), fx)                # (B, H, W)
    return out


def project(centres, amplitudes, widths, rotations, shifts, box: int, apix,
            ctf_params: torch.Tensor | None = None, real_space: bool = True,
            chunk: int | None = None, lowpass: float | None = None) -> torch.Tensor:
    """Projections of Gaussians for a batch of poses, multiplied by each particle's CTF.

    ctf_params: (B, 8) from :meth:`gaussianem.physics.ctf.CTFParams.as_tensor` or None.
    lowpass: a resolution in Angstrom; Fourier components beyond it are set to zero.
    Returns real images (B, box, box) when ``real_space`` else their rfft2 (complex).
    """
    f = project_fourier(centres, amplitudes, widths, rotations, shifts, box, apix, chunk)
    with torch.autocast(rotations.device.type, enabled=False):
        if ctf_params is not None or lowpass:
            if not isinstance(apix, torch.Tensor):
                apix = torch.full((rotations.shape[0],), float(apix), device=rotations.device)
            freqs = ctf_mod.fourier_grid(box, apix.float(), device=rotations.device)
        if ctf_params is not None:
            f = f * ctf_mod.evaluate(freqs, ctf_params.to(rotations.device).float())
        if lowpass:
            f = f * _band(freqs, lowpass)
        if real_space:
            return torch.fft.irfft2(f, s=(box, box))
        return f


def _band(freqs: torch.Tensor, resolution: float) -> torch.Tensor:
    return (freqs.square().sum(-1) <= 1.0 / resolution ** 2).to(freqs.dtype)


def lowpass(images: torch.Tensor, apix, resolution: float) -> torch.Tensor:
    """Real images (B, box, box) with Fourier components beyond ``resolution`` Angstrom
    set to zero (the same sharp band as ``project(..., lowpass=resolution)``);
    ``apix`` a scalar or (B,) tensor."""
    box = images.shape[-1]
    freqs = ctf_mod.fourier_grid(box, apix, device=images.device)
    f = torch.fft.rfft2(images.float()) * _band(freqs, resolution)
    return torch.fft.irfft2(f, s=(box, box))


def render_volume(centres: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor,
                  box: int, apix: float, cutoff: float = 4.0, chunk: int = 2048) -> torch.Tensor:
    """Sample a Gaussian set on a ``box``^3 grid (z, y, x), voxel ``box//2`` at the origin.

    Each Gaussian is splatted into a local window of +-``cutoff`` widths (separable 1D
    profiles, outer product, one ``index_add_``), so cost grows with N * window^3 rather
    than N * box^3. Differentiable with respect to amplitudes, widths and centres.
    """
    device = centres.device
    dtype = torch.float32
    centres = centres.to(dtype)
    amplitudes = amplitudes.to(dtype)
    widths = widths.to(dtype)
    vol = torch.zeros(box * box * box, device=device, dtype=dtype)
    if centres.shape[0] == 0:
        return vol.view(box, box, box)
    pos = centres / apix + box // 2                                   # voxel coordinates (x,y,z)
    s_vox = widths / apix
    half = int(math.ceil(cutoff * float(s_vox.detach().max()))) if len(s_vox) else 1
    half = max(1, min(half, box // 2))
    offs = torch.arange(-half, half + 1, device=device)
    n = centres.shape[0]
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        p = pos[sl]
        base = torch.round(p).long()                                  # (n, 3)
        idx = base[:, :, None] + offs                                 # (n, 3, w)
        d = idx.to(dtype) - p[:, :, None]
        prof = torch.exp(-0.5 * (d / s_vox[sl, None, None]) ** 2)    # (n, 3, w)
        valid = (idx >= 0) & (idx < box)
        prof = prof * valid
        idx = idx.clamp(0, box - 1)
        gx, gy, gz = prof[:, 0], prof[:, 1], prof[:, 2]
        vals = (amplitudes[sl, None, None, None] * gz[:, :, None, None]
                * gy[:, None, :, None] * gx[:, None, None, :])        # (n, z, y, x)
        flat = (idx[:, 2, :, None, None] * box + idx[:, 1, None, :, None]) * box + idx[:, 0, None, None, :]
        vol.index_add_(0, flat.reshape(-1), vals.reshape(-1))
    return vol.view(box, box, box)
