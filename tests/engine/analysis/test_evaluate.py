"""The ground-truth metrics on latents whose answer is known by construction."""

import numpy as np

from gaussianem.analysis import evaluate as ev


def make_latents(n=600, seed=0):
    rng = np.random.default_rng(seed)
    motion = rng.uniform(0, 1, n)
    present = rng.uniform(size=n) < 0.7
    # presence: a large separation on axis 0; motion: a smaller spread on axis 1
    z = np.stack([4.0 * present + 0.1 * rng.normal(size=n), motion + 0.05 * rng.normal(size=n)], 1)
    return z, motion, present


def test_pc1_is_the_larger_axis_and_the_probe_finds_motion_anywhere():
    z, motion, present = make_latents()
    assert ev.motion_spearman(z, motion) < 0.2                 # PC1 = presence here
    assert ev.motion_spearman(z[:, 1:], motion) > 0.95
    assert ev.motion_probe(z, motion) > 0.95                    # linear read-out finds it on axis 1
    rotated = z @ np.array([[0.6, -0.8], [0.8, 0.6]])           # any rotation of the latent
    assert ev.motion_probe(rotated, motion) > 0.95
    noise = np.random.default_rng(1).normal(size=z.shape)
    assert ev.motion_probe(noise, motion) < 0.2                 # nothing to find: cross-validated, no fit to noise


def test_presence_accuracy():
    z, motion, present = make_latents()
    acc = ev.presence_accuracy(z, present)
    assert acc["linear_probe"] > 0.99 and acc["kmeans"] > 0.99
    acc = ev.presence_accuracy(z[:, 1:], present)               # the motion axis knows nothing of it
    assert acc["kmeans"] < 0.7
