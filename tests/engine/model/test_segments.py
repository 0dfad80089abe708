"""Rigid segments (gaussianem.model.segments) and their place in the decoder."""

import math

import numpy as np
import torch

from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.model.segments import SegmentField, rotation_matrices


def _skew(w):
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*w.shape[:-1], 3, 3)


def test_rotation_matrices_are_the_exponential_map():
    w = torch.randn(20, 3, dtype=torch.float64) * 1.5
    w[0] = 0.0
    w[1] = torch.tensor([1e-5, -2e-5, 0.0])
    R = rotation_matrices(w)
    assert torch.allclose(R, torch.linalg.matrix_exp(_skew(w)), atol=1e-12)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(20, 3, 3), atol=1e-12)
    w0 = torch.zeros(1, 3, requires_grad=True)
    rotation_matrices(w0)[0, 1, 0].backward()                # d R_10 / d w at 0: the z component, 1
    assert torch.allclose(w0.grad, torch.tensor([[0.0, 0.0, 1.0]]))


def test_segments_start_on_the_mass():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (50, 3)) + [20, 0, 0]
    b = rng.normal(0, 1, (50, 3)) - [20, 0, 0]
    f = SegmentField(2, torch.from_numpy(np.concatenate([a, b])).float(), torch.full((100,), 0.01), 2)
    m = f.seg_centres.detach().numpy()
    assert sorted(np.round(m[:, 0] / 20).astype(int).tolist()) == [-1, 1]


def test_one_segment_moves_the_gaussians_rigidly():
    torch.manual_seed(0)
    c = torch.randn(60, 3) * 8
    f = SegmentField(2, c, torch.full((60,), 1 / 60), 1)
    with torch.no_grad():
        f.net[-1].bias.copy_(torch.tensor([0.05, -0.02, 0.03, 0.2, 0.1, -0.1]))
    z = torch.zeros(1, 2)
    d = f(z, c)[0]
    R, t = f.motions(z)
    m = f.seg_centres[0]
    expected = (c - m) @ R[0, 0].T + m + t[0, 0] - c
    assert torch.allclose(d, expected, atol=1e-5)
    # a rigid motion keeps every distance
    moved = c + d
    def dist(x):
        return (x[:, None] - x[None]).norm(dim=-1)
    assert torch.allclose(dist(moved), dist(c), atol=1e-3)
    assert float(d.norm(dim=1).max()) > 0.5


def test_two_segments_turn_apart_and_the_model_learns_through_them():
    """Two blobs, each owned by one segment, each turning on its own; a model with
    segments decodes, its segment parameters get gradients, and a config without the
    setting (an older run) reads as no segments."""
    rng = np.random.default_rng(1)
    c = torch.from_numpy(np.concatenate([rng.normal(0, 2, (40, 3)) + [15, 0, 0],
                                         rng.normal(0, 2, (40, 3)) - [15, 0, 0]])).float()
    f = SegmentField(3, c, torch.full((80,), 1 / 80), 2)
    w = f.assignment(c).detach()
    assert float(w.max(1).values.min()) > 0.9              # each blob owned by one segment
    base = GaussianSet(c, torch.ones(80), torch.full((80,), 2.0))
    cfg = ModelConfig(box=16, zdim=3, zdim_conf=2, zdim_comp=1, enc_dim=16, gauss_dim=16, dec_dim=16,
                      segments=2, gaussian_features=False, encoder_input="image")
    model = HeterogeneityModel(cfg, base)
    out = model.decode(torch.randn(4, 3))
    assert out["rigid"].shape == (4, 80, 3)
    out["displacement"].pow(2).sum().backward()
    assert model.segment_field.net[-1].weight.grad.abs().sum() > 0
    assert ModelConfig.from_saved({"box": 16, "zdim": 3}).segments == 0
    assert HeterogeneityModel(ModelConfig(box=16, zdim=3), base).decode(torch.zeros(1, 3))["rigid"] is None
    assert math.isfinite(float(out["displacement"].abs().max()))
