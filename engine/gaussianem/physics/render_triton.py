"""The renderer's separable sum as two fused Triton kernels, for CUDA.

``F[b, y, x] = sum_n w[b,n] fy[b,n,y] fx[b,n,x]`` with ``fx = exp(-2 pi^2 s^2 kx^2 - 2 pi i px kx)``
(and ``fy`` likewise in ky): what :class:`gaussianem.physics.render._SeparableSum`
computes, with the same analytic backward. That one builds each chunk's factors as
(B, n, box) tensors in global memory and multiplies them with batched matrix products:
every factor is written once and read once or twice per pass. Here the factors are made
where they are used and never leave the chip (as gsplat's tile rasteriser and KeOps'
reductions keep their per-pair terms in registers):

* forward: one program per (image, tile of ``BLOCK_Y`` x ``BLOCK_X`` frequencies) loops
  over the Gaussians ``BLOCK_N`` at a time, evaluates their factors for its rows and
  columns in registers and accumulates ``fy^T (w fx)`` with ``tl.dot`` (real and
  imaginary parts: four products);
* backward: one program per (image, ``BLOCK_N`` Gaussians) loops over the tiles of the
  output's gradient ``G`` (read from global memory, B x H x W, shared by all programs of
  an image through L2), forms ``U = fy conj(G)`` and ``V = fx conj(G)^T`` with ``tl.dot``
  and reduces ``fx U`` and ``fy V`` over the frequencies to the five sums each Gaussian
  needs (``_SeparableSum``'s docstring gives them), written once per Gaussian.

Global memory holds only the inputs (4 floats per Gaussian and image), the output or
its gradient and the 4 gradients per Gaussian: docs/benchmarks.md ("Roofline") counts
FLOPs and bytes. Products follow torch's TF32 setting
(``torch.backends.cuda.matmul.allow_tf32``), as the batched products they replace do.

Triton is optional: without it :data:`AVAILABLE` is False and the renderer keeps its
torch path. It is imported, and the kernels made, only when they first run (:func:`_jit`),
so that importing the engine does not load it. (That alone does not keep it out of a
process: torch imports an installed Triton itself, e.g. when an optimizer is made, and
Triton's LLVM crashes a process that has loaded ChimeraX's offscreen renderer; ``make
setup`` therefore keeps it out of .venv's site-packages, in ``.venv/triton``.) Tests run
these kernels on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import importlib.util
import math

import torch

AVAILABLE = importlib.util.find_spec("triton") is not None
TWO_PI = 2 * math.pi
#: (BLOCK_N, BLOCK_Y, BLOCK_X) of the two kernels: tile sizes of tl.dot (each at least 16)
FORWARD_BLOCKS = (32, 64, 32)
BACKWARD_BLOCKS = (32, 32, 32)
triton = tl = None                     # Triton, once _jit has run


def _jit() -> None:
    """Import Triton and turn the kernels below (plain functions until then) into Triton
    kernels, once: they find one another and ``tl`` among this module's globals."""
    global triton, tl, _freqs, _factor, _forward_kernel, _backward_kernel
    if triton is not None:
        return
    import triton as triton_module
    import triton.language as language
    tl = language
    _freqs, _factor = triton_module.jit(_freqs), triton_module.jit(_factor)
    _forward_kernel, _backward_kernel = triton_module.jit(_forward_kernel), triton_module.jit(_backward_kernel)
    triton = triton_module


