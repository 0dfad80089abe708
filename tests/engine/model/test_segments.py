"""Rigid segments (gaussianem.model.segments) and their place in the decoder."""

import math

import numpy as np
import torch

from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.model.segments import DomainField, SegmentField, rotation_matrices


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


def _two_blobs(seed=1):
    rng = np.random.default_rng(seed)
    c = torch.from_numpy(np.concatenate([rng.normal(0, 2, (40, 3)) + [15, 0, 0],
                                         rng.normal(0, 2, (40, 3)) - [15, 0, 0]])).float()
    return c, (c[:, 0] < 0).long().numpy()


def _dist(x):
    return (x[:, None].double() - x[None].double()).norm(dim=-1)


def test_domains_are_still_until_assigned_then_each_moves_rigidly_and_a_refinement_keeps_the_motion():
    c, labels = _two_blobs()
    f = DomainField(3, 80, max_domains=4)
    z = torch.randn(5, 3)
    assert float(f(z, c).abs().max()) == 0.0                  # no domains yet: no rigid part
    f.assign(labels, c, torch.full((80,), 1 / 80))
    assert torch.allclose(f.pivots[1], c[40:].mean(0), atol=1e-5)   # a new domain turns about its centre
    with torch.no_grad():
        f.net[-1].bias.normal_(0, 0.5)                        # some motion of every domain
    d = f(z, c)
    for k in (0, 1):
        s = torch.from_numpy(labels == k)
        for b in range(5):
            assert torch.allclose(_dist((c + d[b])[s]), _dist(c[s]), atol=1e-3)
    assert float((d[:, :40] - d[:, 40:].mean(1, keepdim=True)).abs().max()) > 0.5   # the domains move apart
    finer = labels.copy()
    finer[40:60] = 2                                          # a later cut splits domain 1
    f.assign(finer, c, torch.full((80,), 1 / 80))
    assert torch.allclose(f(z, c), d, atol=1e-6)              # inherited: the same motion at the cut


def test_a_model_with_domain_motion_charges_the_structure_terms_only_the_rest():
    from gaussianem.train.step import strain_part
    c, labels = _two_blobs(2)
    base = GaussianSet(c, torch.ones(80), torch.full((80,), 2.0))
    cfg = ModelConfig(box=16, zdim=3, zdim_conf=2, zdim_comp=1, enc_dim=16, gauss_dim=16, dec_dim=16,
                      domain_motion=True, gaussian_features=False, encoder_input="image")
    model = HeterogeneityModel(cfg, base)
    model.domain_field.assign(labels, c, model.mass_weights())
    with torch.no_grad():
        model.domain_field.net[-1].bias.normal_(0, 0.5)
    out = model.decode(torch.randn(4, 3))
    assert float(out["domain_rigid"].abs().max()) > 0.5
    assert torch.allclose(strain_part(out), out["displacement"] - out["domain_rigid"])
    assert float(strain_part(out).abs().max()) < float(out["displacement"].abs().max())
    state = model.state_dict()                                # the domains travel with the weights
    again = HeterogeneityModel(cfg, base)
    again.load_state_dict(state)
    assert torch.equal(again.domain_field.labels, torch.from_numpy(labels))
    assert ModelConfig.from_saved({"box": 16, "zdim": 3}).domain_motion is False
    assert strain_part(HeterogeneityModel(ModelConfig(box=16, zdim=3), base).decode(torch.zeros(1, 3))) is not None
