"""``gaussianem reconstruct`` in a real headless ChimeraX session: the engine's deformable
reconstruction as a job, its map opened when done, and one-line errors for bad input.

Fixtures: ``cx`` (embedded session, models closed after each test) and ``tiny_result``
(tests/conftest.py: a trained result, split latent 2 + 1).
"""

from __future__ import annotations

import json

import pytest

from chimerax_fixture import logged, run


def test_reconstruct_runs_as_a_job_and_opens_the_map(cx, tiny_result, tmp_path):
    from chimerax.map import Volume
    out = tmp_path / "cluster0.mrc"
    job, text = logged(cx, f"gaussianem reconstruct {tiny_result} output {out} cluster 0 k 2 wait true")
    assert job.kind == "reconstruct" and job.state == "done", job.error
    summary = json.loads((tmp_path / "cluster0_fsc.json").read_text())
    assert summary["selection"] == "cluster 0 of k-means with k=2"
    for name in ("cluster0_half1.mrc", "cluster0_rigid.mrc", "cluster0_fsc.png", "cluster0_fsc.txt"):
        assert (tmp_path / name).is_file(), name
    opened = [m for m in cx.models if isinstance(m, Volume) and m.data.path == str(tmp_path / "cluster0_masked.mrc")]
    assert len(opened) == 1 and opened[0].display                # no live map: shown
    assert f"{summary['particles']} particles, resolution" in text and "FSC = 0.143" in text
    rows = run(cx, "gaussianem jobs")
    assert rows[-1]["kind"] == "reconstruct" and rows[-1]["state"] == "done"


def test_reconstruct_into_a_particle_state_with_the_current_result(cx, tiny_result, tmp_path):
    run(cx, f"gaussianem open {tiny_result}")
    job = run(cx, f"gaussianem reconstruct output {tmp_path / 'p3.mrc'} state particle particle 3 box 24 wait true")
    assert job.state == "done", job.error
    summary = json.loads((tmp_path / "p3_fsc.json").read_text())
    assert summary["box"] == 24 and summary["selection"] == "all particles"


def test_reconstruct_opens_masked_at_the_models_level_hidden_beside_the_live_state(cx, opened, tmp_path):
    """Issue 29 item 17: the map opens masked, at the level enclosing the live model's
    volume, hidden (with a log line saying how to show it): the live map and model stay as
    they were."""
    from chimerax.map import Volume
    from chimerax.gaussianem.view import enclosing_level
    live, model = opened.volume, opened.structure
    level = live.surfaces[0].level
    job, text = logged(cx, f"gaussianem reconstruct output {tmp_path / 'c0.mrc'} cluster 0 k 2 wait true")
    assert job.state == "done", job.error
    new = [m for m in cx.models if isinstance(m, Volume) and m.data.path == str(tmp_path / "c0_masked.mrc")]
    assert len(new) == 1
    v = new[0]
    assert not v.display and live.display and model.display and live.surfaces[0].level == level
    assert v.surfaces[0].level == pytest.approx(enclosing_level(v, model))
    assert f"opened masked (c0_masked.mrc as #{v.id_string}), hidden" in text
    assert f"'volume #{v.id_string} show' shows it" in text


def test_no_signal_opens_the_map_with_a_warning(cx, noise_run, tmp_path):
    from chimerax.map import Volume
    out = tmp_path / "noise.mrc"
    job, text = logged(cx, f"gaussianem reconstruct {noise_run} output {out} wait true")
    assert job.state == "done" and job.no_signal, job.error
    assert "the map holds no signal" in text
    assert any(m.data.path == str(tmp_path / "noise_masked.mrc") for m in cx.models if isinstance(m, Volume))


def test_bad_input_is_a_one_line_error(cx, tiny_result, tmp_path):
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="give a .mrc map file name"):
        run(cx, f"gaussianem reconstruct {tiny_result} output {tmp_path / 'x.map'}")
    (tmp_path / "sel.txt").write_text("0 1 2\n")
    with pytest.raises(UserError, match="cluster and particles were both given"):
        run(cx, f"gaussianem reconstruct {tiny_result} output {tmp_path / 'x.mrc'} cluster 0 "
                f"particles {tmp_path / 'sel.txt'}")
    (tmp_path / "old.mrc").write_bytes(b"")
    with pytest.raises(UserError, match="exists: choose another output, or 'replace true'"):
        run(cx, f"gaussianem reconstruct {tiny_result} output {tmp_path / 'old.mrc'}")
    sel = tmp_path / "four.txt"
    sel.write_text("0 1 2 3\n")
    with pytest.raises(UserError, match="too few for two half maps"):
        run(cx, f"gaussianem reconstruct {tiny_result} output {tmp_path / 'y.mrc'} particles {sel} wait true")
