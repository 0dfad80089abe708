"""The Gaussian renderer against independent computations: a voxel volume projected by
the Fourier-slice theorem, direct evaluation on a grid, and geometry by hand."""

import numpy as np
import pytest
import torch

from gaussianem.physics import ctf, fourier_slice, poses, render


@pytest.fixture(scope="module")
def blobs():
    g = torch.Generator().manual_seed(0)
    n = 60
    c = torch.randn(n, 3, generator=g) * 12
    a = torch.rand(n, generator=g) + 0.5
    w = torch.rand(n, generator=g) * 1.5 + 2.5
    return c, a, w


def corr(x, y):
    return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])


def test_projection_matches_fourier_slice_of_voxel_volume(blobs):
    c, a, w = blobs
    box, apix = 48, 2.0
    vol = render.render_volume(c, a, w, box, apix)
    R = torch.from_numpy(poses.euler_to_matrix([0, 37, -110, 250], [0, 64, 132, 17],
                                               [0, -20, 75, 300])).float()
    sh = torch.tensor([[0.0, 0.0], [3.5, -6.0], [-7.5, 2.2], [10.0, 4.0]])
    params = ctf.CTFParams.constant(4, defocus_u=[9000, 12000, 15000, 20000][0],
                                    defocus_v=8000, defocus_angle=30).as_tensor()
    for cp in (None, params):
        ours = render.project(c, a, w, R, sh, box, apix, ctf_params=cp)
        ref = fourier_slice.project_volume(vol, R, sh, apix, ctf_params=cp)
        for i in range(4):
            assert corr(ours[i], ref[i]) > 0.99
        # same scale (sum of voxel values along z), within interpolation error
        assert float(ours.std() / ref.std()) == pytest.approx(1.0, abs=0.06)


def test_wrong_conventions_would_be_caught(blobs):
    """The check above is sensitive: the transposed rotation or a flipped shift fails it."""
    c, a, w = blobs
    box, apix = 48, 2.0
    vol = render.render_volume(c, a, w, box, apix)
    R = torch.from_numpy(poses.euler_to_matrix([37], [64], [-20])).float()
    sh = torch.tensor([[6.0, -4.0]])
    ref = fourier_slice.project_volume(vol, R, sh, apix)
    assert corr(render.project(c, a, w, R.transpose(1, 2), sh, box, apix), ref) < 0.9
    assert corr(render.project(c, a, w, R, -sh, box, apix), ref) < 0.9


def test_single_gaussian_lands_where_relion_puts_it():
    box, apix = 64, 1.5
    mu = torch.tensor([[12.0, -9.0, 5.0]])
    A = poses.euler_to_matrix(30, 50, 70)
    origin = np.array([4.5, -3.0])
    img = render.project(mu, torch.ones(1), torch.ones(1) * 2.0, torch.from_numpy(A[None]).float(),
                         torch.from_numpy(origin[None]).float(), box, apix)[0].numpy()
    # expected: (A mu)_xy - origin, in pixels from the centre pixel box//2
    xy = (A @ mu[0].numpy())[:2] - origin
    ex, ey = xy / apix + box // 2
    iy, ix = np.unravel_index(img.argmax(), img.shape)
    assert abs(ix - ex) <= 0.5 and abs(iy - ey) <= 0.5
    # sub-pixel: the intensity centroid matches to a small fraction of a pixel
    yy, xx = np.mgrid[:box, :box]
    assert (img * xx).sum() / img.sum() == pytest.approx(ex, abs=0.05)
    assert (img * yy).sum() / img.sum() == pytest.approx(ey, abs=0.05)


def test_projection_integral_is_line_integral_over_voxels():
    box, apix, s, amp = 64, 1.5, 3.0, 2.0
    img = render.project(torch.zeros(1, 3), torch.tensor([amp]), torch.tensor([s]),
                         torch.eye(3)[None], torch.zeros(1, 2), box, apix)[0]
    # sum over the image = total mass in voxel units = amp (2 pi)^{3/2} (s/apix)^3
    assert float(img.sum()) == pytest.approx(amp * (2 * np.pi) ** 1.5 * (s / apix) ** 3, rel=1e-4)


