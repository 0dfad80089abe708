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

On CUDA with Triton the same sum runs as two fused kernels that keep the factors on the
chip (:mod:`gaussianem.physics.render_triton`); ``GAUSSIANEM_FUSED=0`` (or ``fused=False``)
keeps the batched products, the only path on the CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from dataclasses import dataclass

import torch

from gaussianem.physics import ctf as ctf_mod
from gaussianem.physics import render_triton

TWO_PI = 2 * math.pi

_VALUES_KNOWN = contextvars.ContextVar("gaussianem_render_values_known", default=False)


@contextlib.contextmanager
def gradients_only():
    """Inside, :func:`project_fourier` returns zeros in place of the projections' values
    (none of the forward's work) with its exact backward. For a caller that already knows
    the values (cached) and differentiates a function linear in the projections, such as
    ``<project(...), r>`` with ``r`` fixed: what flows back does not depend on the values."""
    token = _VALUES_KNOWN.set(True)
    try:
        yield
    finally:
        _VALUES_KNOWN.reset(token)


def _freqs_1d(box: int, device, dtype):
    ky = torch.fft.fftfreq(box, device=device, dtype=dtype)      # rows (y), cycles/pixel
    kx = torch.fft.rfftfreq(box, device=device, dtype=dtype)     # columns (x)
    return kx, ky


def use_fused(device, fused: bool | None = None) -> bool:
    """Whether projections on ``device`` use the fused kernels: ``fused`` if given, else on
    CUDA with Triton installed unless ``GAUSSIANEM_FUSED=0``."""
    if fused is not None:
        return bool(fused)
    return (torch.device(device).type == "cuda" and render_triton.AVAILABLE
            and os.environ.get("GAUSSIANEM_FUSED", "1") != "0")


def project_fourier(centres: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor,
                    rotations: torch.Tensor, shifts: torch.Tensor, box: int, apix,
                    chunk: int | None = None, fused: bool | None = None) -> torch.Tensor:
    """Fourier transforms (``rfft2`` layout) of projections of Gaussian sets.

    centres: (N, 3) or (B, N, 3) Angstrom; amplitudes, widths: (N,) or (B, N);
    rotations: (B, 3, 3) RELION matrices; shifts: (B, 2) RELION origins (Angstrom);
    apix: float or (B,) tensor. Returns complex64 (B, box, box//2+1), equal to
    ``torch.fft.rfft2`` of the real-space projection image (centre at pixel box//2).
    Work is chunked over Gaussians to bound memory (B x chunk x box per factor; default
    chunk 4096 on CUDA, 512 on CPU, where cache-sized pieces run ~3x faster). Always
    computed in float32/complex64, also inside an autocast region: positions in bf16 would
    be off by a large fraction of a pixel. ``fused``: the fused kernels (:func:`use_fused`;
    they need Triton, and a CUDA device outside Triton's interpreter).
    """
    if chunk is None:
        chunk = 4096 if rotations.device.type == "cuda" else 512
    with torch.autocast(rotations.device.type, enabled=False):
        return _project_fourier(centres.float(), amplitudes.float(), widths.float(), rotations.float(),
                                shifts.float(), box, apix, chunk, use_fused(rotations.device, fused))


def _project_fourier(centres, amplitudes, widths, rotations, shifts, box, apix, chunk, fused=False):
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
    if fused:
        return render_triton.FusedSum.apply(xy[..., 0].contiguous(), xy[..., 1].contiguous(), s_px.contiguous(),
                                            w.contiguous(), box, not _VALUES_KNOWN.get())
    return _SeparableSum.apply(xy[..., 0].contiguous(), xy[..., 1].contiguous(), s_px.contiguous(),
                               w.contiguous(), kx, ky, chunk)


def _factors(px, py, s, kx, ky):
    """Each Gaussian's separable factors, without its weight: (B, n, W) along x and
    (B, n, H) along y, envelope exp(-2 pi^2 s^2 k^2) and phase exp(-2 pi i p k)."""
    c = (-2 * math.pi ** 2) * (s * s)[..., None]
    fx = torch.polar(torch.exp(c * (kx * kx)), (-TWO_PI * px)[..., None] * kx)
    fy = torch.polar(torch.exp(c * (ky * ky)), (-TWO_PI * py)[..., None] * ky)
    return fx, fy


