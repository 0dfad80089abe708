"""The simulator writes a consistent, readable dataset with its ground truth."""

import numpy as np
import pytest
import torch

from gaussianem.io.images import ParticleImages
from gaussianem.io.mrc import read_map
from gaussianem.io.particles import load_particles
from gaussianem.physics import fourier_slice


def test_outputs_are_readable_and_consistent(tiny_sim):
    data = load_particles(str(tiny_sim / "particles.star"))
    truth = np.load(tiny_sim / "ground_truth.npz")
    assert len(data) == 256 and data.box == 32
    assert np.allclose(data.apix, 3.0)
    assert np.allclose(data.rotations, truth["rotations"], atol=1e-4)
    assert np.allclose(data.shifts, truth["shifts"], atol=1e-3)
    assert np.allclose(data.ctf.defocus_u, truth["defocus_u"], atol=0.01)
    assert 0.5 < truth["present"].mean() < 0.9                     # absent fraction 0.3
    assert truth["motion"].min() >= 0 and truth["motion"].max() <= 1
    vol, apix, origin = read_map(str(tiny_sim / "consensus.mrc"))
    assert vol.shape == (32, 32, 32) and apix == pytest.approx(3.0)
    assert len(list((tiny_sim / "truth").glob("state_*.mrc"))) == 3


def test_images_follow_the_star_file_poses(tiny_sim):
    """Each image correlates with the projection of its own true state at its own pose
    and CTF, better than with another particle's pose: the star file tells the truth."""
    data = load_particles(str(tiny_sim / "particles.star"))
    imgs = ParticleImages(data)
    vol, apix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    idx = np.arange(24)
    ref = fourier_slice.project_volume(torch.from_numpy(vol), torch.from_numpy(data.rotations[idx]).float(),
                                       torch.from_numpy(data.shifts[idx]).float(), apix,
                                       ctf_params=data.ctf.as_tensor(idx))
    obs = torch.stack([imgs[int(i)]["image"] for i in idx])
    own = [np.corrcoef(obs[i].ravel(), ref[i].ravel())[0, 1] for i in range(24)]
    other = [np.corrcoef(obs[i].ravel(), ref[(i + 1) % 24].ravel())[0, 1] for i in range(24)]
    assert np.mean(own) > 0.5
    assert np.mean(own) > np.mean(other) + 0.3


def test_default_selections_on_a_single_chain_model(tmp_path):
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.io.models import write_model
    from gaussianem.sim.testprotein import build_test_model
    m = build_test_model(two_chains=False)
    write_model(str(tmp_path / "m.pdb"), m)
    out = simulate_from_model(str(tmp_path / "m.pdb"), str(tmp_path / "sim"),
                              SimulationSpec(n=32, box=48, apix=2.5, states=4, eval_bins=2))
    assert out["n"] == 32
    assert (tmp_path / "sim" / "model.pdb").exists()


def test_box_too_small_is_a_clear_error(tmp_path):
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.io.models import write_model
    from gaussianem.sim.testprotein import build_test_model
    write_model(str(tmp_path / "m.pdb"), build_test_model())
    with pytest.raises(ValueError, match="raise --box"):
        simulate_from_model(str(tmp_path / "m.pdb"), str(tmp_path / "sim"), SimulationSpec(n=8, box=16, apix=1.0))


def test_simulate_from_map(tiny_sim, tmp_path):
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_map
    out = simulate_from_map(str(tiny_sim / "consensus.mrc"), str(tmp_path / "msim"),
                            SimulationSpec(n=40, box=32, apix=3.0, states=4, eval_bins=2))
    data = load_particles(str(tmp_path / "msim" / "particles.star"))
    assert len(data) == 40 and out["box"] == 32
    t0, _, _ = read_map(str(tmp_path / "msim" / "truth" / "state_00.mrc"))
    t1, _, _ = read_map(str(tmp_path / "msim" / "truth" / "state_01.mrc"))
    assert not np.allclose(t0, t1)                   # the hinge moved density
