"""Shared fixtures: a tiny simulated dataset and a tiny trained result (session scope).

Both are made through the engine's real entry points (the simulator and ``train``), so
every test downstream of them exercises the real file formats.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory):
    """256 particles, box 32, 3 A/pixel, from the built-in two-domain test protein."""
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.io.models import write_model
    from gaussianem.sim.testprotein import build_test_model
    d = tmp_path_factory.mktemp("sim")
    write_model(str(d / "input_model.pdb"), build_test_model())
    spec = SimulationSpec(n=256, box=32, apix=3.0, snr=1.0, seed=1, states=10, eval_bins=3)
    simulate_from_model(str(d / "input_model.pdb"), str(d), spec)
    return d


@pytest.fixture(scope="session")
def tiny_result(tiny_sim, tmp_path_factory):
    """A result trained for 2 epochs on ``tiny_sim`` with a split latent (2 + 1)."""
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(particles=str(tiny_sim / "particles.star"), consensus=str(tiny_sim / "consensus.mrc"),
                      outdir=str(out), model=str(tiny_sim / "model.pdb"), epochs=2, batch_size=32,
                      zdim_conf=2, zdim_comp=1, fit_steps=60, device="cpu", lowpass_epochs=1,
                      log_every=2)
    train(cfg)
    return out

