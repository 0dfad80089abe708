"""Deformed-consensus maps (issue 14 item 3) and ranges from the data (issue 16 item 2),
in a real headless ChimeraX session through real commands.

* ``gaussianem open`` shows the deformed consensus (``Result.volume(z, kind="deformed")``)
  when the run's consensus map file is there, else maps rendered from the Gaussians with
  a one-line note; ``map gaussians|deformed`` on ``open`` sets the session's choice, on
  ``show`` and ``trajectory`` it holds for that call.
* The first state shown is the medoid particle's; default trajectories span the
  particles' 5th-95th percentiles along the PC; ``show pc K value V`` beyond the
  particles' 0.5th-99.5th percentiles warns, naming the range.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from chimerax_fixture import logged, run


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- deformed maps

def test_open_shows_the_medoid_as_the_deformed_consensus(cx, tiny_result):
    res, text = logged(cx, f"gaussianem open {tiny_result}")
    r = res.result
    medoid = r.medoid_index()
    assert res.map_kind == "deformed" and "(deformed consensus)" in text
    assert f"showing the medoid particle {medoid}" in text
    np.testing.assert_array_equal(res.z, r.z[medoid])
    _close(res.volume.full_matrix(), r.volume(res.z, kind="deformed"))
    assert np.abs(r.volume(res.z, kind="deformed") - r.volume(res.z)).max() > 1e-3   # not the Gaussians'
    z = run(cx, "gaussianem show particle 3")                    # later states too
    _close(res.volume.full_matrix(), r.volume(z, kind="deformed"))


def test_map_keyword_per_call_and_for_the_session(cx, tiny_result):
    res = run(cx, f"gaussianem open {tiny_result}")
    r, v = res.result, res.volume
    z, text = logged(cx, "gaussianem show particle 3 map gaussians")          # this call only
    assert "(gaussians map)" in text and res.map_kind == "deformed" and res.volume is v
    _close(v.full_matrix(), r.volume(z, kind="gaussians"))
    run(cx, "gaussianem show particle 3")
    _close(v.full_matrix(), r.volume(z, kind="deformed"))
    series, _ = run(cx, "gaussianem trajectory steps 2 map gaussians")
    _close(series.maps[-1].full_matrix(), r.volume(r.trajectory(steps=2)[-1], kind="gaussians"))
    assert res.map_kind == "deformed"

    res2, text = logged(cx, f"gaussianem open {tiny_result} map gaussians")  # the session's choice
    assert res2.map_kind == "gaussians" and "(rendered from the Gaussians)" in text
    _close(res2.volume.full_matrix(), r.volume(res2.z, kind="gaussians"))
    z = run(cx, "gaussianem show particle 5")
    _close(res2.volume.full_matrix(), r.volume(z, kind="gaussians"))
    run(cx, "gaussianem show particle 5 map deformed")
    _close(res2.volume.full_matrix(), r.volume(z, kind="deformed"))
    series, _ = run(cx, "gaussianem trajectory steps 2")
    _close(series.maps[0].full_matrix(), r.volume(r.trajectory(steps=2)[0], kind="gaussians"))


def test_run_without_its_consensus_map_falls_back_with_a_note(cx, tiny_result, tiny_sim, tmp_path):
    from chimerax.core.errors import UserError
    moved = tmp_path / "run"
    shutil.copytree(tiny_result, moved, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    consensus = tmp_path / "consensus.mrc"
    shutil.copy(tiny_sim / "consensus.mrc", consensus)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["train"]["consensus"] = str(consensus)
    (moved / "config.json").write_text(json.dumps(cfg))
    assert run(cx, f"gaussianem open {moved}").map_kind == "deformed"
    os.remove(consensus)

    res, text = logged(cx, f"gaussianem open {moved}")
    notes = [line for line in text.splitlines() if "is not there" in line]
    assert len(notes) == 1 and str(consensus) in notes[0] and "rendered from the Gaussians" in notes[0]
    assert res.map_kind == "gaussians" and "(rendered from the Gaussians)" in text
    _close(res.volume.full_matrix(), res.result.volume(res.z, kind="gaussians"))
    with pytest.raises(UserError, match="consensus map .* is not there.*map gaussians"):
        run(cx, "gaussianem show particle 1 map deformed")
    with pytest.raises(UserError, match=f"{consensus}.* is not there"):
        run(cx, f"gaussianem open {moved} map deformed")


# ---------------------------------------------------------------------------- ranges

def test_default_trajectory_spans_the_particles_5th_to_95th_percentiles(cx, tiny_result):
    res = run(cx, f"gaussianem open {tiny_result}")
    r = res.result
    (series, _), text = logged(cx, "gaussianem trajectory pc 2 steps 3")
    lo, hi = r.pc_percentiles(2)
    assert f"from {lo:.3g} to {hi:.3g} sd (the particles' 5th to 95th percentiles)" in text
    p = r.pca()
    for m, v in zip((series.maps[0], series.maps[-1]), (lo, hi)):
        _close(m.full_matrix(), r.volume(p.latent(2, v), kind="deformed"))
    (series, _), text = logged(cx, "gaussianem trajectory pc 2 steps 3 range -2,2")   # explicit: as asked
    assert "from -2 to 2 sd," in text
    _close(series.maps[0].full_matrix(), r.volume(p.latent(2, -2.0), kind="deformed"))


def test_show_pc_beyond_the_particles_warns_naming_their_range(cx, tiny_result):
    res = run(cx, f"gaussianem open {tiny_result}")
    lo, hi = res.result.pc_percentiles(1, q=(0.5, 99.5))
    _, text = logged(cx, f"gaussianem show pc 1 value {hi + 1:.2f}")
    warnings = [line for line in text.splitlines() if "outside the particles' range" in line]
    assert len(warnings) == 1 and f"{lo:.2f} to {hi:.2f} sd" in warnings[0]
    assert "0.5th to 99.5th percentiles" in warnings[0]
    _, text = logged(cx, f"gaussianem show pc 1 value {0.5 * hi:.2f}")
    assert "outside the particles' range" not in text
    lo_c, hi_c = res.result.pc_percentiles(1, "conf", q=(0.5, 99.5))
    _, text = logged(cx, f"gaussianem show pc 1 value {lo_c - 1:.2f} latentPart conf")
    assert "along conf PC1 is outside" in text and f"{lo_c:.2f} to {hi_c:.2f} sd" in text


def test_ranges_and_latents_past_the_data_warn_and_absurd_values_are_refused(cx, opened):
    """Issue 29 item 16: a trajectory's range, a movie's and a latent given by value warn
    when they leave the particles' 0.5th-99.5th percentiles; absurd values are errors."""
    from chimerax.core.errors import UserError
    r = opened.result
    lo, hi = r.pc_percentiles(1, q=(0.5, 99.5))
    warned = lambda text: [x for x in text.splitlines() if "outside" in x or "goes past" in x]  # noqa: E731
    assert not warned(logged(cx, "gaussianem trajectory pc 1 steps 2")[1])             # the defaults
    assert not warned(logged(cx, f"gaussianem trajectory pc 1 steps 2 range {lo:.3f},{0.5 * hi:.3f}")[1])
    for rng in (f"{lo - 2:.2f},{hi:.2f}", f"{hi + 3:.2f},{lo - 3:.2f}"):
        w = warned(logged(cx, f"gaussianem trajectory pc 1 steps 2 range {rng}")[1])
        assert len(w) == 1 and "goes past the particles' range" in w[0] and f"{lo:.2f} to {hi:.2f} sd" in w[0]
    w = warned(logged(cx, "gaussianem show z 30,30,30")[1])
    assert len(w) == 1 and "this latent is outside the particles' range" in w[0] and "along PC1" in w[0]
    assert not warned(logged(cx, "gaussianem show z " + ",".join(f"{v:.9g}" for v in r.z[5]))[1])
    for command, match in (("gaussianem show z 1e6,0,0", "this latent is refused"),
                           ("gaussianem show pc 1 value 1e6", "1e\\+06 sd along PC1 is refused"),
                           ("gaussianem trajectory pc 1 range 0,1e6", "range end 1e\\+06 sd along PC1 is refused"),
                           ("gaussianem markers z 0,-1e7,0", "this latent is refused")):
        with pytest.raises(UserError, match=match):
            run(cx, command)