# The kernels' source, in Triton's language: plain functions until _jit makes them kernels.
def _freqs(i, n):
    """fftfreq(n)[i] (cycles per pixel) for rows; rfftfreq is i / n."""
    return tl.where(i < (n + 1) // 2, i, i - n).to(tl.float32) / n


def _factor(c, p, k):
    """exp(c k^2) (cos, sin)(-2 pi p k) for Gaussians (rows) and frequencies (columns)."""
    env = tl.exp(c[:, None] * (k * k)[None, :])
    ang = (-6.283185307179586 * p)[:, None] * k[None, :]
    return env * tl.cos(ang), env * tl.sin(ang)


def _forward_kernel(px_ptr, py_ptr, s_ptr, w_ptr, out_ptr, N, H, W,
                    BLOCK_N: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
                    PRECISION: tl.constexpr):
    b = tl.program_id(0)
    ys = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    xs = tl.program_id(2) * BLOCK_X + tl.arange(0, BLOCK_X)
    ky = _freqs(ys, H)
    kx = xs.to(tl.float32) / H
    re = tl.zeros((BLOCK_Y, BLOCK_X), dtype=tl.float32)
    im = tl.zeros((BLOCK_Y, BLOCK_X), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        m = ns < N
        px = tl.load(px_ptr + b * N + ns, mask=m, other=0.0)
        py = tl.load(py_ptr + b * N + ns, mask=m, other=0.0)
        s = tl.load(s_ptr + b * N + ns, mask=m, other=0.0)
        w = tl.load(w_ptr + b * N + ns, mask=m, other=0.0)          # 0: padding adds nothing
        c = -19.739208802178716 * (s * s)                             # -2 pi^2 s^2
        fxr, fxi = _factor(c, px, kx)
        fxr, fxi = fxr * w[:, None], fxi * w[:, None]
        fyr, fyi = _factor(c, py, ky)
        fyr, fyi = tl.trans(fyr), tl.trans(fyi)                       # (BLOCK_Y, BLOCK_N)
        re += tl.dot(fyr, fxr, input_precision=PRECISION) - tl.dot(fyi, fxi, input_precision=PRECISION)
        im += tl.dot(fyr, fxi, input_precision=PRECISION) + tl.dot(fyi, fxr, input_precision=PRECISION)
    at = ((b * H + ys[:, None]) * W + xs[None, :]) * 2
    m = (ys[:, None] < H) & (xs[None, :] < W)
    tl.store(out_ptr + at, re, mask=m)
    tl.store(out_ptr + at + 1, im, mask=m)


def _backward_kernel(px_ptr, py_ptr, s_ptr, grad_ptr, sums_ptr, N, H, W,
                     BLOCK_N: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
                     PRECISION: tl.constexpr):
    b = tl.program_id(0)
    ns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = ns < N
    px = tl.load(px_ptr + b * N + ns, mask=mn, other=0.0)
    py = tl.load(py_ptr + b * N + ns, mask=mn, other=0.0)
    s = tl.load(s_ptr + b * N + ns, mask=mn, other=0.0)
    c = -19.739208802178716 * (s * s)
    re_b = tl.zeros((BLOCK_N,), dtype=tl.float32)       # sum Re RB
    kx_b = tl.zeros((BLOCK_N,), dtype=tl.float32)       # sum kx Im RB
    kx2_b = tl.zeros((BLOCK_N,), dtype=tl.float32)      # sum kx^2 Re RB
    ky_a = tl.zeros((BLOCK_N,), dtype=tl.float32)       # sum ky Im RA
    ky2_a = tl.zeros((BLOCK_N,), dtype=tl.float32)      # sum ky^2 Re RA
    for y0 in range(0, H, BLOCK_Y):
        ys = y0 + tl.arange(0, BLOCK_Y)
        ky = _freqs(ys, H)
        fyr, fyi = _factor(c, py, ky)                                  # (BLOCK_N, BLOCK_Y)
        for x0 in range(0, W, BLOCK_X):
            xs = x0 + tl.arange(0, BLOCK_X)
            kx = xs.to(tl.float32) / H
            fxr, fxi = _factor(c, px, kx)                              # (BLOCK_N, BLOCK_X)
            at = ((b * H + ys[:, None]) * W + xs[None, :]) * 2
            m = (ys[:, None] < H) & (xs[None, :] < W)
            gr = tl.load(grad_ptr + at, mask=m, other=0.0)             # conj(G): gr - i gi
            gi = -tl.load(grad_ptr + at + 1, mask=m, other=0.0)
            # RB = fx (fy conj(G)): (BLOCK_N, BLOCK_X)
            ur = tl.dot(fyr, gr, input_precision=PRECISION) - tl.dot(fyi, gi, input_precision=PRECISION)
            ui = tl.dot(fyr, gi, input_precision=PRECISION) + tl.dot(fyi, gr, input_precision=PRECISION)
            rbr = fxr * ur - fxi * ui
            rbi = fxr * ui + fxi * ur
            re_b += tl.sum(rbr, 1)
            kx_b += tl.sum(rbi * kx[None, :], 1)
            kx2_b += tl.sum(rbr * (kx * kx)[None, :], 1)
            # RA = fy (fx conj(G)^T): (BLOCK_N, BLOCK_Y)
            grt, git = tl.trans(gr), tl.trans(gi)
            vr = tl.dot(fxr, grt, input_precision=PRECISION) - tl.dot(fxi, git, input_precision=PRECISION)
            vi = tl.dot(fxr, git, input_precision=PRECISION) + tl.dot(fxi, grt, input_precision=PRECISION)
            rar = fyr * vr - fyi * vi
            rai = fyr * vi + fyi * vr
            ky_a += tl.sum(rai * ky[None, :], 1)
            ky2_a += tl.sum(rar * (ky * ky)[None, :], 1)
    at = (b * N + ns) * 4
    tl.store(sums_ptr + at, re_b, mask=mn)
    tl.store(sums_ptr + at + 1, kx_b, mask=mn)
    tl.store(sums_ptr + at + 2, ky_a, mask=mn)
    tl.store(sums_ptr + at + 3, kx2_b + ky2_a, mask=mn)


def _precision(device: torch.device) -> str:
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def forward(px, py, s, w, box: int, blocks=FORWARD_BLOCKS) -> torch.Tensor:
    """The separable sum, complex64 (B, box, box//2+1): ``rfft2`` of the projections of
    Gaussians at pixel positions (px, py) (B, N), widths s (pixels) and weights w."""
    _jit()
    B, N = px.shape
    H, W = box, box // 2 + 1
    out = torch.empty(B, H, W, 2, device=px.device, dtype=torch.float32)
    bn, by, bx = blocks
    grid = (B, triton.cdiv(H, by), triton.cdiv(W, bx))
    _forward_kernel[grid](px, py, s, w, out, N, H, W, BLOCK_N=bn, BLOCK_Y=by, BLOCK_X=bx,
                          PRECISION=_precision(px.device))
    return torch.view_as_complex(out)


def backward_sums(px, py, s, grad: torch.Tensor, blocks=BACKWARD_BLOCKS) -> torch.Tensor:
    """(B, N, 4): per Gaussian ``sum Re RB, sum kx Im RB, sum ky Im RA, sum (ky^2 Re RA
    + kx^2 Re RB)`` for the output gradient ``grad`` (complex, B x box x box//2+1)."""
    _jit()
    B, N = px.shape
    H, W = grad.shape[-2:]
    g = torch.view_as_real(grad.resolve_conj().contiguous()).contiguous()
    sums = torch.empty(B, N, 4, device=px.device, dtype=torch.float32)
    bn, by, bx = blocks
    _backward_kernel[(B, triton.cdiv(N, bn))](px, py, s, g, sums, N, H, W, BLOCK_N=bn, BLOCK_Y=by,
                                              BLOCK_X=bx, PRECISION=_precision(px.device))
    return sums


class FusedSum(torch.autograd.Function):
    """``render._SeparableSum`` with the fused kernels: same inputs, output and gradients.
    ``values=False`` returns zeros in place of the output (its backward is unchanged;
    :func:`gaussianem.physics.render.gradients_only`)."""

    @staticmethod
    def forward(ctx, px, py, s, w, box: int, values: bool = True):
        ctx.save_for_backward(px, py, s, w)
        if not values:
            return torch.zeros(px.shape[0], box, box // 2 + 1, dtype=torch.complex64, device=px.device)
        return forward(px, py, s, w, box)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        px, py, s, w = ctx.saved_tensors
        sums = backward_sums(px, py, s, grad)
        dpx = TWO_PI * w * sums[..., 1]
        dpy = TWO_PI * w * sums[..., 2]
        ds = (-4 * math.pi ** 2) * s * w * sums[..., 3]
        return dpx, dpy, ds, sums[..., 0], None, None
