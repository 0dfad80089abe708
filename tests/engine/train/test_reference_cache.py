"""The consensus projections read from train.step.ReferenceCache instead of rendered in
every step: the same losses, health statistics, Gaussian features and gradients, and a
new render whenever what they depend on changes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gaussianem.bench import real_step
from gaussianem.model.encoding import encoder_inputs
from gaussianem.train import step as step_mod
from gaussianem.train.step import ReferenceCache, compute_losses


@pytest.fixture(scope="module")
def pieces():
    _, p = real_step(6, 300, 32, "cpu", seed=2)
    p["batch"].noise = torch.randn(6, p["model"].cfg.zdim, generator=torch.Generator().manual_seed(3))
    return p


def _losses_and_grads(p, references: bool, index=None):
    model = p["model"]
    batch = dataclasses.replace(p["batch"], references=references)
    if index is not None:
        batch = dataclasses.replace(batch, index=index, images=batch.images[:len(index)],
                                    noise=batch.noise[:len(index)])
    model.zero_grad(set_to_none=True)
    total, terms, stats = compute_losses(model, batch, p["graph"], p["schedule"])
    total.backward()
    grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
    return total.detach(), terms, stats, grads


def _same(a, b, rtol=1e-5):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max().clamp_min(1e-30)))


def test_cached_step_equals_rendered_step(pieces):
    rendered = _losses_and_grads(pieces, False)
    cached = _losses_and_grads(pieces, True)
    assert ReferenceCache._of.get(pieces["batch"].phys) is not None
    _same(cached[0], rendered[0])
    for k in rendered[1]:
        _same(cached[1][k], rendered[1][k])
    for k in rendered[2]:
        _same(cached[2][k], rendered[2][k])
    assert rendered[3].keys() == cached[3].keys() and len(rendered[3]) > 10
    for k in rendered[3]:
        _same(cached[3][k], rendered[3][k], rtol=1e-4)


def test_features_and_reference_equal_rendering(pieces):
    """The encoder's inputs themselves (consensus projection and pooled residual
    correlations), for particles in another order than the cache was filled in."""
    model, b = pieces["model"], pieces["batch"]
    idx = torch.tensor([4, 1, 5])
    cache = ReferenceCache.of(b.phys, model, b.box)
    with torch.no_grad():
        emb = model.embed()
    ref0, f0 = encoder_inputs(model, b.images[idx], idx, b.phys, b.box, emb)
    ref1, f1 = encoder_inputs(model, b.images[idx], idx, cache, b.box, emb)
    _same(ref1, ref0, rtol=1e-6)
    _same(f1, f0, rtol=1e-5)


def test_rendered_again_when_the_base_or_the_scales_change(pieces):
    model, b = pieces["model"], pieces["batch"]
    cache = ReferenceCache.of(b.phys, model, b.box)
    first = cache.values
    assert ReferenceCache.of(b.phys, model, b.box).values is first          # nothing changed: kept
    saved = [t.clone() for t in (model.centres, model.amplitudes, model.widths)]
    try:
        with torch.no_grad():
            model.centres.copy_(saved[0])                                    # written, same values
        assert ReferenceCache.of(b.phys, model, b.box).values is first
        with torch.no_grad():
            model.centres.add_(0.7)                                          # --unsmear moves the base
        moved = ReferenceCache.of(b.phys, model, b.box).values
        assert moved is not first
        with torch.no_grad():
            want = b.phys.project(model.centres, model.amplitudes, model.widths, torch.arange(6), b.box)
        _same(moved, want, rtol=1e-6)
        old_scale = b.phys.scale
        b.phys.scale = old_scale * 2                                         # set_intensity
        try:
            _same(ReferenceCache.of(b.phys, model, b.box).values, 2 * moved, rtol=1e-6)
        finally:
            b.phys.scale = old_scale
    finally:
        with torch.no_grad():
            for t, s in zip((model.centres, model.amplitudes, model.widths), saved):
                t.copy_(s)


def test_budget_zero_turns_the_cache_off(pieces, monkeypatch):
    monkeypatch.setenv("GAUSSIANEM_REFERENCE_CACHE_GB", "0")
    b = pieces["batch"]
    assert ReferenceCache.of(b.phys, pieces["model"], b.box) is None
    assert step_mod.reference_budget(torch.device("cpu")) == 0
    rendered = _losses_and_grads(pieces, False)
    off = _losses_and_grads(pieces, True)
    assert torch.equal(off[0], rendered[0])
