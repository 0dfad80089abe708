"""Ranges from the data (issue 16 item 2): trajectories go by default to the particles'
5th-95th percentiles along a principal component (cryoDRGN's convention) instead of
+-2 sd, and the medoid particle is a state the particles have."""

import json

import numpy as np
import pytest

from gaussianem.analysis.result import load_result
from gaussianem.cli.main import main
from gaussianem.errors import ResultError


@pytest.fixture(scope="module")
def result(tiny_result):
    return load_result(tiny_result)


def test_pc_percentiles_are_the_particles_scores_in_sd(result):
    for part in ("all", "conf"):
        p = result.pca(part)
        s = p.scores[:, 0] / p.sd[0]
        lo, hi = result.pc_percentiles(1, part)
        assert lo < 0 < hi
        assert np.mean(s < lo) == pytest.approx(0.05, abs=0.01)
        assert np.mean(s > hi) == pytest.approx(0.05, abs=0.01)
        wide = result.pc_percentiles(1, part, q=(0.5, 99.5))
        assert wide[0] < lo and wide[1] > hi and wide[0] >= s.min() and wide[1] <= s.max()
    with pytest.raises(ResultError, match="principal component 4 does not exist"):
        result.pc_percentiles(4)


def test_trajectory_defaults_to_the_percentiles_and_keeps_an_explicit_range(result):
    p = result.pca()
    lo, hi = result.pc_percentiles(1)
    zs = result.trajectory(pc=1, steps=5)
    scores = (zs - p.mean) @ p.components[0] / p.sd[0]
    np.testing.assert_allclose(scores, np.linspace(lo, hi, 5), atol=1e-4)
    zs = result.trajectory(pc=1, steps=3, range_sd=(-2.0, 2.0))        # an explicit range still works
    np.testing.assert_allclose(zs, np.stack([p.latent(1, v) for v in (-2.0, 0.0, 2.0)]), atol=1e-6)
    conf = result.trajectory(pc=1, steps=4, part="conf")
    lo, hi = result.pc_percentiles(1, "conf")
    pc = result.pca("conf")
    np.testing.assert_allclose((conf[[0, -1]] - pc.mean) @ pc.components[0] / pc.sd[0], [lo, hi], atol=1e-4)


def test_medoid_is_the_particle_with_least_summed_distance(result):
    z = result.z.astype(np.float64)
    i = result.medoid_index()
    cost = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1)).sum(1)
    assert i == int(np.argmin(cost))
    # above the sample size: a fixed sample, still one of the particles
    j = result.medoid_index(sample=50)
    assert 0 <= j < len(z) and j == result.medoid_index(sample=50)
    assert cost[j] <= np.quantile(cost, 0.25)


def test_medoid_of_two_clusters_lies_in_one_not_between(tiny_result):
    r = load_result(tiny_result)
    rng = np.random.default_rng(1)
    r.z = np.concatenate([rng.normal(-3, 0.3, (60, 3)), rng.normal(3, 0.3, (40, 3))]).astype(np.float32)
    m = r.z[r.medoid_index()]
    assert np.all(np.abs(m) > 1.5)                       # in a cluster; the mean lies between them
    assert np.linalg.norm(r.z.mean(0) - m) > 1.0


def test_generate_pc_default_range_is_the_percentiles(tiny_result, tmp_path, result):
    out = tmp_path / "pc1"
    assert main(["generate", str(tiny_result), "--pc", "1", "--steps", "3", "-o", str(out), "--no-model",
                 "--map", "gaussians"]) == 0
    np.testing.assert_allclose(np.loadtxt(out / "z.txt"), result.trajectory(pc=1, steps=3), atol=1e-5)
    lo, hi = result.pc_percentiles(1)
    source = json.loads((out / "generate.json").read_text())["source"]
    assert source == f"PC1 from {lo:.3g} to {hi:.3g} sd (the particles' 5th to 95th percentiles)"
    out2 = tmp_path / "pc1b"
    assert main(["generate", str(tiny_result), "--pc", "1", "--steps", "3", "--range", "-2", "2", "-o",
                 str(out2), "--no-model", "--map", "gaussians"]) == 0
    np.testing.assert_allclose(np.loadtxt(out2 / "z.txt"), result.trajectory(pc=1, steps=3, range_sd=(-2, 2)),
                               atol=1e-5)
