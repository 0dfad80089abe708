"""Rigid groups of points from their motion (``model.rigid_groups``), on Gaussians as training
sees them (no sequence), and the neighbour graph cut at their boundary (``train.graph_cut``,
``NeighbourGraph.cut``)."""

import numpy as np
import torch

from gaussianem.model.losses import radius_graph
from gaussianem.model.rigid_groups import kabsch, segment_points
from gaussianem.sim.geometry import rotation_matrix
from gaussianem.train import graph_cut
from gaussianem.train.graph_cut import find_domains
from gaussianem.train.step import NeighbourGraph


def _two_lobes(seed=0, n=400):
    """Points of a 'protein': a core and a lobe (x > 8) joined at the plane x = 8."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([-20, -10, -10], [20, 10, 10], size=(n, 3))
    return pts, pts[:, 0] > 8.0


def _hinge(pts, lobe, angles, scale=1.0, noise=0.05, seed=0):
    """(S, N, 3) displacements: the lobe turned about the y axis through (8, 0, 0)."""
    rng = np.random.default_rng(seed)
    pivot = np.array([8.0, 0, 0])
    out = []
    for a in angles:
        r = rotation_matrix([0, 1, 0], scale * a)
        d = np.zeros_like(pts)
        d[lobe] = (pts[lobe] - pivot) @ r.T + pivot - pts[lobe]
        out.append(d + rng.normal(scale=noise, size=pts.shape))
    d = np.stack(out)
    return d - d.mean(0)


def _edges(pts):
    return radius_graph(torch.from_numpy(pts).float())[0].numpy()


def test_kabsch_recovers_a_rotation():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(50, 3))
    r0 = rotation_matrix([1, 2, 3], 40.0)
    r, pc, qc = kabsch(p, p @ r0.T + 5.0)
    assert np.allclose(r, r0, atol=1e-8) and np.allclose(qc - pc @ r0.T, 5.0)


def test_segment_points_finds_a_turning_lobe_even_when_only_part_of_the_motion_is_decoded():
    pts, lobe = _two_lobes()
    disp = _hinge(pts, lobe, (-15, -10, -5, 5, 10, 15), scale=0.2)      # a fifth of a 30-degree hinge
    labels, residual = segment_points(pts, disp, _edges(pts))
    assert labels.max() == 1
    agree = max(((labels == k) == lobe).mean() for k in (0, 1))
    assert agree >= 0.97
    assert residual[1] < 0.6 * residual[0]


def test_one_rigid_motion_or_a_smooth_bend_is_one_group():
    pts, _ = _two_lobes()
    rigid = np.stack([pts @ rotation_matrix([0, 0, 1], a).T - pts for a in (-6, -2, 2, 6)])
    labels, _ = segment_points(pts, rigid, _edges(pts))
    assert labels.max() == 0
    rng = np.random.default_rng(3)
    noise = rng.normal(scale=0.3, size=(4,) + pts.shape)
    labels, _ = segment_points(pts, noise, _edges(pts))
    assert labels.max() == 0                  # noise is no domain: no split explains much more



def test_find_domains_cuts_only_where_a_motion_was_decoded():
    pts, lobe = _two_lobes()
    edges = _edges(pts)
    found = find_domains(pts, _hinge(pts, lobe, (-15, -5, 5, 15), scale=0.2), edges)
    assert found["domains"] == 2 and found["labels"] is not None and found["motion_rms"] > graph_cut.MIN_MOTION
    still = find_domains(pts, _hinge(pts, lobe, (-15, -5, 5, 15), scale=0.005, noise=0.01), edges)
    assert still["labels"] is None and "too small" in still["reason"]


def test_the_cut_graph_lets_go_of_the_edges_between_domains_only_in_the_strain_terms():
    pts, lobe = _two_lobes()
    from gaussianem.model.gaussians import GaussianSet
    n = len(pts)
    g = NeighbourGraph.build(GaussianSet(torch.from_numpy(pts).float(), torch.ones(n), torch.full((n,), 2.0)),
                             None, "cpu")
    assert g.strained is g.edges
    c = g.cut(lobe.astype(int))
    e = c.strained.numpy()
    assert (lobe[e[:, 0]] == lobe[e[:, 1]]).all()
    crossing = (lobe[g.edges[:, 0].numpy()] != lobe[g.edges[:, 1].numpy()]).sum()
    assert crossing > 0 and len(e) == len(g.edges) - crossing
    assert c.edges is g.edges and c.edge_scale == g.edge_scale      # spacing, embedding, units unchanged
    assert c.cut(None).strained is c.edges


def test_a_small_motion_beside_a_large_one_is_its_own_group():
    """Two lobes turning at once, one three times as far as the other (two_hinges: chain B
    and chain A's third): k-means on the displacements alone splits the large motion's
    lobe by amplitude; splitting each group found so far is among the starts, so the
    small motion's lobe is found as well."""
    rng = np.random.default_rng(0)
    pts = rng.uniform([-30, -10, -10], [30, 10, 10], size=(600, 3))
    left, right = pts[:, 0] < -10, pts[:, 0] > 10
    d = []
    for a in (-15, -10, -5, 5, 10, 15):
        x = np.zeros_like(pts)
        for lobe, pivot, scale in ((left, [-10.0, 0, 0], 0.3), (right, [10.0, 0, 0], 1.0)):
            r = rotation_matrix([0, 1, 0] if scale == 1.0 else [0, 0, 1], scale * a)
            x[lobe] = (pts[lobe] - pivot) @ r.T + pivot - pts[lobe]
        d.append(x + rng.normal(scale=0.05, size=pts.shape))
    d = np.stack(d)
    labels, _ = segment_points(pts, d - d.mean(0), _edges(pts))
    assert labels.max() == 2
    for lobe in (left, right, ~left & ~right):
        assert max(((labels == k) == lobe).mean() for k in range(3)) >= 0.95
