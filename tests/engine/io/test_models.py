"""gaussianem.io.models (model I/O, bonds) and the models of gaussianem.sim it is used with (the test protein, hinge motion, molmap-like density)."""

import os

import gemmi
import numpy as np
import pytest

from gaussianem.io.models import AtomicModel, bond_length_rms_change, bond_pairs, read_model, write_model
from gaussianem.sim.geometry import default_hinge, default_removal, hinge_rotation, model_density
from gaussianem.sim.testprotein import build_test_model, helix_parameters


@pytest.fixture(scope="module")
def model():
    return build_test_model()


def _tiny_model(names, elements, coords, res_index=None, chain="A"):
    m = len(names)
    res_index = np.zeros(m, int) if res_index is None else np.asarray(res_index)
    return AtomicModel(coords=np.asarray(coords, float), elements=elements, atom_names=names,
                       res_names=["CYS"] * m, chain_ids=[chain] * m, res_seq=res_index + 1,
                       res_index=res_index, b_factors=np.zeros(m), occupancies=np.ones(m))


# --- the test model ---------------------------------------------------------------------

def test_build_test_model_layout(model):
    assert len(model) == 495 and model.n_residues() == 99
    assert model.chains() == ["A", "B"]
    assert set(model.res_names) == {"ALA"}
    m = model.masses()
    assert np.allclose((m[:, None] * model.coords).sum(0) / m.sum(), 0.0, atol=1e-9)
    assert np.linalg.norm(model.coords, axis=1).max() < 30.0        # within a 60 A sphere
    # Domain B (C-terminal third of chain A) sits above domain A along +z.
    mask, _, _ = default_hinge(model)
    assert model.coords[mask, 2].min() > model.coords[~mask, 2].max() - 1.0
    # Deterministic for a seed, different for another.
    assert np.array_equal(build_test_model().coords, model.coords)
    assert not np.allclose(build_test_model(seed=1).coords, model.coords)


def test_build_test_model_variants():
    one = build_test_model(n_helices_per_domain=2, helix_length=12, two_chains=False)
    assert one.chains() == ["A"]
    assert one.n_residues() == 2 * 12 + 2 * 6


def test_ideal_helix_geometry(model):
    ca = model.atom_names == "CA"
    first_helix = model.select("A", (1, 18))
    bb = np.stack([model.coords[first_helix & (model.atom_names == n)] for n in ("N", "CA", "C")],
                  axis=1)
    turn, rise, radius, _, _ = helix_parameters(bb)
    assert turn > 0                                                  # right-handed
    assert 360 / turn == pytest.approx(3.6, abs=0.06)
    assert rise == pytest.approx(1.5, abs=0.06)
    assert radius == pytest.approx(2.3, abs=0.03)
    # No two atoms of non-neighbouring residues closer than 2.9 A (no clashes).
    from scipy.spatial import cKDTree
    pairs = cKDTree(model.coords).query_pairs(2.9, output_type="ndarray")
    far = np.abs(np.diff(model.res_index[pairs], axis=1)[:, 0]) > 1
    assert not far.any()
    assert ca.sum() == model.n_residues()


# --- reading and writing ----------------------------------------------------------------

@pytest.mark.parametrize("ext, atol", [(".pdb", 1e-3), (".cif", 1e-6)])
def test_write_read_round_trip(model, tmp_path, ext, atol):
    path = tmp_path / f"bundle{ext}"
    write_model(path, model)
    back = read_model(path)
    assert back.path == str(path)
    assert np.allclose(back.coords, model.coords, atol=atol)
    for name in ("elements", "atom_names", "res_names", "chain_ids", "res_seq", "res_index"):
        assert np.array_equal(getattr(back, name), getattr(model, name)), name
    assert np.allclose(back.b_factors, model.b_factors, atol=0.005)
    assert np.allclose(back.occupancies, model.occupancies)
    assert os.listdir(tmp_path) == [path.name]                       # no temporary left


