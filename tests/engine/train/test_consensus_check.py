"""The consensus map checked against the images before training: a map of the wrong hand,
turned, featureless or at the wrong pixel size stops training with what looks wrong (it
trained to exit 0 and 'healthy' before); the right map passes, at SNR 0.01 too."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from gaussianem.errors import TrainingError
from gaussianem.io.mrc import read_map
from gaussianem.io.particles import load_particles
from gaussianem.model.consensus_check import _magnified, _mirror, consensus_match


def _write_map(path, vol, apix):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(vol, np.float32))
        m.voxel_size = apix
    return str(path)


def _blob(vol):
    """A featureless consensus: a smooth ball of the map's mass and radius of gyration."""
    c = np.arange(vol.shape[0]) - vol.shape[0] // 2
    r2 = sum(np.square(g) for g in np.meshgrid(c, c, c, indexing="ij")).astype(np.float64)
    w = np.clip(vol, 0, None)
    radius = np.sqrt(5 / 3 * (w * r2).sum() / w.sum())
    ball = 1 / (1 + np.exp(np.sqrt(r2) - radius))
    return (ball * w.sum() / ball.sum()).astype(np.float32)


@pytest.fixture(scope="module")
def low_snr_sim(tmp_path_factory):
    """600 particles of the test protein at SNR 0.01 (box 32, 3 A/pixel)."""
    from gaussianem.io.models import write_model
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.sim.testprotein import build_test_model
    d = tmp_path_factory.mktemp("snr001")
    write_model(str(d / "input_model.pdb"), build_test_model())
    simulate_from_model(str(d / "input_model.pdb"), str(d),
                        SimulationSpec(n=600, box=32, apix=3.0, snr=0.01, seed=4, states=6, eval_bins=2))
    return d


@pytest.mark.parametrize("sim", ["tiny_sim", "low_snr_sim"])
def test_the_right_map_passes_and_wrong_ones_are_named(sim, request):
    d = request.getfixturevalue(sim)
    data = load_particles(d / "particles.star")
    vol, apix, _ = read_map(d / "consensus.mrc")
    right = consensus_match(vol, apix, data)
    assert right.problems() == [], right
    assert right.z_mirror > 10 and right.z_lowpass > 10
    mirrored = consensus_match(_mirror(vol), apix, data).problems()
    assert any("wrong hand" in p for p in mirrored), mirrored
    turned = consensus_match(np.ascontiguousarray(np.rot90(vol, 1, axes=(0, 1))), apix, data).problems()
    assert turned, "a map turned by 90 degrees passed"
    assert any("low-passed" in p for p in consensus_match(_blob(vol), apix, data).problems())
    big = consensus_match(_magnified(vol, 1.2), apix, data).problems()   # a wrong pixel size
    assert any("pixel size" in p for p in big), big


def test_training_stops_on_a_mirrored_map_unless_told(tiny_sim, tmp_path):
    from gaussianem.cli.main import main
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    vol, apix, _ = read_map(tiny_sim / "consensus.mrc")
    flipped = _write_map(tmp_path / "flipped.mrc", _mirror(vol), apix)
    kw = dict(particles=str(tiny_sim / "particles.star"), consensus=flipped, epochs=1, batch_size=64, zdim=1,
              fit_steps=10, device="cpu", num_gaussians=20, downsample=16, threads=1)
    with pytest.raises(TrainingError) as e:
        train(TrainConfig(outdir=str(tmp_path / "a"), **kw))
    msg = str(e.value)
    assert "flipped.mrc" in msg and "wrong hand" in msg and "--skip-consensus-check" in msg
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    train(TrainConfig(outdir=str(tmp_path / "b"), skip_consensus_check=True, **kw))     # told: trains
    assert (tmp_path / "b" / "latents.npz").exists()
    assert main(["train", kw["particles"], "--consensus", flipped, "-o", str(tmp_path / "c"), "--epochs", "1",
                 "--threads", "1", "--progress", "none"]) == 1
