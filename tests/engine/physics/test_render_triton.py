"""The fused Triton renderer (physics/render_triton.py) on the CPU, run by Triton's
interpreter (``TRITON_INTERPRET=1``): its values and gradients against the torch renderer
and a float64 computation written out per Gaussian and frequency, with negative
amplitudes, odd boxes and Gaussian counts that leave partial blocks. Skipped without
Triton. On a GPU, tests/engine/test_cuda.py compares the compiled kernels the same way.

Triton reads the variable when it is imported (its own library functions are kernels
too), so :func:`test_kernels_under_triton_interpreter` runs the other tests of this file
in a process started with it, with Triton from ``.venv/triton`` (where ``make setup`` puts
it, outside .venv's site-packages: torch imports an installed Triton by itself, and
Triton's LLVM crashes a process that has loaded ChimeraX's, as this one may have); in
this process they are skipped."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussianem.physics import poses, render, render_triton

TRITON_DIR = Path(__file__).resolve().parents[3] / ".venv" / "triton"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
in_interpreter = pytest.mark.skipif(not (INTERPRETED and render_triton.AVAILABLE),
                                    reason="run under TRITON_INTERPRET=1 by test_kernels_under_triton_interpreter")


def test_kernels_under_triton_interpreter():
    if INTERPRETED:
        pytest.skip("this is the interpreter's process")
    if not (TRITON_DIR / "triton").is_dir() and not render_triton.AVAILABLE:
        pytest.skip(f"Triton is not installed (make setup puts it in {TRITON_DIR})")
    path = os.pathsep.join(p for p in (str(TRITON_DIR), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=path)
    p = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-rs"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0 and " passed" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]
    assert "skipped" not in p.stdout.splitlines()[-1].replace("1 skipped", ""), p.stdout[-2000:]


@pytest.fixture(scope="module")
def interpreted():
    return render_triton


def _inputs(B, N, box, seed):
    """Pixel positions over and beyond the box, widths 0.6-2.6 pixels, weights of both signs."""
    g = torch.Generator().manual_seed(seed)
    px = torch.rand(B, N, generator=g) * 1.4 * box - 0.2 * box
    py = torch.rand(B, N, generator=g) * 1.4 * box - 0.2 * box
    s = torch.rand(B, N, generator=g) * 2 + 0.6
    w = torch.randn(B, N, generator=g) * 3
    w[:, ::5] = -w[:, ::5].abs()                                   # negative amplitudes throughout
    return [t.requires_grad_(True) for t in (px, py, s, w)]


def _direct64(px, py, s, w, box):
    """The sum in float64, term by term (autograd gives its gradients)."""
    kx, ky = render._freqs_1d(box, "cpu", torch.float64)
    px, py, s, w = (t.double() for t in (px, py, s, w))
    c = (-2 * math.pi ** 2) * (s * s)[..., None]
    fx = torch.exp(c * kx ** 2) * torch.exp(-2j * math.pi * px[..., None] * kx)          # (B, N, W)
    fy = torch.exp(c * ky ** 2) * torch.exp(-2j * math.pi * py[..., None] * ky)          # (B, N, H)
    return torch.einsum("bn,bny,bnx->byx", w.to(torch.complex128), fy, fx)


def _rel(x, y) -> float:
    return float((x.detach().double() - y.detach().double()).abs().max() / y.detach().double().abs().max())


@in_interpreter
@pytest.mark.parametrize("B,N,box", [(2, 70, 21), (1, 33, 16), (2, 40, 15), (1, 40, 67)],
                         ids=["odd21", "even16", "odd15", "odd67_several_tiles"])
def test_fused_sum_values_and_gradients(interpreted, B, N, box):
    px, py, s, w = _inputs(B, N, box, seed=box)
    kx, ky = render._freqs_1d(box, "cpu", torch.float32)
    fused = interpreted.FusedSum.apply(px, py, s, w, box)
    torch_sum = render._SeparableSum.apply(px, py, s, w, kx, ky, 512)
    ref = _direct64(px, py, s, w, box)
    assert fused.dtype == torch.complex64 and fused.shape == (B, box, box // 2 + 1)
    assert _rel(fused, ref) < 2e-6
    assert _rel(fused, torch_sum) < 1e-5                     # float32 rounding of both
    target = torch.randn(ref.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))

    def loss(f):
        return (f * target.to(f.dtype)).real.sum() + 1e-3 * f.abs().square().sum()
    got = torch.autograd.grad(loss(fused), (px, py, s, w))
    via_torch = torch.autograd.grad(loss(torch_sum), (px, py, s, w))
    want = torch.autograd.grad(loss(ref), (px, py, s, w))
    for name, a, b, c in zip(("px", "py", "s", "w"), got, via_torch, want):
        # float32 sums in another order than the torch renderer's: both within ~1e-5 of float64
        # (box 67: the fused 1.4e-5 on s, torch 1.0e-5 on px), test_render.py allows 1e-4
        assert _rel(a, c) < 5e-5, f"{name}: {_rel(a, c):.2e} from float64"
        assert _rel(a, b) < 5e-5, f"{name}: {_rel(a, b):.2e} from the torch renderer"


@in_interpreter
def test_projection_through_the_fused_path():
    """render.project with fused=True (CTF, pose, shift, per-particle pixel size) gives the
    torch path's images and gradients; gradients_only gives zeros and the same gradients."""
    g = torch.Generator().manual_seed(5)
    B, N, box = 2, 45, 17
    c = (torch.randn(N, 3, generator=g) * 5).requires_grad_(True)
    a = (torch.rand(N, generator=g) * 2 - 0.5).requires_grad_(True)
    wd = (torch.rand(N, generator=g) + 1.5).requires_grad_(True)
    rot = torch.from_numpy(poses.random_rotations(B, np.random.default_rng(6)).astype(np.float32))
    sh = torch.randn(B, 2, generator=g)
    apix = torch.tensor([1.3, 1.6])
    from gaussianem.physics.ctf import CTFParams
    ctf = CTFParams.random(B, np.random.default_rng(7)).as_tensor()
    weight = torch.randn(B, box, box, generator=g)
    out = {}
    for fused in (False, True):
        img = render.project(c, a, wd, rot, sh, box, apix, ctf_params=ctf, fused=fused)
        out[fused] = (img.detach(), torch.autograd.grad((img * weight).sum(), (c, a, wd)))
        with render.gradients_only():
            zero = render.project(c, a, wd, rot, sh, box, apix, ctf_params=ctf, fused=fused)
        assert float(zero.detach().abs().max()) == 0.0
        for x, y in zip(torch.autograd.grad((zero * weight).sum(), (c, a, wd)), out[fused][1]):
            assert torch.equal(x, y)
    assert _rel(out[True][0], out[False][0]) < 2e-6
    for x, y in zip(out[True][1], out[False][1]):
        assert _rel(x, y) < 1e-5


def test_fused_path_is_chosen_on_cuda_only_and_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("GAUSSIANEM_FUSED", raising=False)
    assert not render.use_fused("cpu")
    assert render.use_fused("cpu", fused=True) and not render.use_fused("cuda", fused=False)
    assert render.use_fused("cuda") == render_triton.AVAILABLE
    monkeypatch.setenv("GAUSSIANEM_FUSED", "0")
    assert not render.use_fused("cuda")