def test_write_uses_new_coords_and_keeps_structure(model, tmp_path):
    write_model(tmp_path / "a.cif", model)
    read = read_model(tmp_path / "a.cif")
    moved = read.with_coords(read.coords + [1.0, -2.0, 0.5])
    assert np.allclose(read.coords, model.coords, atol=1e-6)        # original untouched
    moved.b_factors = moved.b_factors + 1.0
    write_model(tmp_path / "b.pdb", moved)
    again = read_model(tmp_path / "b.pdb")
    assert np.allclose(again.coords, model.coords + [1.0, -2.0, 0.5], atol=1e-3)
    assert np.allclose(again.b_factors, model.b_factors + 1.0, atol=0.005)
    st = gemmi.read_structure(str(tmp_path / "a.cif"))
    assert [e.name for e in st.entities] == ["A", "B"]
    with pytest.raises(ValueError, match="extension"):
        write_model(tmp_path / "c.xyz", model)
    with pytest.raises(ValueError, match="coordinates of shape"):
        model.with_coords(np.zeros((3, 3)))


PDB_TEXT = """\
ATOM      1  N   GLY A   1       0.000   0.000   0.000  1.00 10.00           N
ATOM      2  CA  GLY A   1       1.458   0.000   0.000  1.00 10.00           C
ATOM      3  C   GLY A   1       2.009   1.420   0.000  1.00 10.00           C
ATOM      4  O   GLY A   1       1.251   2.390   0.000  1.00 10.00           O
ATOM      5  H   GLY A   1      -0.500  -0.800   0.000  1.00 10.00           H
ATOM      6  N   GLY A   2       3.332   1.536   0.000  1.00 10.00           N
ATOM      7  CA  GLY A   2       3.988   2.839   0.000  1.00 10.00           C
ATOM      8  C   GLY A   2       5.504   2.693   0.000  1.00 10.00           C
ATOM      9  O   GLY A   2       6.030   1.580   0.000  1.00 10.00           O
TER
HETATM   10 ZN    ZN A 101      10.000  10.000  10.000  1.00 20.00          ZN
HETATM   11  O   HOH A 201      12.000  10.000  10.000  1.00 30.00           O
END
"""


def test_read_filters_hydrogens_waters_ligands(tmp_path):
    path = tmp_path / "tiny.pdb"
    path.write_text(PDB_TEXT)
    m = read_model(path)
    assert list(m.atom_names) == ["N", "CA", "C", "O"] * 2
    assert m.n_residues() == 2 and list(m.res_seq) == [1] * 4 + [2] * 4
    assert len(bond_pairs(m)) == 7                                   # 3 + 3 + peptide bond
    everything = read_model(path, keep_hetatm=True, keep_hydrogens=True)
    assert len(everything) == 11 and "ZN" in everything.res_names
    # Writing a model read with hydrogens/ligands kept keeps them.
    write_model(tmp_path / "out.cif", everything)
    assert len(read_model(tmp_path / "out.cif", keep_hetatm=True, keep_hydrogens=True)) == 11


@pytest.mark.parametrize("name, text", [("garbage.pdb", "this is not a PDB file\n"),
                                        ("garbage.cif", "data_x\nloop_\n_a.b\n'unterminated\n"),
                                        ("empty.cif", "")])
def test_read_errors_name_the_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=name):
        read_model(path)


def test_read_missing_file(tmp_path):
    with pytest.raises(ValueError, match="nothere.pdb"):
        read_model(tmp_path / "nothere.pdb")


def test_only_waters_is_an_error(tmp_path):
    path = tmp_path / "water.pdb"
    path.write_text("HETATM    1  O   HOH A 201      12.000  10.000  10.000  1.00 30.00"
                    "           O\n")
    with pytest.raises(ValueError, match="water.pdb.*no atoms"):
        read_model(path)


# --- selections and geometry ------------------------------------------------------------

def test_select_and_residue_centres(model):
    assert model.select("B").sum() == 18 * 5
    assert model.select(["A", "B"]).all()
    assert model.select("A", (1, 18)).sum() == 18 * 5
    assert model.select(residues=(1, 1)).sum() == 10                 # residue 1 of A and B
    centres = model.residue_centres()
    assert centres.shape == (99, 3)
    first = model.res_index == 0
    assert np.allclose(centres[0], model.coords[first].mean(0))
    ca = model.residue_centres(use_ca=True)
    assert np.allclose(ca[0], model.coords[first & (model.atom_names == "CA")][0])


