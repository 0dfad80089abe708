"""The motion_outliers health check tells junk (a group of particles moved far, apart from
the rest) from a large motion (a continuous tail of particles moved far): it warned that
16% of an independent set without junk, with a 13 A domain closure, moved 'by over 2.98 A
RMS ... junk particles'."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from gaussianem.train import health

from known_decoder import KnownDecoder

OK = {"finite": True, "explained": 1.02, "amplitude_mean": 0.98, "near_bound": 0.0, "displacement_rms": 1.0,
      "kl_per_dim": [3.0], "l2_model": 1, "l2_consensus": 1, "l2_zero": 1.1}


def _quantiles(n):
    return norm.ppf((np.arange(n) + 0.5) / n)


def large_motion(n=256):
    """A continuous, skewed motion: most particles near the consensus, a long tail out to
    ~20 A; 16% move over 3 times the median (lognormal, sigma 1.1)."""
    return np.exp(1.1 * _quantiles(n))


def junk(n=256, fraction=0.1):
    """90% moving about 1 A (sigma 0.5 in log), and a group of 10% at about 6 A."""
    k = int(round(fraction * n))
    return np.concatenate([np.exp(0.5 * _quantiles(n - k)), 6.0 * np.exp(0.15 * _quantiles(k))])


def test_a_continuous_tail_is_no_outlier_group_and_a_separate_one_is():
    far_tail = large_motion()
    assert (far_tail > 3 * np.median(far_tail)).mean() == pytest.approx(0.16, abs=0.01)
    assert not health.separate_group(far_tail, health._far(far_tail))
    assert health.outlier_cut(far_tail) == far_tail.max()               # no particle is an outlier
    exponential = -np.log(1 - (np.arange(256) + 0.5) / 256)             # another continuous tail (12%)
    assert health.outlier_cut(exponential) == exponential.max()
    group = junk()
    assert health.separate_group(group, health._far(group))
    assert health.outlier_cut(group) == pytest.approx(3 * np.median(group))
    assert (group > health.outlier_cut(group)).mean() == pytest.approx(0.11, abs=0.01)
    few = np.r_[np.exp(0.5 * _quantiles(250)), np.full(6, 9.0)]          # 2%: outliers as before, no warning
    assert health.outlier_cut(few) == pytest.approx(3 * np.median(few))


@pytest.mark.parametrize("case", ["large_motion", "junk"])
def test_health_warns_about_junk_but_not_about_a_large_motion(case):
    moved = large_motion() if case == "large_motion" else junk()
    z = np.random.default_rng(0).permutation(moved)[:, None].astype(np.float32)
    usage = health.latent_usage(KnownDecoder(), z)
    assert usage["displacement_median"] == pytest.approx(np.median(moved), rel=1e-4)
    report = health.final_report(OK, usage, [], None, True)
    check = next(c for c in report["checks"] if c["name"] == "motion_outliers")
    if case == "large_motion":
        assert usage["displacement_outliers"] == 0 and usage["displacement_tail"] > 0.15
        assert report["status"] == "healthy" and check["status"] == "healthy"
        assert "continuous tail" in check["message"] and "16%" in check["message"]
    else:
        assert usage["displacement_outliers"] == pytest.approx(0.11, abs=0.01)
        assert report["status"] == "warning" and "group apart" in report["summary"]
        assert "--outliers" in report["summary"]
