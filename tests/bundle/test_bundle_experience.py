"""The ChimeraX experience (issue 16, items 3, 7 and 9) in a real headless ChimeraX
session through real commands: a first view that shows the science, markers whose
colours can be read across states with a colour key, and one vocabulary (k, PC names in
sd, trajectory maps styled as the live map).

Fixtures: ``cx`` (embedded session, models closed after each test) and ``tiny_result``
(tests/conftest.py: a result trained with the model, split latent 2 + 1).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from chimerax_fixture import osmesa_available, run



def _key(session):
    from chimerax.color_key.model import get_model
    key = get_model(session, create=False)
    return None if key is None or key.deleted else key


# ---------------------------------------------------------------------------- 3. first view

def test_first_view_transparent_map_cartoon_and_across_the_motion(cx, opened):
    vol, s = opened.volume, opened.structure
    assert vol.surfaces and all(surf.color[3] < 255 for surf in vol.surfaces)     # transparent
    assert abs(vol.surfaces[0].color[3] / 255 - 0.5) < 0.02
    assert s is not None and s.residues.ribbon_displays.all()
    # the main motion: mean displacement of the Gaussians between the 5th and 95th
    # percentiles along conformational PC1, computed here from the engine
    r = opened.result
    zs = r.trajectory(pc=1, steps=2, part="conf")
    c = r.decode(zs)["centres"].numpy()
    d = r.grid.to_physical(c[1]) - r.grid.to_physical(c[0])
    v = cx.main_view.camera.view_direction()
    m = vol.scene_position.transform_vector(d.mean(axis=0))
    assert abs(float(np.dot(v, m / np.linalg.norm(m)))) < 0.3
    # and the Gaussians' principal direction of displacement (the motion where the mean cancels)
    p = vol.scene_position.transform_vector(np.linalg.svd(d, full_matrices=False)[2][0])
    assert abs(float(np.dot(v, p / np.linalg.norm(p)))) < 0.3


# ---------------------------------------------------------------------------- 7. markers

def test_marker_colours_on_one_scale_across_states_with_a_key(cx, opened):
    from chimerax.gaussianem.markers import sequential
    run(cx, "gaussianem show particle 3")
    ms = run(cx, "gaussianem markers")
    assert _key(cx) is not None                                    # a colour key is shown
    scale = opened.marker_scale
    assert scale[0] == 0.0 and scale[1] > 0
    r = opened.result

    def state():
        d = np.linalg.norm(r.decode(opened.z)["displacement"][0].numpy(), axis=1)
        return d, np.array(ms.atoms.colors, dtype=int)

    d3, c3 = state()
    np.testing.assert_array_equal(c3, sequential(d3 / scale[1]))    # colour = |d| on the fixed scale
    run(cx, "gaussianem show particle 9")
    assert opened.marker_scale == scale                             # not rescaled per state
    d9, c9 = state()
    np.testing.assert_array_equal(c9, sequential(d9 / scale[1]))
    # a marker with (nearly) the same displacement at both states has (nearly) the same colour
    i, j = np.unravel_index(np.argmin(np.abs(d3[:, None] - d9[None, :])), (len(d3), len(d9)))
    assert abs(d3[i] - d9[j]) < 0.01 * scale[1]
    assert np.abs(c3[i] - c9[j]).max() <= 6
    # amplitude: clipped log2, so a vanished Gaussian is plain blue and the rest keep their colours
    run(cx, "gaussianem markers colorBy amplitude")
    assert opened.marker_scale == (-1.0, 1.0)
    run(cx, f"close #{ms.id_string}")
    assert _key(cx) is None                                         # closed with the markers


def _key_layout(png):
    """(bar box, label row runs, text box) of a colour key drawn alone on black: the bar is
    the coloured pixels (viridis, blue-white-red), the labels the grey-white ones outside it."""
    from PIL import Image
    with Image.open(png) as im:
        a = np.asarray(im.convert("RGB"), dtype=int)
    bright = a.max(axis=2) > 60
    grey = bright & (a.max(axis=2) - a.min(axis=2) < 40)
    colour = bright & ~grey
    ys, xs = np.nonzero(colour)
    bar = (xs.min(), ys.min(), xs.max(), ys.max())
    text = grey.copy()
    text[max(0, bar[1] - 4):bar[3] + 5, max(0, bar[0] - 4):bar[2] + 5] = False      # the bar's border
    ty, tx = np.nonzero(text)
    rows = np.zeros(a.shape[0], bool)
    for gap in range(3):                # rows of one label (an Å's ring, antialiasing) joined
        rows[np.clip(ty + gap, 0, len(rows) - 1)] = True
    runs = int(np.sum(rows[1:] & ~rows[:-1]) + rows[0])
    return bar, runs, (tx.min(), ty.min(), tx.max(), ty.max()), a.shape[:2]


@pytest.mark.skipif(not osmesa_available(), reason="offscreen rendering (OSMesa) is not installed")
def test_colour_key_labels_apart_and_inside_saved_images_at_any_size(cx, opened, tmp_path):
    """Issue 29 item 15: the key's labels neither overlap nor leave the picture, for square,
    wide and tall images, large and small, and for both colourings."""
    ms = run(cx, "gaussianem markers")
    key = _key(cx)
    run(cx, "set bgColor black")
    for m in cx.models.list():
        if m is not key:
            m.display = False
    try:
        for color_by in ("displacement", "amplitude"):
            run(cx, f"gaussianem markers colorBy {color_by}")
            for w, h in ((480, 480), (160, 160), (320, 240), (240, 320), (1280, 720)):
                png = tmp_path / f"{color_by}_{w}x{h}.png"
                run(cx, f"save {png} width {w} height {h} supersample 1")
                bar, runs, text, (ih, iw) = _key_layout(png)
                where = f"{color_by} {w}x{h}"
                assert bar[3] - bar[1] > 3 * (bar[2] - bar[0]), where               # a vertical bar
                assert runs == 3, f"{where}: {runs} label rows (3 labels, apart)"
                assert text[0] > bar[2], where                                       # beside the bar
                assert min(text[0], text[1]) > 0 and text[2] < iw - 1 and text[3] < ih - 1, where  # inside
    finally:
        run(cx, "set bgColor white")
        run(cx, f"close #{ms.id_string}")


# ---------------------------------------------------------------------------- 9. one vocabulary

def test_default_k_is_the_engines(opened):
    from chimerax.gaussianem.session_result import DEFAULT_K
    from gaussianem.analysis.report import analyze
    assert DEFAULT_K == inspect.signature(analyze).parameters["k"].default
    assert opened.k == min(DEFAULT_K, opened.result.n_particles)


def test_trajectory_names_and_style_follow_the_live_map(cx, opened):
    run(cx, f"volume #{opened.volume.id_string} color 0.2,0.6,0.9 transparency 0.7")
    live = opened.volume.surfaces[0]
    series, _copy = run(cx, "gaussianem trajectory pc 1 steps 3 range -1.5,1.5 latentPart conf")
    assert [m.name for m in series.maps] == ["conf PC1 -1.50 sd", "conf PC1 +0.00 sd", "conf PC1 +1.50 sd"]
    assert "conf PC1 trajectory" in series.name
    for m in series.maps:
        assert m.surfaces[0].level == pytest.approx(live.level)
        assert tuple(m.surfaces[0].color) == tuple(live.color)         # colour and transparency
    series2, _ = run(cx, "gaussianem trajectory pc 1 steps 2 range -1,1")
    assert [m.name for m in series2.maps] == ["PC1 -1.00 sd", "PC1 +1.00 sd"]
