"""The Latent Explorer: its Qt panel on its own (offscreen), and the tool's live update
path (worker-thread generation, ``gaussianem show`` in the GUI thread) in a real
headless ChimeraX session."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PyQt6")


@pytest.fixture(scope="module")
def qapp():
    from Qt.QtWidgets import QApplication
    return QApplication.instance() or QApplication([])


@pytest.fixture(scope="module")
def engine_result(tiny_result):
    from gaussianem.analysis.result import load_result
    return load_result(tiny_result)


def _panel(qapp, result, **kw):
    from chimerax.gaussianem.explorer.panel import LatentPanel
    calls = []
    panel = LatentPanel(result.z, result.pca(), on_latent=calls.append,
                        split=(result.model_config.zdim_conf, result.model_config.zdim_comp), **kw)
    panel.resize(500, 600)
    panel.show()
    qapp.processEvents()
    return panel, calls


def wait_for(qapp, condition, timeout=30.0):
    end = time.time() + timeout
    while not condition():
        assert time.time() < end, "timed out"
        qapp.processEvents()
        time.sleep(0.005)


def test_pc1_slider_sends_pca_latent(qapp, engine_result):
    panel, calls = _panel(qapp, engine_result)
    pca = engine_result.pca()
    assert len(panel.sliders) == 3
    panel.sliders[0].setValue(15)                               # 1.5 sd (0.1 sd per tick)
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], pca.latent(1, 1.5), rtol=1e-6, atol=1e-6)
    panel.set_pc_value(2, -1.0)                                 # then along PC2 from there
    expected = pca.latent(1, 1.5) + (-1.0 * pca.sd[1]) * pca.components[1]
    np.testing.assert_allclose(calls[-1], expected, atol=1e-5)
    panel.reset()
    np.testing.assert_allclose(calls[-1], pca.mean, atol=1e-6)
    assert panel.pc_value(1) == 0 and panel.pc_value(2) == 0


def test_clicking_a_point_sends_its_particle_latent(qapp, engine_result):
    from matplotlib.backend_bases import MouseEvent
    panel, calls = _panel(qapp, engine_result)
    panel.canvas.draw()
    i = 17
    x, y = panel.axes.transData.transform(panel.plot_coordinates()[i])
    event = MouseEvent("button_press_event", panel.canvas, x, y, button=1)
    panel.canvas.callbacks.process("button_press_event", event)  # as a real click is delivered
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0], engine_result.z[i])
    assert panel.current_particle == i
    score = engine_result.pca().scores[i, 0] / engine_result.pca().sd[0]
    assert panel.pc_value(1) == pytest.approx(np.clip(int(round(score * 10)) / 10, -3, 3))


def test_composition_switch_holds_composition_at_mean(qapp, engine_result):
    panel, calls = _panel(qapp, engine_result)
    assert panel.composition is not None
    panel.pick_particle(5)
    panel.composition.setChecked(False)                          # re-sends the current latent
    z = calls[-1]
    np.testing.assert_array_equal(z[:2], engine_result.z[5][:2])  # conformation kept
    np.testing.assert_allclose(z[2:], engine_result.pca().mean[2:])


def test_play_steps_along_pc_and_loops(qapp, engine_result):
    panel, calls = _panel(qapp, engine_result, play_interval_ms=1, play_range_sd=0.4,
                          play_step_sd=0.2)
    panel.play(pc=2)
    assert panel.playing
    wait_for(qapp, lambda: len(calls) >= 8)
    panel.stop()
    assert not panel.playing
    values = [round(float((c - engine_result.pca().mean) @ engine_result.pca().components[1]
                          / engine_result.pca().sd[1]), 3) for c in calls]
    assert values[:5] == [-0.4, -0.2, 0.0, 0.2, 0.4]
    assert values[5] == 0.2                                      # looped back


def test_umap_view_when_analysis_has_one(qapp, engine_result):
    emb = np.random.default_rng(0).normal(size=(len(engine_result.z), 2))
    panel, calls = _panel(qapp, engine_result, umap=emb, centre_index=[0, 1])
    panel.set_view("umap")
    np.testing.assert_array_equal(panel.plot_coordinates(), emb)
    panel.pick_at(*emb[42])
    np.testing.assert_array_equal(calls[-1], engine_result.z[42])


# ---------------------------------------------------------------------------- with ChimeraX

def test_live_updater_shows_latest_latent_through_logged_command(qapp, cx, tiny_result):
    from chimerax.core.logger import StringPlainTextLog

    from chimerax.gaussianem.explorer.tool import LiveUpdater, make_panel
    from chimerax.core.commands import run
    res = run(cx, f"gaussianem open {tiny_result}")
    updater = LiveUpdater(cx, res)
    panel = make_panel(res, updater.request)
    pca = res.result.pca()
    try:
        with StringPlainTextLog(cx.logger) as log:
            for v in range(1, 6):                                # a quick drag: 5 slider moves
                panel.set_pc_value(1, v / 10)
            wait_for(qapp, lambda: not updater.busy and updater.latencies)
            text = log.getvalue()
        assert 1 <= len(updater.latencies) < 5                   # coalesced
        medoid = res.result.z[res.medoid]                        # the panel starts where the map is
        score = (medoid - pca.mean) @ pca.components[0] / pca.sd[0]
        want = medoid + (0.5 - score) * pca.sd[0] * pca.components[0]
        np.testing.assert_allclose(res.z, want, atol=1e-5)       # the newest request won
        np.testing.assert_allclose(res.volume.full_matrix(), res.result.volume(res.z, kind="deformed"),
                                   rtol=1e-5, atol=1e-6)
        assert "gaussianem show z " in text                      # every update is a command
    finally:
        updater.close()
        panel.deleteLater()


def test_explorer_needs_the_gui(cx, tiny_result):
    from chimerax.core.commands import run
    from chimerax.core.errors import UserError

    from chimerax.gaussianem.explorer.tool import LatentExplorer
    run(cx, f"gaussianem open {tiny_result}")
    with pytest.raises(UserError, match="needs the ChimeraX window"):
        LatentExplorer(cx)


def test_player_steps_between_the_given_pc_range_ends(qapp, engine_result):
    panel, calls = _panel(qapp, engine_result, play_interval_ms=1, play_step_sd=0.2,
                          pc_ranges=[(-0.33, 0.41)] * 3)
    assert [(s.minimum(), s.maximum()) for s in panel.sliders] == [(-4, 5)] * 3   # outward, whole ticks
    assert panel.play_range(1) == (-0.4, 0.5)
    panel.play(pc=1)
    wait_for(qapp, lambda: len(calls) >= 12)
    panel.stop()
    pca = engine_result.pca()
    values = [round(float((c - pca.mean) @ pca.components[0] / pca.sd[0]), 3) for c in calls]
    assert values[:12] == [-0.4, -0.2, 0.0, 0.2, 0.4, 0.5, 0.3, 0.1, -0.1, -0.3, -0.4, -0.2]


def test_explorer_panel_starts_at_the_medoid_with_sliders_over_the_particles(qapp, cx, tiny_result):
    from chimerax.core.commands import run

    from chimerax.gaussianem.explorer.tool import make_panel
    res = run(cx, f"gaussianem open {tiny_result}")
    r = res.result
    calls = []
    panel = make_panel(res, calls.append)
    try:
        medoid = r.medoid_index()
        np.testing.assert_array_equal(panel.current, r.z[medoid])      # where the map is
        assert panel.current_particle == medoid and not calls
        assert panel.mean_button.text() == "Medoid"
        for k, s in enumerate(panel.sliders):
            lo, hi = r.pc_percentiles(k + 1)
            assert (s.minimum(), s.maximum()) == (int(np.floor(lo * 10)), int(np.ceil(hi * 10)))
            assert panel.play_range(k + 1) == (s.minimum() / 10, s.maximum() / 10)
        pca = r.pca()
        score = (r.z[medoid] - pca.mean) @ pca.components[0] / pca.sd[0]
        assert panel.pc_value(1) == pytest.approx(round(score * 10) / 10)
        panel.set_pc_value(1, 0.3)
        panel.reset()
        np.testing.assert_array_equal(calls[-1], r.z[medoid])
    finally:
        panel.deleteLater()


def test_fit_domains_button_only_when_asked_and_calls_back(qapp, engine_result):
    panel, _ = _panel(qapp, engine_result)
    assert panel.fit_button is None                             # no atomic model: no button
    asked = []
    panel, _ = _panel(qapp, engine_result, on_fit_domains=lambda: asked.append(True))
    assert panel.fit_button is not None and panel.fit_button.isVisible()
    panel.fit_button.click()
    assert asked == [True]


def test_explorer_fit_domains_button_runs_the_command(qapp, cx, tiny_result):
    """make_panel wires Fit domains to the logged command when the result has a model."""
    from chimerax.gaussianem.explorer.tool import make_panel
    from chimerax.core.commands import run
    gres = run(cx, f"gaussianem open {tiny_result}")
    asked = []
    panel = make_panel(gres, lambda z: None, on_fit_domains=lambda: asked.append(True))
    assert panel.fit_button is not None
    panel.fit_button.click()
    assert asked == [True]
    run(cx, f"close #{gres.structure.id_string}")
    assert make_panel(gres, lambda z: None, on_fit_domains=lambda: None).fit_button is None
