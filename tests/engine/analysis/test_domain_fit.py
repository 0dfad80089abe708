"""Rigid domains fitted to the particles (``analysis.domain_fit``, ``analysis.image_path``,
``analysis.domain_boundaries``, ``gaussianem generate --fit-domains``); the domains
themselves are tests/engine/analysis/test_domains.py's."""

import json

import numpy as np
import pytest

from gaussianem.analysis.domain_fit import (HELD_OUT_MIN, checked_fit, domain_count, fit_domains, fitted_models,
                                           own_state_shift, rotation_matrix)
from gaussianem.analysis import domain_fit
from gaussianem.analysis.domain_boundaries import _absorb_islands, boundaries, refine_boundaries, residue_chains
from gaussianem.analysis.image_path import ImagePath, image_path, path_coords
from gaussianem.analysis.state_particles import StateParticles
from gaussianem.analysis.state_particles import nearest_particles, usable_particles
from gaussianem.analysis.domains import Domains
from gaussianem.analysis.result import load_result
from gaussianem.analysis.selection import source_particles
from gaussianem.cli.main import main
from gaussianem.errors import InputError
from gaussianem.io.models import bond_length_rms_change, bond_pairs, read_model
from gaussianem.sim.geometry import default_hinge, hinge_rotation, rotation_matrix as axis_rotation
from gaussianem.sim.testprotein import build_test_model


def test_rotation_matrix_matches_an_axis_angle_rotation():
    import torch
    w = np.array([0.1, -0.3, 0.2])
    r = rotation_matrix(torch.tensor(w, dtype=torch.float64)).numpy()
    expect = axis_rotation(w / np.linalg.norm(w), np.degrees(np.linalg.norm(w)))
    assert np.allclose(r, expect, atol=1e-10)
    assert np.allclose(rotation_matrix(torch.zeros(3, dtype=torch.float64)).numpy(), np.eye(3))


def _hinge_case(result_dir, sim, min_angle):
    """The tiny set's hinge: (result, model, mask, point, axis, the present particles
    turned over ``min_angle``, the model at their mean angle, the true domains, the
    model's interpolator)."""
    r = load_result(result_dir)
    model = read_model(sim / "model.pdb")
    gt = np.load(sim / "ground_truth.npz")
    mask, point, axis = default_hinge(model)
    sel = np.flatnonzero(gt["present"].astype(bool) & (gt["angle"] > min_angle))
    true = hinge_rotation(model, mask, point, axis, float(gt["angle"][sel].mean()))
    lab = mask.astype(int)
    dom = Domains((np.bincount(model.res_index, lab) > 0).astype(int), lab)
    return r, model, mask, point, axis, sel, true, dom, r.interpolator(model.coords, bonds=bond_pairs(model))


def test_fit_domains_recovers_a_domain_rotation(tiny_result, tiny_sim):
    """The particles of one end of the hinge, and a model whose moving domain is 12
    degrees further: the rigid fit to the images brings it back."""
    r, model, mask, point, axis, sel, true, dom, interp = _hinge_case(tiny_result, tiny_sim, 10)
    start = hinge_rotation(true, mask, point, axis, 12.0)

    def rmsd(x, m):
        return float(np.sqrt(((x - true)[m] ** 2).sum(-1).mean()))
    fit = fit_domains(r, model, start, dom, r.z[sel[0]], interp, indices=sel, steps=60)
    assert rmsd(start, mask) > 2.0
    assert rmsd(fit.coords, mask) < 0.35 * rmsd(start, mask)
    assert rmsd(fit.coords, ~mask) < 0.5
    assert abs(fit.rotation_deg[1] - 12.0) < 3.0 and fit.rotation_deg[0] < 3.0
    assert fit.score > fit.score_start and fit.particles == len(sel)
    assert bond_length_rms_change(model, fit.coords) < 0.05
    with pytest.raises(InputError, match="particle indices"):
        fit_domains(r, model, start, dom, r.z[0], interp, indices=[len(r.z)])


