"""Gaussian sets: initialisation from maps and models, fitting, pruning, saving."""

import numpy as np
import pytest
import torch

from gaussianem.io.mrc import read_map
from gaussianem.model import gaussians
from gaussianem.model.gaussians import GaussianSet


def test_fit_to_simulated_consensus_map(tiny_sim):
    vol, apix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    g0 = gaussians.init_from_map(vol, apix)
    g, rep = gaussians.fit_to_map(g0, vol, apix, steps=150, fit_centres=True)
    assert rep.correlation > 0.95
    assert rep.masked_correlation > 0.9
    assert rep.n_gaussians == len(g) > 20
    # the fit improved on the initial guess
    assert rep.correlation > gaussians.evaluate_fit(g0, vol, apix).correlation


@pytest.mark.parametrize("method", ["kmeans", "grid"])
def test_init_methods_place_gaussians_inside_the_density(tiny_sim, method):
    vol, apix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    g = gaussians.init_from_map(vol, apix, n=40, method=method)
    vals = gaussians.sample_map(vol, apix, g.centres.numpy())
    assert np.median(vals) > gaussians.default_threshold(vol)
    if method == "kmeans":
        assert len(g) == 40


def test_init_errors():
    with pytest.raises(ValueError, match="cubic"):
        gaussians.init_from_map(np.zeros((4, 5, 6)), 1.0)
    with pytest.raises(ValueError, match="threshold"):
        gaussians.init_from_map(np.zeros((8, 8, 8)), 1.0, threshold=1.0)
    with pytest.raises(ValueError, match="unknown initialisation"):
        vol = np.zeros((8, 8, 8)); vol[3:5, 3:5, 3:5] = 1
        gaussians.init_from_map(vol, 1.0, method="random")


def test_pruning_removes_empty_gaussians():
    box, apix = 32, 2.0
    c = torch.tensor([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 30.0, 0.0]])
    vol = GaussianSet(c[:2], torch.ones(2), torch.full((2,), 3.0)).volume(box, apix).numpy()
    g = GaussianSet(c, torch.ones(3), torch.full((3,), 3.0))   # third one sits in empty space
    fitted, rep = gaussians.fit_to_map(g, vol, apix, steps=150, prune=0.05)
    assert len(fitted) == 2 and rep.n_pruned == 1


def test_save_load_round_trip(tmp_path):
    g = GaussianSet(torch.randn(5, 3), torch.rand(5), torch.rand(5) + 1)
    g.save(tmp_path / "g.pt")
    h = GaussianSet.load(tmp_path / "g.pt")
    assert torch.equal(g.centres, h.centres) and torch.equal(g.widths, h.widths)
    assert not list(tmp_path.glob(".tmp-*"))


def test_shape_validation():
    with pytest.raises(ValueError, match="centres"):
        GaussianSet(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3))


def test_default_count_follows_the_molecule_not_the_pixel_size():
    from gaussianem.model.gaussians import auto_count
    from gaussianem.sim.geometry import model_density
    from gaussianem.sim.testprotein import build_test_model
    model = build_test_model()                       # 99 residues
    n_res = len(np.unique(model.res_index))
    counts = {apix: auto_count(model_density(model, int(round(128 / apix)), apix, resolution=2 * apix), apix)
              for apix in (1.0, 2.0, 2.5)}
    assert all(0.9 * n_res <= c <= 1.5 * n_res for c in counts.values()), counts
    assert max(counts.values()) / min(counts.values()) < 1.15, counts


def test_threshold_leaves_weak_density_out_of_the_count():
    """--threshold is in the raw map's units: density that never reaches it (a weak blob
    far from the protein, like detergent) drops out of the count; the protein's envelope
    stays whole (a threshold well inside the protein does not shrink it)."""
    from gaussianem.model.gaussians import auto_count
    from gaussianem.sim.geometry import model_density
    from gaussianem.sim.testprotein import build_test_model
    apix = 2.0
    protein = model_density(build_test_model(), 64, apix, resolution=4.0)
    z, y, x = np.mgrid[:64, :64, :64]
    blob = 0.12 * np.exp(-((z - 10) ** 2 + (y - 10) ** 2 + (x - 52) ** 2) / (2 * 4.0 ** 2))
    alone, with_blob = auto_count(protein, apix), auto_count(protein + blob, apix)
    assert with_blob >= alone + 15                                  # the blob is counted ...
    assert auto_count(protein + blob, apix, threshold=-1.0) == with_blob
    for level in (0.15, 0.3):                                       # ... unless the level excludes it
        assert abs(auto_count(protein + blob, apix, threshold=level) - alone) <= 3