class _SeparableSum(torch.autograd.Function):
    """F[b] = sum_n w[b, n] fy[b, n]^T fx[b, n] (a batched complex matrix product, chunked
    over Gaussians), with an analytic backward that recomputes the factors chunk by chunk
    instead of keeping them: nothing of size B x N x box is held between the passes, and
    the backward is a few fused passes instead of autograd's chain through exp and polar.

    With U = conj(G) fx^T and V = fy^T conj(G) (G: the gradient of the output), and
    RA = fy U, RB = fx V, the gradients are dw = Re sum RB, dpy = 2 pi w sum ky Im RA,
    dpx = 2 pi w sum kx Im RB, ds = -4 pi^2 s w (sum ky^2 Re RA + sum kx^2 Re RB)."""

    @staticmethod
    def forward(ctx, px, py, s, w, kx, ky, chunk):
        ctx.save_for_backward(px, py, s, w, kx, ky)
        ctx.chunk = chunk
        B, N = px.shape
        out = torch.zeros(B, len(ky), len(kx), dtype=torch.complex64, device=px.device)
        if _VALUES_KNOWN.get():
            return out
        for start in range(0, N, chunk):
            sl = slice(start, min(N, start + chunk))
            fx, fy = _factors(px[:, sl], py[:, sl], s[:, sl], kx, ky)
            fx.mul_(w[:, sl, None])
            out.baddbmm_(fy.transpose(1, 2), fx)                          # (B, H, W)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        px, py, s, w, kx, ky = ctx.saved_tensors
        B, N = px.shape
        gc = grad.conj().resolve_conj()                                   # (B, H, W)
        # reductions over the frequency axis as one product each with view_as_real's layout
        # (rows alternate real, imaginary): [ky^2 Re, ky Im] and [kx^2 Re, kx Im, Re]
        ma = kx.new_zeros(2 * len(ky), 2)
        ma[0::2, 0], ma[1::2, 1] = ky * ky, ky
        mb = kx.new_zeros(2 * len(kx), 3)
        mb[0::2, 0], mb[1::2, 1], mb[0::2, 2] = kx * kx, kx, 1.0
        sums_a = torch.empty(B, N, 2, device=px.device)                  # sum ky^2 Re RA, ky Im RA
        sums_b = torch.empty(B, N, 3, device=px.device)                  # kx^2 Re RB, kx Im RB, Re RB
        for start in range(0, N, ctx.chunk):
            sl = slice(start, min(N, start + ctx.chunk))
            fx, fy = _factors(px[:, sl], py[:, sl], s[:, sl], kx, ky)
            ra = torch.bmm(fx, gc.transpose(1, 2)).mul_(fy)               # (B, n, H)
            rb = torch.bmm(fy, gc).mul_(fx)                               # (B, n, W)
            sums_a[:, sl] = torch.view_as_real(ra).flatten(-2) @ ma
            sums_b[:, sl] = torch.view_as_real(rb).flatten(-2) @ mb
        dpx = TWO_PI * w * sums_b[..., 1]
        dpy = TWO_PI * w * sums_a[..., 1]
        ds = (-4 * math.pi ** 2) * s * w * (sums_a[..., 0] + sums_b[..., 0])
        return dpx, dpy, ds, sums_b[..., 2], None, None, None


def project(centres, amplitudes, widths, rotations, shifts, box: int, apix,
            ctf_params: torch.Tensor | None = None, real_space: bool = True,
            chunk: int | None = None, lowpass: float | None = None, fused: bool | None = None) -> torch.Tensor:
    """Projections of Gaussians for a batch of poses, multiplied by each particle's CTF.

    ctf_params: (B, 9) (or (B, 8): see ctf.evaluate) from :meth:`gaussianem.physics.ctf.CTFParams.as_tensor` or None.
    lowpass: a resolution in Angstrom; Fourier components beyond it are set to zero.
    fused: as in :func:`project_fourier`. Returns real images (B, box, box) when ``real_space`` else their rfft2 (complex).
    """
    f = project_fourier(centres, amplitudes, widths, rotations, shifts, box, apix, chunk, fused)
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


#: The most window voxels (Gaussians x window depth x window^2) :func:`render_volume` holds
#: at once: about 12 bytes each (value and flat index), ~200 MB for 2^24, whatever the
#: widths and the box.
VOLUME_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class VolumePiece:
    """One step of :func:`render_volume`: Gaussians ``index`` (all with the same window
    half-width ``half`` voxels in x and y), rendered over window offsets ``z0..z1`` in z."""
    index: torch.Tensor
    half: int
    z0: int
    z1: int

    @property
    def elements(self) -> int:
        """Window voxels this piece holds at once."""
        return len(self.index) * (self.z1 - self.z0 + 1) * (2 * self.half + 1) ** 2


