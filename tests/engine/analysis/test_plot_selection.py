"""Selections drawn on the latent plot (a box or a lasso on PC1/PC2 or the UMAP) and the
particle-file columns the plot can be coloured by (issue 16, item 11), on the tiny
trained result of tests/conftest.py."""

from __future__ import annotations

import numpy as np
import pytest

from gaussianem.errors import GaussianEMError


@pytest.fixture(scope="module")
def result(tiny_result):
    from gaussianem.analysis.result import load_result
    return load_result(tiny_result)


def test_points_in_polygon_matches_matplotlib_on_a_star_shaped_lasso():
    from matplotlib.path import Path

    from gaussianem.analysis.selection import points_in_polygon
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(2000, 2))
    t = np.linspace(0, 2 * np.pi, 11)[:-1]
    r = np.where(np.arange(10) % 2, 0.6, 1.8)                 # a concave, star-shaped lasso
    lasso = np.column_stack([r * np.cos(t), r * np.sin(t)])
    inside = points_in_polygon(xy, lasso)
    np.testing.assert_array_equal(inside, Path(lasso).contains_points(xy))
    assert 0 < inside.sum() < len(xy)


def test_a_region_needs_three_corners():
    from gaussianem.analysis.selection import points_in_polygon
    with pytest.raises(GaussianEMError, match="at least 3"):
        points_in_polygon(np.zeros((3, 2)), [[0, 0], [1, 1]])


def test_box_on_the_pca_plot_selects_the_particles_inside(result):
    from gaussianem.analysis.selection import box_corners, plot_coordinates, select_particles
    p = result.pca()
    s = p.scores[:, :2] / p.sd[:2]                            # PC1, PC2 in sd, computed here
    np.testing.assert_allclose(plot_coordinates(result), s, rtol=1e-6)
    sel = select_particles(result, region=box_corners((1.0, 1.0, -0.5, -0.5)))   # corners in any order
    expected = np.flatnonzero((s[:, 0] > -0.5) & (s[:, 0] < 1) & (s[:, 1] > -0.5) & (s[:, 1] < 1))
    np.testing.assert_array_equal(sel.indices, expected)
    assert 0 < len(expected) < len(s) and "PC1/PC2" in sel.what


def test_umap_region_without_an_analysis_says_so(result):
    from gaussianem.analysis.selection import box_corners, select_particles
    with pytest.raises(GaussianEMError, match="gaussianem analyze"):
        select_particles(result, region=box_corners((0, 0, 1, 1)), view="umap")


def test_particle_columns_of_a_star_file(result):
    import starfile

    from gaussianem.analysis.selection import particle_columns
    cols = particle_columns(result)
    table = starfile.read(result.config["train"]["particles"])["particles"]
    np.testing.assert_allclose(cols["rlnDefocusU"], table["rlnDefocusU"])
    np.testing.assert_allclose(cols["defocus"], (table["rlnDefocusU"] + table["rlnDefocusV"]) / 2)
    np.testing.assert_array_equal(cols["optics group"], table["rlnOpticsGroup"])
    assert "rlnImageName" not in cols                        # text columns are left out


def test_particle_columns_of_a_cs_file(result, tmp_path):
    from gaussianem.analysis.selection import export_subset, particle_columns
    n = len(result.z)
    cs = tmp_path / "all.cs"
    labels = np.arange(n) % 3
    export_subset(result, np.arange(n), str(cs), labels=labels)          # every particle, labelled
    cols = particle_columns(result, particles=str(cs))
    np.testing.assert_array_equal(cols["alignments3D/class"], labels)
    star = particle_columns(result)
    np.testing.assert_allclose(cols["ctf/df1_A"], star["rlnDefocusU"], rtol=1e-5)
