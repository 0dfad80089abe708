"""The Latent Explorer's plot tools (issue 16, item 11): colouring the plot by k-means
cluster or a column of the particle file, and a box or lasso drawn on it with the mouse
whose particles Save writes through ``gaussianem subset`` in a real headless ChimeraX
session. The panel is driven offscreen (QT_QPA_PLATFORM=offscreen)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PyQt6")

from chimerax_fixture import run  # noqa: E402


@pytest.fixture(scope="module")
def qapp():
    from Qt.QtWidgets import QApplication
    return QApplication.instance() or QApplication([])


@pytest.fixture
def explorer(qapp, cx, tiny_result):
    """(result, panel, saved regions): the tool's panel for the opened tiny result."""
    from chimerax.gaussianem.explorer.tool import make_panel
    res = run(cx, f"gaussianem open {tiny_result}")
    regions = []
    panel = make_panel(res, lambda z: None, on_save_region=regions.append)
    panel.resize(500, 650)
    panel.show()
    qapp.processEvents()
    panel.canvas.draw()
    yield res, panel, regions
    panel.deleteLater()


def _mouse(panel, kind, x, y):
    """A mouse event at plot position (x, y), delivered as the canvas delivers real ones."""
    from matplotlib.backend_bases import MouseEvent
    px, py = panel.axes.transData.transform((x, y))
    event = MouseEvent(kind, panel.canvas, px, py, button=1)
    panel.canvas.callbacks.process(kind, event)


def test_colour_by_kmeans_and_by_particle_file_columns(explorer):
    res, panel, _ = explorer
    options = [panel.color_menu.itemText(i) for i in range(panel.color_menu.count())]
    assert options[:2] == ["density", "k-means cluster"]
    assert {"defocus", "optics group", "rlnDefocusU"} <= set(options)
    panel.color_by("k-means cluster")
    legend = [t.get_text() for t in panel.axes.get_legend().get_texts()]
    assert legend == [str(i) for i in range(res.kmeans().k)]            # one colour per cluster
    assert "k-means cluster" in panel.info.text()
    panel.color_by("defocus")
    d = res.particle_columns()["defocus"]
    assert f"{d.min():.4g}" in panel.info.text() and f"{d.max():.4g}" in panel.info.text()
    mapped = [np.asarray(c.get_array()) for c in panel.axes.collections if c.get_array() is not None]
    assert any(a.shape == d.shape and np.allclose(a, d) for a in mapped)  # each particle its own defocus
    with pytest.raises(ValueError, match="cannot be coloured"):
        panel.color_by("rlnNoSuchColumn")


def test_box_drawn_with_the_mouse_is_saved_by_the_subset_command(explorer, cx, tmp_path):
    from chimerax.gaussianem.explorer.tool import region_command
    res, panel, regions = explorer
    xy = panel.plot_coordinates()
    panel.select_menu.setCurrentText("box")
    assert panel.selector.mode == "box"
    _mouse(panel, "button_press_event", -0.5, -0.5)
    _mouse(panel, "motion_notify_event", 0.3, 0.4)
    _mouse(panel, "motion_notify_event", 1.0, 1.2)
    _mouse(panel, "button_release_event", 1.0, 1.2)
    x0, y0, x1, y1 = panel.region["box"]
    assert (x0, y0, x1, y1) == pytest.approx((-0.5, -0.5, 1.0, 1.2), abs=0.05)    # to the pixel
    inside = np.flatnonzero((xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1))
    np.testing.assert_array_equal(panel.selected, inside)
    assert panel.selected_label.text() == f"{len(inside)} selected" and panel.save_button.isEnabled()
    panel.save_button.click()
    assert regions[-1]["plot"] == "pca" and regions[-1]["box"] == panel.region["box"]
    out = run(cx, region_command(regions[-1], str(tmp_path / "box.star")))
    np.testing.assert_array_equal(out["indices"], inside)                # what was ringed is what is saved


def test_lasso_drawn_with_the_mouse(explorer, cx, tmp_path):
    from matplotlib.path import Path

    from chimerax.gaussianem.explorer.tool import region_command
    res, panel, regions = explorer
    panel.select_menu.setCurrentText("lasso")
    t = np.linspace(0, 2 * np.pi, 200)
    path = np.column_stack([1.2 * np.cos(t), 0.9 * np.sin(t)])
    _mouse(panel, "button_press_event", *path[0])
    for p in path[1:]:
        _mouse(panel, "motion_notify_event", *p)
    _mouse(panel, "button_release_event", *path[-1])
    corners = panel.region["polygon"]
    assert 3 <= len(corners) <= 60                                      # thinned for the command line
    want = np.flatnonzero(Path(corners).contains_points(panel.plot_coordinates()))
    np.testing.assert_array_equal(panel.selected, want)
    assert 0 < len(want) < len(res.result.z)
    panel.save_region()
    out = run(cx, region_command(regions[-1], str(tmp_path / "lasso.star")))
    np.testing.assert_array_equal(out["indices"], want)
    panel.set_view("pca")                                               # a new plot drops the region
    assert panel.region is None and not panel.save_button.isEnabled()


def test_clicks_pick_particles_only_in_click_mode(explorer):
    res, panel, _ = explorer
    xy = panel.plot_coordinates()
    panel.select_menu.setCurrentText("box")
    before = panel.current_particle
    _mouse(panel, "button_press_event", *xy[17])
    _mouse(panel, "button_release_event", *xy[17])
    assert panel.current_particle == before and panel.region is None     # a zero-size box selects nothing
    panel.select_menu.setCurrentText("click")
    _mouse(panel, "button_press_event", *xy[17])
    assert panel.current_particle == 17