def test_checked_fit_keeps_what_held_out_particles_confirm(tiny_result, tiny_sim):
    """The same particles: a domain 12 degrees off is fitted and confirmed by the half the
    fit did not see; a model already at their state gains nothing there, so the
    displaced model is kept as it is; too few particles to check keep it too."""
    r, model, mask, point, axis, sel, true, dom, interp = _hinge_case(tiny_result, tiny_sim, 6)
    assert len(sel) >= 2 * HELD_OUT_MIN

    def rmsd(x):
        return float(np.sqrt(((x - true)[mask] ** 2).sum(-1).mean()))
    off = checked_fit(r, model, hinge_rotation(true, mask, point, axis, 12.0), dom, r.z[sel[0]], interp,
                      indices=sel, steps=60)
    assert off.kept == "fitted" and off.held_out >= 3.0 and rmsd(off.coords) < 1.5
    right = checked_fit(r, model, true, dom, r.z[sel[0]], interp, indices=sel, steps=60)
    if right.kept == "displaced":
        assert right.held_out < 3.0 and rmsd(right.coords) < 0.05
    else:                                          # confirmed: then it stays where the particles are
        assert rmsd(right.coords) < 1.0
    few = checked_fit(r, model, true, dom, r.z[sel[0]], interp, indices=sel[:2 * HELD_OUT_MIN - 2], steps=5)
    assert few.kept == "displaced" and few.held_out is None and rmsd(few.coords) < 0.05


def test_checked_fit_starts_from_the_images_path_where_the_particles_prefer_it(tiny_result, tiny_sim):
    """A displaced model 12 degrees short of the particles' state and, as the other start,
    the model at that state (the images' path): the fit starts there and stays; a start 25
    degrees off the other way is not taken. The held-out check is still against the
    displaced model."""
    r, model, mask, point, axis, sel, true, dom, interp = _hinge_case(tiny_result, tiny_sim, 6)
    short = hinge_rotation(true, mask, point, axis, 12.0)

    def rmsd(x):
        return float(np.sqrt(((x - true)[mask] ** 2).sum(-1).mean()))
    good = checked_fit(r, model, short, dom, r.z[sel[0]], interp, indices=sel, steps=4, start=true)
    assert good.start == "path" and good.kept == "fitted" and good.held_out >= 3.0
    assert rmsd(good.coords) < 1.0 < rmsd(short)
    bad = checked_fit(r, model, short, dom, r.z[sel[0]], interp, indices=sel, steps=4,
                      start=hinge_rotation(true, mask, point, axis, -25.0))
    assert bad.start == "displaced"
    assert good.summary()["start"] == "path"


