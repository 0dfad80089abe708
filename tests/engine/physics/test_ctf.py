"""The CTF against an independent formula (cryoDRGN's form) and known physical values."""

import numpy as np
import pytest
import torch

from gaussianem.physics import ctf


def ctf_images(params, box, apix, rfft=True):
    """CTF images (B, H, W) of every particle in ``params`` on the training's Fourier grid
    (what the renderer evaluates: ``ctf.evaluate`` on ``ctf.fourier_grid``)."""
    a = torch.from_numpy(np.asarray(apix, dtype=np.float32)) if np.ndim(apix) else apix
    return ctf.evaluate(ctf.fourier_grid(box, a, rfft=rfft), params.as_tensor())


def reference_ctf(kx, ky, dfu, dfv, dfang_deg, kv, cs_mm, w, phase_deg, bfac=0.0):
    """Textbook form, written independently: -sqrt(1-w^2) sin(g) + w cos(g)."""
    volt = kv * 1e3
    lam = 12.2642598 / np.sqrt(volt + 0.978466e-6 * volt ** 2)
    s2 = kx ** 2 + ky ** 2
    ang = np.arctan2(ky, kx)
    df = 0.5 * (dfu + dfv + (dfu - dfv) * np.cos(2 * (ang - np.deg2rad(dfang_deg))))
    gamma = 2 * np.pi * (-0.5 * df * lam * s2 + 0.25 * cs_mm * 1e7 * lam ** 3 * s2 ** 2) - np.deg2rad(phase_deg)
    c = -np.sqrt(1 - w ** 2) * np.sin(gamma) + w * np.cos(gamma)
    return c * np.exp(-bfac / 4 * s2)


def electron_wavelength(kv):
    """Relativistic electron wavelength (Angstrom), from the physical constants (SI, CODATA)."""
    h, m, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = kv * 1e3
    return h / np.sqrt(2 * m * e * v * (1 + e * v / (2 * m * c * c))) * 1e10


def test_wavelength_300kv():
    assert electron_wavelength(300) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength(200) == pytest.approx(0.025079, abs=2e-6)


@pytest.mark.parametrize("params", [
    dict(dfu=15000, dfv=15000, ang=0, kv=300, cs=2.7, w=0.1, ph=0, b=0),
    dict(dfu=21000, dfv=17500, ang=37.5, kv=300, cs=2.7, w=0.07, ph=0, b=0),
    dict(dfu=8000, dfv=7000, ang=-120, kv=200, cs=1.4, w=0.1, ph=90, b=50),
])
def test_ctf_matches_reference_formula(params):
    box, apix = 96, 1.3
    p = ctf.CTFParams.constant(1, defocus_u=params["dfu"], defocus_v=params["dfv"],
                               defocus_angle=params["ang"], voltage=params["kv"], cs=params["cs"],
                               amp_contrast=params["w"], phase_shift=params["ph"], bfactor=params["b"])
    ours = ctf_images(p, box, apix, rfft=False)[0].double().numpy()
    f = ctf.fourier_grid(box, apix, rfft=False).double().numpy()
    ref = reference_ctf(f[..., 0], f[..., 1], params["dfu"], params["dfv"], params["ang"], params["kv"],
                        params["cs"], params["w"], params["ph"], params["b"])
    assert np.abs(ours - ref).max() < 2e-4


def test_ctf_at_zero_frequency_is_amplitude_contrast():
    p = ctf.CTFParams.constant(2, amp_contrast=0.1)
    c = ctf_images(p, 32, 1.0)
    assert c[:, 0, 0].numpy() == pytest.approx([0.1, 0.1], abs=1e-6)


def test_first_zero_of_an_aberration_free_ctf():
    # Cs = 0, w = 0: ctf = sin(pi lambda df s^2), first zero at s^2 = 1 / (lambda df)
    df, apix, box = 20000.0, 1.0, 512
    p = ctf.CTFParams.constant(1, defocus_u=df, defocus_v=df, cs=0.0, amp_contrast=0.0)
    c = ctf_images(p, box, apix)[0, 0].numpy()          # along kx, ky = 0
    kx = np.fft.rfftfreq(box) / apix
    first_zero = kx[np.flatnonzero(np.diff(np.sign(c[1:])) != 0)[0] + 1]
    expected = np.sqrt(1 / (electron_wavelength(300) * df))   # the CTF's own wavelength
    assert abs(first_zero - expected) <= 1 / (box * apix)
    assert c[1] > 0                                           # underfocus: positive at low s


def test_astigmatism_angle_convention():
    """dU lies along the defocus angle: along that direction the CTF equals the
    stigmatic CTF with defocus dU."""
    box, apix = 128, 1.0
    ast = ctf.CTFParams.constant(1, defocus_u=20000, defocus_v=10000, defocus_angle=0.0)
    iso = ctf.CTFParams.constant(1, defocus_u=20000, defocus_v=20000)
    a = ctf_images(ast, box, apix)[0, 0].numpy()           # ky = 0 row: along x
    b = ctf_images(iso, box, apix)[0, 0].numpy()
    assert np.allclose(a, b, atol=1e-5)
    rot = ctf.CTFParams.constant(1, defocus_u=20000, defocus_v=10000, defocus_angle=90.0)
    c = ctf_images(rot, box, apix, rfft=False)[0, :, 0].numpy()   # kx = 0 column: along y
    d = ctf_images(iso, box, apix, rfft=False)[0, :, 0].numpy()
    assert np.allclose(c, d, atol=1e-5)


def test_per_particle_pixel_sizes():
    p = ctf.CTFParams.constant(2)
    c = ctf_images(p, 32, np.array([1.0, 2.0]))
    single = ctf_images(p.subset([1]), 32, 2.0)
    assert torch.allclose(c[1], single[0], atol=1e-6)
    assert not torch.allclose(c[0], c[1])
