"""Deformation fields from Gaussian motions (gaussianem.model.field)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gaussianem.errors import InputError
from gaussianem.model.field import DeformationField

BOX, APIX = 32, 2.0


@pytest.fixture(scope="module")
def two_domains():
    rng = np.random.default_rng(1)
    a = rng.normal((-9, 0, 0), 4, (60, 3))
    b = rng.normal((9, 0, 0), 4, (60, 3))
    c = torch.from_numpy(np.concatenate([a, b])).float()
    return c, torch.ones(120), torch.full((120,), 2.5)


def _near(centres, n=200, seed=0):
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, len(centres), n)] + torch.from_numpy(rng.normal(0, 1.0, (n, 3))).float()


def test_no_motion_no_field(two_domains):
    c, a, s = two_domains
    f = DeformationField(c, a, s, BOX, APIX)
    assert torch.allclose(f(torch.zeros(1, len(c), 3)), torch.zeros(1), atol=1e-6)


def test_a_rigid_motion_is_carried_rigidly(two_domains):
    c, a, s = two_domains
    f = DeformationField(c, a, s, BOX, APIX)
    R = torch.from_numpy(Rotation.from_rotvec([0, 0, 0.3]).as_matrix()).float()
    t = torch.tensor([2.0, -1.0, 1.5])
    moved = c @ R.T + t
    x = _near(c)
    u = f.sample(f((moved - c)[None]), x)[0]
    want = x @ R.T + t - x
    err = (u - want).norm(dim=-1)
    assert float(err.median()) < 0.1 * float(want.norm(dim=-1).median()), float(err.median())


def test_each_domain_takes_its_own_motion(two_domains):
    c, a, s = two_domains
    f = DeformationField(c, a, s, BOX, APIX)
    d = torch.zeros(len(c), 3)
    d[60:, 1] = 3.0                                  # domain B moves 3 A along y, A stays
    field = f(d[None])
    ua = f.sample(field, _near(c[:60], seed=1))[0]
    ub = f.sample(field, _near(c[60:], seed=2))[0]
    assert float(ua[:, 1].abs().median()) < 0.3
    assert abs(float(ub[:, 1].median()) - 3.0) < 0.3
    far = f.sample(field, torch.tensor([[0.0, 0.0, 30.0]]))[0]        # solvent far away stays
    assert float(far.norm()) < 0.3


def test_inverse(two_domains):
    c, a, s = two_domains
    f = DeformationField(c, a, s, BOX, APIX)
    d = torch.zeros(len(c), 3)
    d[60:] = torch.tensor([1.5, 2.0, -1.0])
    field = f(d[None])
    y = _near(c, seed=3)
    x = f.inverse(field, y)
    assert float((x + f.sample(field, x[None])[0] - y).norm(dim=-1).max()) < 0.05


def test_bad_input(two_domains):
    c, a, s = two_domains
    with pytest.raises(InputError, match="same Gaussians"):
        DeformationField(c, a[:5], s, BOX, APIX)
    with pytest.raises(InputError, match="displacements for 120 Gaussians"):
        DeformationField(c, a, s, BOX, APIX)(torch.zeros(1, 7, 3))


def test_support_covers_where_fields_move(two_domains):
    c, a, s = two_domains
    f = DeformationField(c, a, s, BOX, APIX)
    near, far = _near(c, seed=4), torch.tensor([[0.0, 0.0, 30.0], [30.0, 30.0, 30.0]])
    assert bool(f.support(near).all()) and not bool(f.support(far).any())
    d = torch.randn(1, len(c), 3) * 3
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-32, 30, 24)] * 3, indexing="ij"), -1).reshape(-1, 3)
    outside = ~f.support(grid)
    assert outside.any() and float(f.sample(f(d), grid[outside]).abs().max()) < 1e-3 * float(d.abs().max()) + 1e-4