def test_domain_count_takes_the_splits_the_held_out_particles_confirm(tiny_result, tiny_sim):
    """One domain where a hinge moves: the hinge split is fitted to half of the far end's
    particles and confirmed on the other half, so it is taken; a further cut through the
    core (two pieces moving together) gains nothing there and is not."""
    r, model, mask, _, _, sel, _, _, interp = _hinge_case(tiny_result, tiny_sim, 6)
    res_mask = (np.bincount(model.res_index, mask.astype(int)) > 0).astype(int)
    core = np.flatnonzero(res_mask == 0)
    cut = res_mask.copy()
    cut[core[len(core) // 2:]] = 2
    ladder = [Domains(np.zeros_like(res_mask), np.zeros(len(model), int)), Domains(res_mask, res_mask[model.res_index]),
              Domains(cut, cut[model.res_index])]
    dom, judged = domain_count(r, model, ladder[0], ladder, r.z[sel[0]], model.coords, interp, sel, steps=40)
    assert [j["domains"] for j in judged] == [2, 3]
    assert judged[0]["taken"] and judged[0]["held_out_t"] >= 3.0, judged
    assert not judged[1]["taken"] and judged[1]["against"] == 2, judged
    assert dom.n == 2 and any(((dom.atom_labels == k) == mask).all() for k in range(dom.n))
    # too few particles to judge: the domains stay as they are, nothing judged
    assert domain_count(r, model, ladder[0], ladder, r.z[sel[0]], model.coords, interp, sel[:10]) == (ladder[0], [])


def test_own_state_shift_sees_particles_that_are_not_at_the_models_state(tiny_result, tiny_sim):
    """The model at the state of the particles of its latent stays; the same latent said
    to be a model turned 25 degrees further is pulled back by its particles, most of its
    way to an end state 30 degrees from it: over the 0.6 that makes --fit-domains write the
    displaced models (as when a latent's particles are a mixture)."""
    r, model, mask, point, axis, far, true, dom, _ = _hinge_case(tiny_result, tiny_sim, 6)
    zr = np.median(r.z[far], axis=0)
    shifts = []
    for extra in (0.0, 25.0):
        m = model.with_coords(hinge_rotation(true, mask, point, axis, extra))
        end = hinge_rotation(m, mask, point, axis, -30.0)
        path = ImagePath(far, np.zeros(len(far)), np.zeros(r.z.shape[1]), 0.0, 1.0, dom, end)
        interp = r.interpolator(m.coords, bonds=bond_pairs(m))
        shifts.append(own_state_shift(r, m, dom, zr, interp, path, steps=40, indices=far))
    assert shifts[0] < 0.2 and shifts[1] > domain_fit.OWN_STATE_MAX, shifts


def test_fit_domains_writes_the_displaced_models_when_the_own_state_moves(tiny_trained, tiny_sim, monkeypatch):
    """With the own-state limit below anything measured, every state is the plain
    displaced model, with the reason, and the log says so."""
    r = load_result(tiny_trained)
    model = read_model(tiny_sim / "model.pdb")
    interp = r.interpolator(model.coords, bonds=bond_pairs(model))
    from gaussianem.analysis.reference import model_latent
    ref = model_latent(r, model).z
    monkeypatch.setattr(domain_fit, "OWN_STATE_MAX", -1.0)
    said = []
    models, domains, fits = fitted_models(r, model, r.z[:2], interp, reference=ref, particles=48, steps=2,
                                          progress=said.append)
    assert domains.n >= 2
    assert all(f.kept == "displaced" and "own latent" in f.note for f in fits)
    moved = r.displace_model(model, r.z[:2], interpolator=interp, reference=ref)
    assert np.allclose(models[1].coords, moved[1].coords, atol=1e-3)
    assert any(line.startswith("warning: fitted to the particles of its own latent") for line in said)


def test_path_coords_moves_each_domain_by_a_multiple_of_its_motion():
    """s = 0 is the model, s = 1 the end state, s = 0.5 and s = 1.5 the hinge at half and
    one and a half times its angle; the fixed domain stays."""
    model = build_test_model()
    mask, point, axis = default_hinge(model)
    end = hinge_rotation(model, mask, point, axis, 20.0)
    lab = mask.astype(int)
    dom = Domains((np.bincount(model.res_index, lab) > 0).astype(int), lab)
    assert np.allclose(path_coords(model, dom, end, 0.0), model.coords)
    assert np.allclose(path_coords(model, dom, end, 1.0), end, atol=1e-6)
    for s in (0.5, 1.5, -1.0):
        assert np.allclose(path_coords(model, dom, end, s), hinge_rotation(model, mask, point, axis, 20.0 * s),
                           atol=1e-6)


def test_image_path_places_particles_by_their_images(tiny_result, tiny_sim):
    """Each particle's place on the path from the model to the hinge's far end follows its
    true angle; a state at the end of the latent's range takes particles from the end of
    the images' range, and the latent read-out is a least-squares fit."""
    r = load_result(tiny_result)
    model = read_model(tiny_sim / "model.pdb")
    gt = np.load(tiny_sim / "ground_truth.npz")
    mask, point, axis = default_hinge(model)
    lo, hi = float(gt["angle"].min()), float(gt["angle"].max())
    start = hinge_rotation(model, mask, point, axis, lo)
    end = hinge_rotation(model, mask, point, axis, hi)
    lab = mask.astype(int)
    dom = Domains((np.bincount(model.res_index, lab) > 0).astype(int), lab)
    interp = r.interpolator(start, bonds=bond_pairs(model))
    path = image_path(r, model.with_coords(start), dom, end, interp, None, max_particles=200)
    assert len(path.indices) == 200 and np.all(np.diff(path.indices) > 0)
    present = gt["present"].astype(bool)[path.indices]
    true = (gt["angle"][path.indices] - lo) / (hi - lo)
    assert np.corrcoef(path.s[present], true[present])[0, 1] > 0.7
    a = np.c_[np.ones(len(path.s)), r.z[path.indices]]
    assert np.allclose(a @ np.r_[path.intercept, path.slope], np.linalg.lstsq(a, path.s, rcond=None)[0] @ a.T)
    read = r.z[path.indices] @ path.slope
    top = r.z[path.indices[np.argmax(read)]]
    bottom = r.z[path.indices[np.argmin(read)]]
    assert path.target(top, r.z) >= np.quantile(path.s, 0.99)         # the ends of the latent's order
    assert path.target(bottom, r.z) <= np.quantile(path.s, 0.01)      # are the ends of the images' range
    chosen = path.select(r, top, 20)
    assert len(chosen) == 20 and set(chosen) <= set(path.indices)
    place = dict(zip(path.indices, path.s))
    assert np.mean([place[i] for i in chosen]) > np.median(path.s)


def test_image_path_usable_only_when_the_latent_reads_it():
    p = ImagePath(np.arange(3), np.zeros(3), np.zeros(2), 0.0, 0.1)
    assert not p.usable and ImagePath(np.arange(3), np.zeros(3), np.zeros(2), 0.0, 0.5).usable


def test_boundaries_move_to_where_the_images_put_them(tiny_result, tiny_sim):
    """A hinge whose found boundary sits 8 residues inside the moving domain (as a decoded
    field blurred across the interface puts it): the particles of the far end, with each
    domain at its rigid motion, move it at least halfway back (at 3 A/pixel the residues
    next to the axis move under a pixel); a boundary already right stays within three."""
    r = load_result(tiny_result)
    model = read_model(tiny_sim / "model.pdb")
    gt = np.load(tiny_sim / "ground_truth.npz")
    mask, point, axis = default_hinge(model)
    sel = np.flatnonzero(gt["present"].astype(bool) & (gt["angle"] > 10))
    end = hinge_rotation(model, mask, point, axis, float(gt["angle"][sel].mean()))
    true_res = (np.bincount(model.res_index, mask.astype(int)) > 0).astype(int)
    chains = residue_chains(model)
    (cut,) = boundaries(true_res, chains)
    interp = r.interpolator(model.coords, bonds=bond_pairs(model))
    state = StateParticles(r, model, r.z[sel[0]], interp, indices=sel)
    inside = 8 if true_res[cut + 1] == 1 else -8                    # towards the moving side
    shifted = true_res.copy()
    lo, hi = sorted((cut + 1, cut + 1 + inside))
    shifted[lo:hi] = true_res[cut]
    for labels, start, within in ((shifted, cut + inside, 4), (true_res, cut, 3)):
        found = refine_boundaries(r, model, Domains(labels, labels[model.res_index]), end, state)
        (move,) = found.moves
        assert move["after"] == start and abs(move["now_after"] - cut) <= within, move
        assert move["score"] >= move["score_found"]
        assert boundaries(found.domains.residue_labels, chains) == [move["now_after"]]
        assert found.coords.shape == model.coords.shape
    assert found.moved() == abs(move["now_after"] - cut)


def test_runs_left_short_between_moved_boundaries_join_the_neighbour_the_images_prefer():
    """Six residues left between two boundaries that moved towards each other (a moving
    part's stretch stuck with the core) go to the neighbouring domain the score prefers;
    a short run at a chain's start and runs of ten or more stay."""
    chains = np.array(["A"] * 46 + ["B"] * 16)
    labels = np.array([0] * 20 + [1] * 6 + [2] * 20 + [1] * 4 + [0] * 12)
    calls = []

    def prefers_two(lab):
        calls.append(lab.copy())
        return float((lab == 2).sum())
    out = _absorb_islands(labels, chains, prefers_two)
    assert (out[20:26] == 2).all() and (out[:20] == 0).all() and (out[26:46] == 2).all()
    assert (out[46:] == labels[46:]).all()                 # chain B's first run is at the chain's start
    assert len(calls) == 2                                 # the two neighbours of the one island
    out = _absorb_islands(labels, chains, lambda lab: -float((lab == 2).sum()))
    assert (out[20:26] == 0).all()
    long = np.array([0] * 20 + [1] * 10 + [0] * 16)
    assert (_absorb_islands(long, np.array(["A"] * 46), prefers_two) == long).all()


def test_nearest_particles(tiny_result):
    r = load_result(tiny_result)
    near = nearest_particles(r, r.z[5], 10)
    assert near[0] == 5 or np.allclose(r.z[near[0]], r.z[5])
    d = np.linalg.norm(r.z - r.z[5], axis=1)
    assert d[near].max() <= np.sort(d)[9] + 1e-6
    usable = np.ones(len(r.z), bool)
    usable[near[:5]] = False                           # left out: never chosen, the next ones instead
    near2 = nearest_particles(r, r.z[5], 10, usable)
    assert not set(near2) & set(near[:5]) and len(near2) == 10
    assert d[near2].max() <= np.sort(d[usable])[9] + 1e-6
    with pytest.raises(InputError, match="no particle is left"):
        nearest_particles(r, r.z[5], 10, np.zeros(len(r.z), bool))


def test_usable_particles_leave_out_only_a_runs_junk(tiny_result, noise_run):
    """A clean run keeps every particle; a run whose images are all noise has its
    low-signal particles left out (here: over 5% of them, so the rule applies)."""
    ok, note = usable_particles(load_result(tiny_result))
    assert ok.all() and note == ""
    r = load_result(noise_run)
    ok, note = usable_particles(r)
    low = r.intensity.low_signal(np.asarray(source_particles(r).optics_group))
    if low.mean() > 0.05:
        assert not ok[low].any() and "low-signal" in note
    else:
        assert ok[low].all()


def test_generate_fit_domains(tiny_trained, tiny_sim, tmp_path, capsys):
    out = tmp_path / "fit"
    src = tiny_sim / "model.pdb"
    assert main(["generate", str(tiny_trained), "--particle", "3", "--model", str(src), "--fit-domains",
                 "--fit-particles", "32", "--fit-steps", "5", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rigid domains:" in printed
    assert "did not match the held-out half of its 32 particles" in printed and "under 40 particles" in printed
    assert "particles placed along the domains' path by their images" in printed
    rep = json.loads((out / "generate.json").read_text())
    assert rep["fit_domains"] == {"particles": 32, "steps": 5, "sort": "images"}
    m = rep["models"][0]
    assert m["fit"]["selection"].startswith("images (R^2") or "too low to use" in printed
    assert m["fit"]["particles"] == 32 and len(m["fit"]["rotation_deg"]) == m["domains"]["domains"]
    assert m["fit"]["kept"] == "displaced" and m["fit"]["held_out_t"] is None    # 32 are too few to check
    a, b = read_model(src), read_model(out / "model_000.pdb")
    assert len(a) == len(b) and bond_length_rms_change(a, b.coords) < 0.1
    assert main(["generate", str(tiny_trained), "--particle", "3", "--no-model", "--fit-domains", "-o",
                 str(tmp_path / "x")]) == 1
    assert "--fit-domains and --no-model exclude each other" in capsys.readouterr().err
    assert main(["generate", str(tiny_trained), "--particle", "3", "--fit-domains", "--fit-particles", "0",
                 "-o", str(tmp_path / "x")]) == 1
    assert "--fit-particles and --fit-steps must be at least 1" in capsys.readouterr().err