def window_halves(widths: torch.Tensor, box: int, apix: float, cutoff: float = 4.0) -> torch.Tensor:
    """(N,) long: each Gaussian's window half-width in voxels, ``ceil(cutoff * width / apix)``
    within [1, box // 2] (a non-finite width gets the largest window)."""
    s_vox = widths.detach().to(torch.float32) / apix
    h = torch.ceil(cutoff * s_vox.double()).nan_to_num(nan=math.inf)
    return h.clamp(1, max(1, box // 2)).long()


def volume_plan(widths: torch.Tensor, box: int, apix: float, cutoff: float = 4.0, chunk: int = 2048,
                budget: int | None = None) -> list[VolumePiece]:
    """How :func:`render_volume` splits its work: Gaussians grouped by window size (each
    keeps its own window), at most ``chunk`` per piece and at most ``budget`` window voxels
    (default :data:`VOLUME_ELEMENTS`) per piece; a window larger than the budget on its own
    is cut into slabs along z. Only a single window plane over the budget (a box over
    ~4,000 voxels at the default) can exceed it."""
    budget = int(budget or VOLUME_ELEMENTS)
    if widths.shape[0] == 0:
        return []
    halves, order = torch.sort(window_halves(widths, box, apix, cutoff), stable=True)
    values, counts = torch.unique_consecutive(halves.cpu(), return_counts=True)
    plan, start = [], 0
    for h, count in zip(values.tolist(), counts.tolist()):
        w = 2 * h + 1
        if w ** 3 <= budget:
            per = max(1, min(int(chunk), budget // w ** 3))
            plan += [VolumePiece(order[i:min(start + count, i + per)], h, -h, h)
                     for i in range(start, start + count, per)]
        else:
            slab = max(1, budget // w ** 2)
            plan += [VolumePiece(order[i:i + 1], h, z, min(h, z + slab - 1))
                     for i in range(start, start + count) for z in range(-h, h + 1, slab)]
        start += count
    return plan


def _axis(p: torch.Tensor, s: torch.Tensor, offs: torch.Tensor, box: int):
    """1D profiles (n, w) about the voxel nearest each position ``p`` (n,) and their
    voxel indices (clamped; out-of-box entries of the profile are zero)."""
    idx = torch.round(p).long()[:, None] + offs
    prof = torch.exp(-0.5 * ((idx.to(p.dtype) - p[:, None]) / s[:, None]) ** 2)
    prof = prof * ((idx >= 0) & (idx < box))
    return prof, idx.clamp(0, box - 1)


def render_volume(centres: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor,
                  box: int, apix: float, cutoff: float = 4.0, chunk: int = 2048,
                  budget: int | None = None) -> torch.Tensor:
    """Sample a Gaussian set on a ``box``^3 grid (z, y, x), voxel ``box//2`` at the origin.

    Each Gaussian is splatted into its own local window of +-``cutoff`` widths (separable
    1D profiles, outer product, ``index_add_``), so cost grows with the sum of the
    windows' volumes rather than N * box^3. Work goes in the pieces of :func:`volume_plan`:
    Gaussians grouped by window size, at most ``budget`` window voxels at a time (default
    :data:`VOLUME_ELEMENTS`), so one wide Gaussian costs its own window and no more memory
    than the budget. Differentiable with respect to amplitudes, widths and centres (the
    autograd graph keeps each piece's voxel indices until the backward pass).
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
    for piece in volume_plan(widths, box, apix, cutoff, chunk, budget):
        sl, h = piece.index, piece.half
        p, s = pos[sl], s_vox[sl]
        offs = torch.arange(-h, h + 1, device=device)
        gx, ix = _axis(p[:, 0], s, offs, box)                         # (n, w)
        gy, iy = _axis(p[:, 1], s, offs, box)
        gz, iz = _axis(p[:, 2], s, torch.arange(piece.z0, piece.z1 + 1, device=device), box)
        vals = (amplitudes[sl, None, None, None] * gz[:, :, None, None]
                * gy[:, None, :, None] * gx[:, None, None, :])        # (n, z, y, x)
        flat = (iz[:, :, None, None] * box + iy[:, None, :, None]) * box + ix[:, None, None, :]
        vol.index_add_(0, flat.reshape(-1), vals.reshape(-1))
    return vol.view(box, box, box)
