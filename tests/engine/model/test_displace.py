"""Carrying Gaussian displacements onto atoms: exact for rigid motions, clear errors."""

import numpy as np
import pytest
import torch

from gaussianem.io.models import bond_length_rms_change
from gaussianem.model.displace import AtomInterpolator, ModelOutsideMapError
from gaussianem.sim.geometry import default_hinge, hinge_rotation, rotation_matrix
from gaussianem.sim.testprotein import build_test_model


@pytest.fixture(scope="module")
def model():
    return build_test_model()


@pytest.mark.parametrize("angle", [10.0, 30.0])
def test_rigid_body_motion_is_carried_exactly(model, angle):
    c = model.residue_centres()
    R = rotation_matrix([0.3, 0.5, 0.8], angle)
    t = np.array([2.0, -1.0, 0.5])
    disp = torch.from_numpy(c @ R.T + t - c)
    moved = model.coords + AtomInterpolator(model.coords, c)(disp).numpy()
    assert np.abs(moved - (model.coords @ R.T + t)).max() < 1e-4
    # a plain average of displacements is measurably worse (the skinning matters)
    avg = model.coords + AtomInterpolator(model.coords, c, rigid=False)(disp).numpy()
    assert bond_length_rms_change(model, avg) > 10 * bond_length_rms_change(model, moved) + 1e-3


def test_atoms_follow_the_gaussians_of_their_own_state(model):
    """A model fitted at one end of a hinge, Gaussians at the other end (a consensus that
    is not the model's state): tied to the Gaussians displaced to the model's state (the
    offset), the atoms move by the hinge from there (exactly but where a neighbourhood
    straddles the hinge); tied to the undisplaced
    Gaussians, the moving domain's atoms follow the wrong neighbours."""
    c = model.residue_centres()
    mask, point, axis = default_hinge(model)
    cm = np.isin(np.arange(len(c)), np.unique(model.res_index[mask]))
    gauss = hinge_rotation(c, cm, point, axis, -20.0)             # the Gaussians' (consensus) state
    offset = c - gauss                                             # the model's state, from there
    far = hinge_rotation(c, cm, point, axis, 20.0)                 # a state 20 degrees beyond the model's
    target = hinge_rotation(model.coords, mask, point, axis, 20.0)
    interp = AtomInterpolator(model.coords, gauss, offset=offset)
    assert float(interp(torch.from_numpy(offset)).abs().max()) < 1e-9
    moved = model.coords + interp(torch.from_numpy(far - gauss)).numpy()
    assert np.sqrt(((moved - target) ** 2).sum(1).mean()) < 0.1     # exact but at the hinge (blended)
    plain = AtomInterpolator(model.coords, gauss)
    old = model.coords + (plain(torch.from_numpy(far - gauss)) - plain(torch.from_numpy(offset))).numpy()
    assert np.sqrt(((old - target)[mask] ** 2).sum(1).mean()) > 10 * np.sqrt(((moved - target)[mask] ** 2).sum(1).mean())


def test_hinge_keeps_bonds(model):
    c = model.residue_centres()
    mask, point, axis = default_hinge(model)
    res_moving = np.unique(model.res_index[mask])
    cm = np.isin(np.arange(len(c)), res_moving)
    moved_c = hinge_rotation(c, cm, point, axis, 15.0)
    disp = torch.from_numpy(moved_c - c)
    moved = model.coords + AtomInterpolator(model.coords, c)(disp).numpy()
    assert bond_length_rms_change(model, moved) < 0.05
    # batched: several latents at once give the same as one by one
    batch = AtomInterpolator(model.coords, c)(torch.stack([disp, 0 * disp]))
    assert torch.allclose(batch[0], AtomInterpolator(model.coords, c)(disp), atol=1e-5)
    assert float(batch[1].abs().max()) < 1e-6


def test_model_away_from_the_map_is_refused(model):
    with pytest.raises(ModelOutsideMapError, match="far.pdb does not overlap"):
        AtomInterpolator(model.coords + 1000.0, model.residue_centres(), name="far.pdb")