def test_render_volume_matches_direct_evaluation(blobs):
    c, a, w = blobs
    box, apix = 40, 2.0
    vol = render.render_volume(c, a, w, box, apix, cutoff=6.0).numpy()
    zz, yy, xx = np.meshgrid(*(np.arange(box) - box // 2,) * 3, indexing="ij")
    pts = np.stack([xx, yy, zz], -1) * apix
    d2 = ((pts[..., None, :] - c.numpy()) ** 2).sum(-1)
    direct = (a.numpy() * np.exp(-d2 / (2 * w.numpy() ** 2))).sum(-1)
    assert np.abs(vol - direct).max() < 1e-3 * direct.max()


def test_batched_per_particle_gaussians_equal_separate_renders(blobs):
    c, a, w = blobs
    R = torch.from_numpy(poses.random_rotations(3, np.random.default_rng(0))).float()
    sh = torch.randn(3, 2)
    cb = c[None] + torch.randn(3, *c.shape)          # a different deformation per particle
    batch = render.project(cb, a, w, R, sh, 32, 2.0, chunk=16)
    for i in range(3):
        one = render.project(cb[i], a, w, R[i:i + 1], sh[i:i + 1], 32, 2.0)
        assert torch.allclose(batch[i], one[0], atol=1e-4 * float(one.abs().max()))


def test_per_particle_pixel_size(blobs):
    c, a, w = blobs
    R = torch.eye(3)[None].repeat(2, 1, 1)
    imgs = render.project(c, a, w, R, torch.zeros(2, 2), 32, torch.tensor([2.0, 3.0]))
    ref = render.project(c, a, w, R[:1], torch.zeros(1, 2), 32, 3.0)
    assert torch.allclose(imgs[1], ref[0], atol=1e-5)
    assert not torch.allclose(imgs[0], imgs[1])


def test_lowpass_projection_keeps_exactly_the_band(blobs):
    c, a, w = blobs
    R = torch.from_numpy(poses.euler_to_matrix(np.array([30.0, 0.0]), np.array([50.0, 90.0]),
                                               np.array([-20.0, 10.0]))).float()
    sh = torch.zeros(2, 2)
    apix, box, res = 1.5, 48, 9.0
    full = render.project(c, a, w, R, sh, box, apix)
    band = render.project(c, a, w, R, sh, box, apix, lowpass=res)
    # the same band applied afterwards to the full image
    assert torch.allclose(render.lowpass(full, apix, res), band, atol=1e-5 * float(full.abs().max()))
    # independently: numpy FFT of the band-limited image has no power beyond 1/res ...
    f_full, f_band = np.fft.fft2(full.numpy()), np.fft.fft2(band.numpy())
    k = np.fft.fftfreq(box) / apix
    kk = np.sqrt(k[None, :] ** 2 + k[:, None] ** 2)
    outside, inside = kk > 1 / res + 1e-9, kk <= 1 / res
    assert np.abs(f_band[:, outside]).max() < 1e-4 * np.abs(f_full).max()
    # ... and the full image's coefficients inside it
    assert np.allclose(f_band[:, inside], f_full[:, inside], atol=1e-4 * np.abs(f_full).max())
    assert np.abs(f_full[:, outside]).max() > 1e-2 * np.abs(f_full).max()    # there was something to remove


def test_render_volume_memory_is_bounded_with_one_wide_gaussian(blobs):
    """One very wide Gaussian among narrow ones: every piece of the plan stays within the
    element budget (the wide window cut into z slabs), and the volume is the sum of each
    Gaussian rendered on its own, and a direct evaluation on the grid."""
    c, a, w = blobs
    box, apix, budget = 40, 2.0, 4000
    c = torch.cat([c, torch.zeros(1, 3)])            # the wide one at the origin: its window covers the box
    a = torch.cat([a, torch.tensor([0.7])])
    w = torch.cat([w, torch.tensor([30.0])])
    plan = render.volume_plan(w, box, apix, budget=budget)
    assert all(p.elements <= budget for p in plan)
    assert any(p.z1 - p.z0 < 2 * p.half for p in plan)                  # some window was cut in z
    halves = render.window_halves(w, box, apix)
    assert int(halves[-1]) == box // 2 and int(halves[:-1].max()) <= 8
    # every Gaussian's window offsets -half..half covered exactly once
    cover = {}
    for p in plan:
        for i in p.index.tolist():
            cover.setdefault(i, []).extend(range(p.z0, p.z1 + 1))
    assert sorted(cover) == list(range(len(w)))
    assert all(sorted(cover[i]) == list(range(-int(halves[i]), int(halves[i]) + 1)) for i in cover)

    vol = render.render_volume(c, a, w, box, apix, budget=budget)
    solo = sum(render.render_volume(c[i:i + 1], a[i:i + 1], w[i:i + 1], box, apix) for i in range(len(w)))
    assert torch.allclose(vol, solo, rtol=0, atol=1e-6 * float(solo.abs().max()))
    assert torch.allclose(vol, render.render_volume(c, a, w, box, apix), rtol=0, atol=1e-6 * float(solo.abs().max()))

    dense = render.render_volume(c, a, w, box, apix, cutoff=6.0, budget=budget).numpy()
    zz, yy, xx = np.meshgrid(*(np.arange(box) - box // 2,) * 3, indexing="ij")
    pts = np.stack([xx, yy, zz], -1) * apix
    d2 = ((pts[..., None, :] - c.numpy()) ** 2).sum(-1)
    direct = (a.numpy() * np.exp(-d2 / (2 * w.numpy() ** 2))).sum(-1)
    assert np.abs(dense - direct).max() < 1e-5 * direct.max()


def test_render_volume_gradients_do_not_depend_on_the_pieces(blobs):
    c, a, w = (t.clone() for t in blobs)
    w[0] = 25.0
    weight = torch.rand(32, 32, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for budget in (None, 3000):
        params = [t.clone().requires_grad_(True) for t in (c, a, w)]
        (render.render_volume(*params, 32, 2.0, budget=budget) * weight).sum().backward()
        grads.append([p.grad for p in params])
    for g_full, g_small in zip(*grads):
        assert torch.allclose(g_full, g_small, rtol=1e-5, atol=1e-5 * float(g_full.abs().max()))


def test_default_volume_budget_holds_for_a_large_box():
    """Plan only (nothing rendered): box 256 with one Gaussian as wide as the box."""
    w = torch.full((5000,), 2.0)
    w[7] = 200.0
    plan = render.volume_plan(w, 256, 1.0)
    assert max(p.elements for p in plan) <= render.VOLUME_ELEMENTS
    assert sum(len(p.index) for p in plan if p.z0 == -p.half) == len(w)


def _direct_fourier(c, a, w, rot, sh, box, apix):
    """The projection's transform written out in float64, differentiated by autograd: the
    Fourier transform of each projected Gaussian, summed over all (ky, kx) at once."""
    d = torch.float64
    kx, ky = torch.fft.rfftfreq(box, dtype=d), torch.fft.fftfreq(box, dtype=d)
    xy = (torch.einsum("bij,bnj->bni", rot[:, :2].to(d), c.to(d)) - sh[:, None].to(d)) / apix + box // 2
    s = w.to(d) / apix
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2                                   # (H, W)
    phase = xy[..., 1, None, None] * ky[:, None] + xy[..., 0, None, None] * kx[None, :]
    amp = a.to(d) * (2 * np.pi) ** 1.5 * s ** 3
    terms = amp[..., None, None] * torch.exp(-2 * np.pi ** 2 * s[..., None, None] ** 2 * k2
                                             - 2j * np.pi * phase)
    return terms.sum(1)                                                        # (B, H, W)


def test_gradients_match_a_direct_float64_computation():
    """The renderer's analytic backward (factors recomputed chunk by chunk) against
    autograd through the transform written out per Gaussian and frequency, with negative
    amplitudes among the positive ones (autograd through torch.polar had flipped their sign)."""
    g = torch.Generator().manual_seed(3)
    B, N, box, apix = 3, 150, 24, 1.7
    c = (torch.randn(B, N, 3, generator=g) * 6).requires_grad_(True)
    a = (torch.rand(B, N, generator=g) * 2 - 0.5).requires_grad_(True)
    w = (torch.rand(B, N, generator=g) + 1.2).requires_grad_(True)
    rot = torch.from_numpy(poses.random_rotations(B, np.random.default_rng(4)).astype(np.float32))
    sh = torch.randn(B, 2, generator=g)
    target = torch.randn(B, box, box // 2 + 1, dtype=torch.complex128, generator=g)

    def loss(f):
        return (f * target.to(f.dtype)).real.sum() + 1e-3 * f.abs().square().sum()
    f = render.project_fourier(c, a, w, rot, sh, box, apix, chunk=64)          # 3 chunks, one partial
    ref = _direct_fourier(c, a, w, rot, sh, box, apix)
    assert float((f.detach() - ref.detach()).abs().max() / ref.detach().abs().max()) < 1e-5
    got = torch.autograd.grad(loss(f), (c, a, w))
    want = torch.autograd.grad(loss(ref), (c, a, w))
    for name, x, y in zip(("centres", "amplitudes", "widths"), got, want):
        err = float((x - y).abs().max() / y.abs().max())
        assert err < 1e-4, f"{name}: relative error {err:.2e}"
