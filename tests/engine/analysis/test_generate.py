"""Tests for ``gaussianem generate``: volumes on the consensus grid, displaced models,
and clear errors for bad inputs."""

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from gaussianem.analysis.outputs import write_models
from gaussianem.analysis.result import load_result
from gaussianem.cli.main import main
from gaussianem.io.models import bond_length_rms_change, read_model, write_model
from gaussianem.io.mrc import read_map
from gaussianem.model.displace import AtomInterpolator, ModelOutsideMapError
from gaussianem.sim.geometry import default_hinge, hinge_rotation


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_generate_z_rows_on_consensus_grid(tiny_result, tiny_sim, tmp_path):
    out = tmp_path / "gen"
    rows = [[0.0, 0.0, 0.0], [0.8, -0.5, 0.3], [-0.6, 0.4, -0.2]]
    argv = ["generate", str(tiny_result), "-o", str(out), "--no-model", "--map", "gaussians"]
    for z in rows:
        argv += ["--z", " ".join(map(str, z))]
    assert main(argv) == 0
    cons, apix, origin = read_map(tiny_sim / "consensus.mrc")
    r = load_result(tiny_result)
    for i, z in enumerate(rows):
        vol, vapix, vorigin = read_map(out / f"vol_{i:03d}.mrc")
        assert vol.shape == cons.shape
        assert vapix == pytest.approx(apix) and np.allclose(vorigin, origin)
        assert np.allclose(vol, r.volume(z), atol=1e-5 * np.abs(vol).max())   # input order kept
    assert not (out / "vol_003.mrc").exists()
    assert np.allclose(np.loadtxt(out / "z.txt", ndmin=2), rows)
    rep = json.loads((out / "generate.json").read_text())
    assert rep["volumes"] == ["vol_000.mrc", "vol_001.mrc", "vol_002.mrc"] and rep["models"] == []
    # A second run into the same folder (--force) leaves no volumes of the first behind.
    (out / "vol_0007.mrc").write_text("not ours")           # not our numbering: kept
    assert main(["generate", str(tiny_result), "-o", str(out), "--no-model", "--particle", "1", "--force"]) == 0
    assert sorted(p.name for p in out.glob("vol_*")) == ["vol_000.mrc", "vol_0007.mrc"]