def test_bond_lengths_are_restored(model):
    """A plain (non-rigid) interpolation of a 25-degree hinge stretches bonds; kept
    bond lengths take that out without moving the model measurably."""
    from gaussianem.io.models import bond_pairs
    c = model.residue_centres()
    mask, point, axis = default_hinge(model)
    cm = np.isin(np.arange(len(c)), np.unique(model.res_index[mask]))
    disp = torch.from_numpy(hinge_rotation(c, cm, point, axis, 25.0) - c)
    interp = AtomInterpolator(model.coords, c, rigid=False, bonds=bond_pairs(model))
    moved = model.coords + interp(disp).numpy()
    stretched = bond_length_rms_change(model, moved)
    kept = interp.keep_bonds(moved)
    assert stretched > 0.05 and bond_length_rms_change(model, kept) < 0.01
    assert np.sqrt(((kept - moved) ** 2).sum(1).mean()) < 0.5 * np.sqrt((interp(disp).numpy() ** 2).sum(1).mean())
    assert np.abs(kept.mean(0) - moved.mean(0)).max() < 0.01          # nothing moves as a whole
    # batched and without bonds
    assert np.allclose(interp.keep_bonds(np.stack([moved, moved]))[1], kept)
    assert np.array_equal(AtomInterpolator(model.coords, c).keep_bonds(moved), moved)


def test_atoms_follow_the_gaussians_of_their_own_stretch_of_chain(model):
    """A domain that packs against a part that stays (here a copy of the protein as a
    second chain, 6 A away, and the rest of its own chain): with the model's chains and
    residues, each atom follows only the Gaussians of residues near it in its own chain,
    so the domain turns away whole; with every nearby Gaussian, its surface atoms are
    held back by the part that stays."""
    from gaussianem.io.models import AtomicModel
    from gaussianem.model.displace import sequence_weights
    c = model.residue_centres()
    mask, point, axis = default_hinge(model)
    width = np.ptp(model.coords[:, 0])
    shift = np.array([width + 6.0 - 2 * 3.0, 0.0, 0.0])         # chain B packs against chain A (~6 A gaps)
    two = AtomicModel(coords=np.concatenate([model.coords, model.coords + shift]),
                      elements=np.tile(model.elements, 2), atom_names=np.tile(model.atom_names, 2),
                      res_names=np.tile(model.res_names, 2), chain_ids=np.r_[["A"] * len(model), ["B"] * len(model)],
                      res_seq=np.tile(model.res_seq, 2), res_index=np.r_[model.res_index, model.res_index + model.n_residues()],
                      b_factors=np.tile(model.b_factors, 2), occupancies=np.tile(model.occupancies, 2))
    gauss = np.concatenate([c, c + shift])
    moving_res = np.zeros(len(gauss), bool)
    moving_res[np.unique(model.res_index[mask])] = True
    disp = torch.from_numpy(hinge_rotation(gauss, moving_res, point, axis, 25.0) - gauss)
    full = np.r_[mask, np.zeros(len(model), bool)]
    target = hinge_rotation(two.coords, full, point, axis, 25.0)
    # atoms of the moving domain more than the window from its hinge in sequence
    ends = np.flatnonzero(np.diff(moving_res[:model.n_residues()].astype(int)))
    far = full & (np.abs(two.res_index[:, None] - ends[None, :]).min(1) > 6)
    def rmsd(interp):
        moved = two.coords + interp(disp).numpy()
        return float(np.sqrt(((moved - target)[far] ** 2).sum(1).mean()))
    own = rmsd(AtomInterpolator(two.coords, gauss, residues=two.sequence))
    every = rmsd(AtomInterpolator(two.coords, gauss))
    assert own < 0.5 * every, (own, every)
    # the rule itself: each Gaussian belongs to its nearest atom's residue; an atom with no
    # Gaussian of its own stretch (the third, of chain C) keeps its weights
    atoms = np.array([[0.0, 0, 0], [10.0, 0, 0], [5.0, 0, 0]])
    w = sequence_weights(atoms, np.array([[0.5, 0, 0], [9.0, 0, 0]]), np.array([[0, 1], [1, 0], [0, 1]]),
                         np.array([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]]), np.array(["A", "B", "C"]), np.array([0, 1, 2]))
    assert np.allclose(w, [[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
