"""The base Gaussians un-smeared by the decoded motion (gaussianem.model.unsmear)."""

import numpy as np
import torch

from gaussianem.model.unsmear import unsmear


def _blob(n=16, seed=0):
    rng = np.random.default_rng(seed)
    c = torch.from_numpy(rng.normal(0, 4, (n, 3))).float()
    return c, torch.ones(n), torch.full((n,), 2.0)


def test_a_base_smeared_by_the_states_motion_is_sharpened():
    """States that are the sharp base (width 2 A) translated by N(0, 1.5^2) average to
    the base with widths sqrt(2^2 + 1.5^2) = 2.5 A: given that smeared base and the
    states' translations, the widths go back towards 2 A."""
    c, a, s = _blob()
    smeared = torch.sqrt(s ** 2 + 1.5 ** 2)
    amp = a * (s / smeared) ** 3                 # the same mass in the wider Gaussians
    g = torch.Generator().manual_seed(1)
    shifts = torch.randn(12, 1, 3, generator=g) * 1.5
    shifts = shifts - shifts.mean(0, keepdim=True)
    d = shifts.expand(12, len(c), 3)
    nc, na, ns, rep = unsmear(c, amp, smeared, d, torch.ones(12, len(c)), box=32, apix=1.0, steps=60)
    assert rep["misfit_after"] < 0.5 * rep["misfit_before"]
    ratio = float((ns / smeared).median())
    assert 0.7 < ratio < 0.92, ratio               # 2 / 2.5 = 0.8 expected
    # the refitted base is nearer the sharp one than the smeared base was
    from gaussianem.physics.render import render_volume

    def err(cc, aa, ss):
        return float(((render_volume(cc, aa, ss, 32, 1.0) - render_volume(c, a, s, 32, 1.0)) ** 2).sum())
    assert err(nc, na, ns) < 0.6 * err(c, amp, smeared)


def test_no_motion_leaves_the_base_as_it_is():
    c, a, s = _blob(seed=2)
    nc, na, ns, rep = unsmear(c, a, s, torch.zeros(4, len(c), 3), torch.ones(4, len(c)), box=32, apix=1.0, steps=10)
    assert rep["misfit_before"] < 1e-10
    assert torch.equal(nc, c) and torch.equal(na, a) and torch.equal(ns, s)
