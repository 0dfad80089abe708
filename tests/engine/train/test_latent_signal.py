"""The latent's signal check (gaussianem.train.latent_signal): difference maps of the latent's
ends, reconstructed from an independent half of each image's noise."""

import numpy as np
import pytest

from gaussianem.analysis.result import load_result
from gaussianem.train import health, latent_signal


def test_band_correlation_of_equal_opposite_and_unrelated_maps():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(24, 24, 24)), rng.normal(size=(24, 24, 24))
    mask = np.ones_like(a)
    assert latent_signal._band_correlation(a, a, mask, 4.0) == pytest.approx(1.0)
    assert latent_signal._band_correlation(a, -2 * a, mask, 4.0) == pytest.approx(-1.0)
    assert abs(latent_signal._band_correlation(a, b, mask, 4.0)) < 0.1        # ~1/sqrt(1,900) apart
    assert latent_signal._band_correlation(a, 0.3 * a + b, mask, 4.0) > 0.15


def _measure(run):
    res = load_result(run)
    images, phys = res.particle_source()
    return latent_signal.measure(res.model, images, phys, res.image_std)


def test_the_motion_of_a_trained_run_is_in_the_images_and_noise_is_not(tiny_trained, noise_run):
    good = _measure(tiny_trained)["difference_correlation"]
    noise = _measure(noise_run)["difference_correlation"]
    print(good, noise)
    assert good["conf"] > 0.4, good              # SNR 1, a hinge: the ends differ reproducibly
    assert abs(noise["conf"]) < latent_signal.SIGNAL_WARNING, noise     # pure-noise images: nothing to reproduce
    assert abs(noise["random"]) < latent_signal.SIGNAL_WARNING and abs(good["random"]) < latent_signal.SIGNAL_WARNING


def test_signal_check_warns_only_for_a_moving_latent_without_signal():
    usage = {"displacement_median": 1.0, "signal": {"difference_correlation": {"conf": 0.02, "comp": 0.5,
                                                                               "random": -0.05}}}
    (c,) = latent_signal.checks(usage, health.NO_MOTION)
    assert c["name"] == "latent_signal" and c["status"] == "warning" and "mostly noise" in c["message"]
    assert "-0.05" in c["message"]
    usage["signal"]["difference_correlation"]["conf"] = 0.8
    assert latent_signal.checks(usage, health.NO_MOTION)[0]["status"] == "healthy"
    still = {"displacement_median": 0.01, "signal": {"difference_correlation": {"conf": 0.02}}}
    assert latent_signal.checks(still, health.NO_MOTION) == []                 # nothing moves: motion_found speaks
    assert latent_signal.checks({"displacement_median": 1.0}, health.NO_MOTION) == []
    unsplit = {"displacement_median": 1.0, "signal": {"difference_correlation": {"all": 0.1}}}
    assert "the latent is mostly noise" in latent_signal.checks(unsplit, health.NO_MOTION)[0]["message"]


def test_a_decoder_that_carries_half_the_motion_is_asked_for_more_in_3d(tiny_trained):
    res = load_result(tiny_trained)
    images, phys = res.particle_source()
    z = np.asarray(res.z)
    whole = latent_signal.measure(res.model, images, phys, res.image_std, z_train=z)["asked_3d"]
    decode = res.model.decode

    def half_motion(zz, emb=None):                      # the same states, half the displacement
        out = dict(decode(zz, emb))
        out["centres"] = out["centres"] - 0.5 * out["displacement"]
        return out

    res.model.decode = half_motion
    half = latent_signal.measure(res.model, images, phys, res.image_std, z_train=z)["asked_3d"]
    print(whole, half)
    assert whole is not None and 0.5 < whole < 1.6, whole
    assert half > 1.5 * whole, (whole, half)            # linear: 2x; the images are the same


def test_arrival_check_reads_the_3d_ask_only_where_the_latent_holds_signal():
    signal = {"difference_correlation": {"conf": 0.8, "random": 0.0}, "asked_3d": 1.6}
    (c,) = health.arrival_checks({"arrival": {"asked": 1.05}, "signal": signal})
    assert c["status"] == "warning" and c["value"] == 1.6 and "1.60 times the decoder's 3D" in c["message"]
    assert "1.05 times the decoded motion in their images" in c["message"]
    signal["asked_3d"] = 1.1
    assert health.arrival_checks({"arrival": {"asked": 1.05}, "signal": signal})[0]["status"] == "healthy"
    assert health.arrival_checks({"signal": signal})[0]["value"] == 1.1             # no image-space ask
    noisy = {"difference_correlation": {"conf": 0.05}, "asked_3d": 3.0}              # a latent of noise
    assert health.arrival_checks({"arrival": {"asked": 1.05}, "signal": noisy})[0]["status"] == "healthy"
    assert health.arrival_checks({"signal": noisy}) == []
