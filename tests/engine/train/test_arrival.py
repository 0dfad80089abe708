"""The health check for a motion that did not arrive (gaussianem.train.arrival)."""

import numpy as np

from gaussianem.train import arrival, health


def test_preferred_scale_is_the_parabola_minimum():
    s = np.asarray(arrival.SCALES)
    losses = np.stack([(s - 2.3) ** 2, (s - 0.8) ** 2 + 1, np.abs(s - 10.0)])
    p = arrival._preferred(losses)
    assert abs(p[0] - 2.3) < 0.05 and abs(p[1] - 0.8) < 0.05
    assert p[2] == s[-1]                      # beyond the grid: its last point


def test_arrival_check_warns_when_the_images_ask_for_more_motion():
    held = health.arrival_checks({"arrival": {"asked": 2.0}})
    assert held[0]["name"] == "motion_arrived" and held[0]["status"] == "warning"
    assert "2.00 times the decoded motion" in held[0]["message"]
    assert health.arrival_checks({"arrival": {"asked": 1.07}})[0]["status"] == "healthy"
    assert health.arrival_checks({"arrival": {"asked": None, "reason": "too few"}}) == []
    assert health.arrival_checks({}) == []
    usage = {"displacement_spread": 1.0, "amplitude_spread": 0.1, "particles": 256, "displacement_median": 1.0,
             "displacement_outliers": 0.0, "outlier_threshold": 3.0, "arrival": {"asked": 2.4}}
    last = {"finite": True, "explained": 1.0, "amplitude_mean": 1.0, "near_bound": 0.0}
    report = health.final_report(last, usage, [], None, True)
    assert report["status"] == "warning" and "2.40 times the decoded motion" in report["summary"]