def test_bond_pairs_ideal_model(model):
    pairs = bond_pairs(model)
    # N-CA, CA-C, C=O, CA-CB per residue, plus a peptide bond inside each helix.
    n_peptide = 3 * 17 + 3 * 8 + 17
    assert len(pairs) == 4 * 99 + n_peptide
    assert np.all(pairs[:, 0] < pairs[:, 1])
    d = np.linalg.norm(model.coords[pairs[:, 0]] - model.coords[pairs[:, 1]], axis=1)
    assert d.min() > 1.2 and d.max() < 1.56
    assert bond_length_rms_change(model, model.coords) == 0.0


def test_bond_pairs_element_aware():
    # CB-SG 1.81 A (S: cutoff + 0.2), two hydrogens 1.75 A apart on CB (never H-H),
    # and C-H 1.09 A.
    m = _tiny_model(["CB", "SG", "HB2", "HB3", "CA"], ["C", "S", "H", "H", "C"],
                    [[0, 0, 0], [1.81, 0, 0], [-0.36, 0.875, 0.5], [-0.36, -0.875, 0.5],
                     [-0.5, 0, -1.44]])
    got = {tuple(p) for p in bond_pairs(m).tolist()}
    assert got == {(0, 1), (0, 2), (0, 3), (0, 4)}
    assert len(bond_pairs(m, cutoff=1.55)) == 3                      # CB-SG too long now
    # A disulfide between residues counts; other close atoms of different residues don't.
    ss = _tiny_model(["SG", "SG", "CB"], ["S", "S", "C"], [[0, 0, 0], [2.04, 0, 0], [3, 1.2, 0]],
                     res_index=[0, 1, 2])
    assert bond_pairs(ss).tolist() == [[0, 1]]


def test_hinge_rotation_is_rigid(model):
    mask, point, axis = default_hinge(model)
    xyz = hinge_rotation(model, mask, point, axis, 25.0)
    assert np.array_equal(xyz[~mask], model.coords[~mask])
    assert np.linalg.norm(xyz[mask] - model.coords[mask], axis=1).min() > 0.5
    pairs = bond_pairs(model)
    inside = pairs[mask[pairs[:, 0]] & mask[pairs[:, 1]]]
    assert len(inside) > 0
    assert bond_length_rms_change(model, xyz, inside) < 1e-9
    assert bond_length_rms_change(model, xyz) < 0.05
    # Positive angles open the hinge: the moving part leaves the rest.
    rest = model.coords[~mask].mean(0)
    before = np.linalg.norm(model.coords[mask].mean(0) - rest)
    assert np.linalg.norm(xyz[mask].mean(0) - rest) > before
    # Same result from coordinates; the inverse rotation restores them.
    assert np.allclose(hinge_rotation(model.coords, mask, point, axis, 25.0), xyz)
    assert np.allclose(hinge_rotation(xyz, mask, point, axis, -25.0), model.coords)
    assert np.linalg.norm(xyz, axis=1).max() < 32.0                   # still fits the box


def test_default_hinge_and_removal(model):
    mask, point, axis = default_hinge(model)
    chain_a_res = np.unique(model.res_index[model.chain_ids == "A"])
    moving_res = np.unique(model.res_index[mask])
    assert np.array_equal(moving_res, chain_a_res[-27:])             # C-terminal third of A
    assert np.linalg.norm(axis) == pytest.approx(1.0)
    v = model.coords[mask].mean(0) - model.coords[~mask].mean(0)
    assert abs(axis @ v) < 1e-9 * np.linalg.norm(v)
    assert np.linalg.norm(point - model.residue_centres()[chain_a_res[-28]]) < 10.0
    removal = default_removal(model)
    assert np.array_equal(removal, model.chain_ids == "B")
    assert not (removal & mask).any()
    assert default_hinge(model)[0].tolist() == mask.tolist()         # deterministic

    single = build_test_model(two_chains=False)
    h_mask, _, _ = default_hinge(single)
    r_mask = default_removal(single)
    assert h_mask.any() and r_mask.any() and not (h_mask & r_mask).any()
    assert np.unique(single.res_index[r_mask]).tolist() == list(range(12))   # N-terminal 15%