def test_generate_keeps_a_shifted_origin(tiny_result, tmp_path):
    """A consensus map with a non-zero origin: generated maps carry the same origin."""
    run = tmp_path / "run"
    shutil.copytree(tiny_result, run, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["grid"]["origin"] = [12.0, -30.0, 45.0]
    (run / "config.json").write_text(json.dumps(cfg))
    np.save(tmp_path / "z.npy", np.zeros((2, 3), np.float32))
    assert main(["generate", str(run), "--z-file", str(tmp_path / "z.npy"), "-o", str(tmp_path / "g"),
                 "--no-model"]) == 0
    _, _, origin = read_map(tmp_path / "g" / "vol_001.mrc")
    assert np.allclose(origin, [12.0, -30.0, 45.0])
    # --box resamples the same extent about the same centre.
    assert main(["generate", str(run), "--pc", "1", "--steps", "2", "-o", str(tmp_path / "b"),
                 "--box", "24", "--no-model"]) == 0
    vol, apix, origin = read_map(tmp_path / "b" / "vol_000.mrc")
    centre = np.array([12.0, -30.0, 45.0]) + 16 * 3.0
    assert vol.shape == (24, 24, 24) and apix == pytest.approx(4.0)
    assert np.allclose(origin + 12 * apix, centre)


def test_zero_displacement_overlays_consensus(tiny_result, tiny_sim, tmp_path):
    r = load_result(tiny_result)
    cons, apix, _ = read_map(tiny_sim / "consensus.mrc")
    base = r.base.volume(r.grid.box, r.grid.apix).numpy()
    assert np.allclose(base, r.consensus_volume())
    assert _corr(r.consensus_volume(), cons) > 0.9
    # A generated map sits on the consensus grid: shifting it by a voxel only hurts.
    assert main(["generate", str(tiny_result), "--particle", "7", "-o", str(tmp_path / "g"),
                 "--no-model"]) == 0
    vol, _, _ = read_map(tmp_path / "g" / "vol_000.mrc")
    c0 = _corr(vol, cons)
    assert c0 > 0.8
    for axis in range(3):
        for shift in (-1, 1):
            assert _corr(np.roll(vol, shift, axis), cons) < c0


def test_rigid_hinge_keeps_bond_lengths(tiny_result, tiny_sim):
    """Gaussian displacements of a rigid hinge motion (the simulator's, up to its full
    +-15 degrees) carried onto the atoms keep covalent bonds within 0.05 A RMS."""
    r = load_result(tiny_result)
    model = read_model(tiny_sim / "model.pdb")
    mask, point, axis = default_hinge(model)
    atoms = r.grid.to_engine(model.coords)
    centres = r.base.centres.numpy().astype(np.float64)
    interp = AtomInterpolator(atoms, centres)
    moving = mask[cKDTree(atoms).query(centres)[1]]       # Gaussians on the moving domain
    assert 0 < moving.sum() < len(centres)
    for angle in (-15.0, -7.5, 7.5, 15.0):
        disp = hinge_rotation(centres, moving, r.grid.to_engine(point), axis, angle) - centres
        moved = model.coords + interp(torch.from_numpy(disp)).numpy()
        assert np.abs(moved - model.coords).max() > 1.0   # the motion is real
        assert bond_length_rms_change(model, moved) < 0.05, angle
    # The measure does catch a non-rigid field.
    noise = np.random.default_rng(0).normal(scale=1.5, size=centres.shape)
    moved = model.coords + interp(torch.from_numpy(noise)).numpy()
    assert bond_length_rms_change(model, moved) > 0.05


def test_generate_particle_model(tiny_result, tiny_sim, tmp_path, capsys):
    out = tmp_path / "gen"
    src = tiny_sim / "model.pdb"
    assert main(["generate", str(tiny_result), "--particle", "3", "--model", str(src), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bond-length RMS change" in printed
    a, b = read_model(src), read_model(out / "model_000.pdb")
    assert len(a) == len(b)
    for field in ("atom_names", "res_names", "chain_ids", "res_seq", "elements"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert np.allclose(a.b_factors, b.b_factors)
    r = load_result(tiny_result)
    rep = json.loads((out / "generate.json").read_text())
    ref = np.asarray(rep["model_reference"]["z"], dtype=np.float32)     # the state the model stands for
    expect = r.displace_model(a, r.particle_z(3), reference=ref)
    assert np.allclose(b.coords, expect.coords, atol=2e-3)   # PDB keeps 3 decimals
    assert "the model matches latent" in printed
    assert rep["models"][0]["file"] == "model_000.pdb"
    rms = rep["models"][0]["bond_length_rms_change"]
    assert f"{rms:.3f}" in printed
    # bonds keep their length to a small fraction of how far the atoms moved
    moved = np.sqrt(((b.coords - a.coords) ** 2).sum(1).mean())
    assert moved > 0.1 and 0 <= rms < 0.1 * moved
    assert (out / "vol_000.mrc").is_file()


def test_generate_cif_model_default_from_training(tiny_result, tiny_sim, tmp_path):
    r = load_result(tiny_result)
    assert r.default_model_path() is not None
    cif = tmp_path / "model.cif"
    write_model(cif, read_model(tiny_sim / "model.pdb"))
    models = write_models(r, str(cif), r.z[:2], str(tmp_path / "m"))
    assert [m["file"].rsplit("/", 1)[1] for m in models] == ["model_000.cif", "model_001.cif"]
    assert len(read_model(tmp_path / "m" / "model_001.cif")) == len(read_model(cif))
    # Without --model the training model is used.
    assert main(["generate", str(tiny_result), "--particle", "0", "-o", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "model_000.pdb").is_file()


def test_generate_bad_inputs(tiny_result, tiny_sim, tmp_path, capsys):
    def fails(*argv):
        assert main(["generate", str(tiny_result), "-o", str(tmp_path / "x"), *argv]) == 1
        return capsys.readouterr().err

    err = fails("--z", "0.1 0.2")
    assert "has 3 values, got 2" in err and err.count("\n") == 1
    err = fails("--particle", "256")
    assert "particle index 256 is out of range" in err and "0 to 255" in err
    far = read_model(tiny_sim / "model.pdb")
    far = far.with_coords(far.coords + 1000.0)
    write_model(tmp_path / "far.pdb", far)
    err = fails("--particle", "0", "--model", str(tmp_path / "far.pdb"))
    assert "does not overlap the Gaussians of the map" in err
    with pytest.raises(ModelOutsideMapError):
        load_result(tiny_result).displace_model(far, np.zeros(3))
    err = fails("--z", "1 2 x")
    assert "expected numbers" in err
    assert main(["generate", str(tmp_path / "missing"), "--particle", "0", "-o", str(tmp_path / "y")]) == 1
    assert "no such result folder" in capsys.readouterr().err
    assert not list(tmp_path.glob("x/vol_*.mrc"))          # nothing written on errors


def test_pca_of_one_part_of_a_split_latent(tiny_result):
    from gaussianem.errors import ResultError
    from gaussianem.analysis.result import load_result
    r = load_result(tiny_result)
    p = r.pca("conf")
    assert p.components.shape == (2, 3) and np.allclose(p.components[:, 2], 0)
    zs = r.trajectory(pc=1, steps=4, part="conf")
    assert np.allclose(zs[:, 2], r.z.mean(0)[2]) and not np.allclose(zs[0, :2], zs[-1, :2])
    assert r.pca("comp").components.shape == (1, 3)
    with pytest.raises(ResultError, match="unknown latent part"):
        r.pca("motion")


def test_generate_along_the_conformational_axis(tiny_result, tmp_path):
    out = tmp_path / "motion"
    assert main(["generate", str(tiny_result), "--pc", "1", "--part", "conf", "--steps", "3",
                 "-o", str(out), "--no-model"]) == 0
    z = np.loadtxt(out / "z.txt")
    assert z.shape == (3, 3) and np.allclose(z[:, 2], z[0, 2])
    assert len(list(out.glob("vol_*.mrc"))) == 3
