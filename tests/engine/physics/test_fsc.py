"""Masked FSC corrected by phase randomisation (physics.fsc.corrected_masked_fsc)."""

from __future__ import annotations

import numpy as np

from gaussianem.physics.fsc import corrected_masked_fsc, fsc, phase_randomised


def _lowpass(vol, shell):
    f = np.fft.fftn(vol)
    k = np.fft.fftfreq(vol.shape[0]) * vol.shape[0]
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    return np.real(np.fft.ifftn(f * (r < shell))).astype(np.float32)


def test_a_sharp_mask_inflates_and_the_correction_takes_it_out():
    rng = np.random.default_rng(0)
    D = 48
    signal = _lowpass(rng.normal(size=(D,) * 3), 8) * 10            # no signal beyond shell 8
    h1 = signal + rng.normal(size=signal.shape).astype(np.float32)
    h2 = signal + rng.normal(size=signal.shape).astype(np.float32)
    c = np.arange(D) - D // 2
    mask = ((c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2) < 10 ** 2).astype(np.float32)
    _, masked = fsc(h1, h2, mask=mask)
    _, corrected, start = corrected_masked_fsc(h1, h2, mask)
    beyond = slice(12, D // 2)                                        # shells 13 .. Nyquist: no signal
    assert masked[beyond].mean() > 0.1                                # the mask's own correlation
    assert abs(corrected[beyond].mean()) < 0.05 and start <= 12
    assert np.allclose(corrected[: start - 1], masked[: start - 1])   # untouched below


def test_phase_randomisation_keeps_amplitudes():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(24,) * 3).astype(np.float32)
    r = phase_randomised(v, 5)
    assert np.allclose(np.abs(np.fft.rfftn(r)), np.abs(np.fft.rfftn(v)), rtol=1e-3, atol=1e-3)
    _, f = fsc(v, r)
    assert f[:3].min() > 0.999 and abs(f[8:].mean()) < 0.1