# --- density ----------------------------------------------------------------------------

@pytest.mark.parametrize("apix, resolution", [(1.5, None), (2.0, 6.0), (1.0, 3.0)])
def test_model_density_integral_and_centroid(model, apix, resolution):
    box = 64
    rho = model_density(model, box, apix, resolution)
    assert rho.shape == (box, box, box) and rho.dtype == np.float32
    z = model.atomic_numbers()
    total = rho.sum(dtype=np.float64) * apix ** 3
    assert total == pytest.approx(z.sum(), rel=0.01)
    grid = (np.arange(box) - box // 2) * apix
    w = rho.astype(np.float64)
    centroid = np.array([(w.sum((0, 1)) * grid).sum(), (w.sum((0, 2)) * grid).sum(),
                         (w.sum((1, 2)) * grid).sum()]) / w.sum()
    assert np.allclose(centroid, (z[:, None] * model.coords).sum(0) / z.sum(), atol=0.2)
    mass = model.masses()
    assert np.allclose(centroid, (mass[:, None] * model.coords).sum(0) / mass.sum(), atol=0.2)


def test_model_density_grid_convention():
    atom = _tiny_model(["C1"], ["C"], [[3.0, -2.0, 1.0]])
    rho = model_density(atom, 16, 1.0, resolution=2.0)
    # x is the last axis; (0, 0, 0) sits on voxel box // 2 = 8.
    assert np.unravel_index(rho.argmax(), rho.shape) == (9, 6, 11)
    shifted = model_density(atom, 16, 1.0, resolution=2.0, origin=(-1.0, -3.0, 0.0))
    assert np.unravel_index(shifted.argmax(), shifted.shape) == (1, 1, 4)
    assert rho.sum() == pytest.approx(6.0, rel=1e-5)                 # one carbon
    assert shifted.sum() == pytest.approx(6.0, rel=1e-3)             # a tail left the box
    # An atom outside the box contributes nothing; anisotropic box shapes are allowed.
    far = _tiny_model(["C1"], ["C"], [[100.0, 0.0, 0.0]])
    assert model_density(far, 16, 1.0).sum() == 0.0
    assert model_density(atom, (8, 12, 16), 1.0).shape == (8, 12, 16)
    # Plain coordinates with explicit weights give the same map; without, weight 1 each.
    assert np.array_equal(model_density(atom.coords, 16, 1.0, 2.0, weights=[6.0]), rho)
    assert model_density(atom.coords, 16, 1.0, 2.0).sum() == pytest.approx(1.0, rel=1e-5)


def test_model_density_large_model_keeps_all_electrons():
    # (its speed is reported by `make bench`, not asserted here)
    rng = np.random.default_rng(0)
    m = 20000
    crowd = _tiny_model(["C"] * m, ["C"] * m, rng.normal(scale=10.0, size=(m, 3)))
    rho = model_density(crowd, 128, 1.0, resolution=4.0)
    assert rho.sum() == pytest.approx(6.0 * m, rel=1e-4)


def test_read_keeps_first_model_and_conformer(tmp_path):
    path = tmp_path / "ensemble.pdb"
    path.write_text(
        "MODEL        1\n"
        "ATOM      1  N   GLY A   1       0.000   0.000   0.000  1.00 10.00           N\n"
        "ATOM      2  CA AGLY A   1       1.458   0.000   0.000  0.50 10.00           C\n"
        "ATOM      3  CA BGLY A   1       1.458   0.300   0.000  0.50 10.00           C\n"
        "ENDMDL\nMODEL        2\n"
        "ATOM      1  N   GLY A   1       5.000   0.000   0.000  1.00 10.00           N\n"
        "ENDMDL\nEND\n")
    m = read_model(path)
    assert np.allclose(m.coords, [[0, 0, 0], [1.458, 0, 0]])
    write_model(tmp_path / "out.pdb", m)
    assert len(read_model(tmp_path / "out.pdb")) == 2
