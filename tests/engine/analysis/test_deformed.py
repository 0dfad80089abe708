"""The deformed consensus (``gaussianem generate --map deformed``, Result.volume(kind=
"deformed"), gaussianem.model.warp): the warp itself on known motions, and on simulated
data a deformed map closer to each true state than the map rendered from the Gaussians,
in the moving part and in the rest."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.ndimage import fourier_shift, gaussian_filter
from scipy.spatial import cKDTree

from gaussianem.analysis import evaluate as ev
from gaussianem.analysis.result import load_result
from gaussianem.cli.main import main
from gaussianem.errors import ResultError
from gaussianem.io.models import read_model
from gaussianem.io.mrc import read_map, write_map
from gaussianem.model.warp import ConsensusWarp
from gaussianem.physics import fsc as fsc_mod
from gaussianem.physics.render import render_volume
from gaussianem.sim.geometry import default_hinge, hinge_rotation


def _corr(a, b, mask=None):
    a, b = np.ravel(a), np.ravel(b)
    if mask is not None:
        a, b = a[np.ravel(mask)], b[np.ravel(mask)]
    return float(np.corrcoef(a, b)[0, 1])


def _fsc_auc(a, b, apix):
    return fsc_mod.auc(fsc_mod.fsc(a, b, apix)[1])


@pytest.fixture(scope="module")
def blobs():
    """A map made of 80 Gaussians plus unexplained detail, and the Gaussians."""
    rng = np.random.default_rng(0)
    box, apix = 32, 2.0
    c = torch.from_numpy(rng.uniform(-14, 14, (80, 3))).float()
    a = torch.from_numpy(rng.uniform(0.5, 1.5, 80)).float()
    s = torch.full((80,), 2.5)
    detail = gaussian_filter(rng.normal(size=(box,) * 3), 1.5, mode="wrap")       # smooth, periodic
    vol = render_volume(c, a, s, box, apix).numpy()
    vol = (vol * (1 + 0.3 * detail / detail.std())).astype(np.float32)
    return vol, apix, c, a, s


def test_identity_returns_the_consensus(blobs):
    vol, apix, c, a, s = blobs
    w = ConsensusWarp(vol, apix, c, a, s)
    out = w(torch.zeros(len(c), 3))[0].numpy()
    cover = (w.cover > 0.02 * w.cover.max()).numpy()
    assert cover.mean() > 0.1
    assert np.abs(out - vol)[cover].max() < 1e-4 * np.abs(vol).max()
    assert np.all(np.abs(out) <= np.abs(vol) + 1e-6)          # beyond the Gaussians: faded, never more
    # amplitude factors: half the Gaussians switched off take their density with them
    off = (c[:, 0] > 0).float()
    gone = w(torch.zeros(1, len(c), 3), (1 - off)[None])[0].numpy()
    own_off = render_volume(c[off > 0], a[off > 0], s[off > 0], vol.shape[0], apix).numpy()
    own_on = render_volume(c[off == 0], a[off == 0], s[off == 0], vol.shape[0], apix).numpy()
    only_off = (own_off > 0.05 * own_off.max()) & (own_on < 1e-3 * own_off.max())
    only_on = (own_on > 0.05 * own_on.max()) & (own_off < 1e-3 * own_on.max())
    assert np.abs(gone[only_off]).max() < 0.01 * np.abs(vol).max()
    assert np.allclose(gone[only_on], vol[only_on], atol=2e-3 * np.abs(vol).max())


def test_rigid_translation_moves_the_map_by_it(blobs):
    """A sub-voxel translation of every Gaussian moves the map by exactly that (against
    the exact Fourier shift), voxel axes in z, y, x order."""
    vol, apix, c, a, s = blobs
    w = ConsensusWarp(vol, apix, c, a, s)
    t = np.array([1.3, -0.7, 2.2])                            # x, y, z Angstrom
    out = w(torch.from_numpy(np.tile(t, (len(c), 1))).float())[0].numpy()
    ref = np.fft.ifftn(fourier_shift(np.fft.fftn(vol.astype(np.float64)), t[::-1] / apix)).real
    core = render_volume(c + torch.from_numpy(t).float(), a, s, vol.shape[0], apix).numpy()
    core = core > 0.2 * core.max()
    assert np.abs(out - ref)[core].max() < 0.05 * np.abs(vol).max()
    assert _corr(out, ref) > 0.999
    # on another grid (coarser voxels, same centre) the same map
    half = w(torch.from_numpy(np.tile(t, (len(c), 1))).float(), box=16, apix=4.0)[0].numpy()
    assert half.shape == (16, 16, 16) and _corr(half, out[::2, ::2, ::2]) > 0.99


def test_rigid_rotation_is_carried_exactly(blobs):
    """All Gaussians turned rigidly about a point: the map turns, without the shrinking a
    plain average of displacements would give."""
    from scipy.ndimage import affine_transform
    from gaussianem.sim.geometry import rotation_matrix
    vol, apix, c, a, s = blobs
    box = vol.shape[0]
    R = rotation_matrix([0.3, 0.5, 0.8], 12.0)
    p = np.array([2.0, -1.0, 3.0])
    moved = (c.numpy() - p) @ R.T + p
    out = ConsensusWarp(vol, apix, c, a, s)(torch.from_numpy(moved - c.numpy()).float())[0].numpy()
    Rz, p_idx = R.T[::-1, ::-1], (p / apix + box // 2)[::-1]
    ref = affine_transform(vol.astype(np.float64), Rz, offset=p_idx - Rz @ p_idx, order=3)
    assert _corr(out, ref) > 0.995
    plain = ConsensusWarp(vol, apix, c, a, s, rigid=False)(torch.from_numpy(moved - c.numpy()).float())[0].numpy()
    assert _corr(plain, ref) < _corr(out, ref)


def _regions(model, mask, point, axis, angle, box, apix, radius=6.0):
    """Voxels within ``radius`` A of the model at ``angle``: (moving part, rest)."""
    vox = np.indices((box,) * 3).reshape(3, -1)[::-1].T * apix          # xyz, map origin 0
    d, i = cKDTree(hinge_rotation(model, mask, point, axis, angle)).query(vox, distance_upper_bound=radius)
    near = np.isfinite(d)
    mov = near.copy()
    mov[near] = mask[i[near]]
    return mov.reshape((box,) * 3), (near & ~mov).reshape((box,) * 3)


def test_a_hinge_is_carried_rigidly(tiny_result, tiny_sim):
    """The true hinge motion of the simulator applied to the Gaussians carries the middle
    true state onto the end states: both parts land, the moving one as well as the rest."""
    r = load_result(tiny_result)
    truth = ev.load_truth(str(tiny_sim))
    model = read_model(tiny_sim / "model.pdb")
    mask, point, axis = default_hinge(model)
    box, apix = r.grid.box, r.grid.apix
    centres = r.base.centres.numpy().astype(np.float64)
    phys = r.grid.to_physical(centres)
    moving = mask[cKDTree(model.coords).query(phys)[1]]
    angles = (truth["eval_motion"] - 0.5) * float(truth["hinge_angle"])
    maps = [read_map(p)[0] for p in truth["truth_maps"]]
    mid = len(maps) // 2
    warp = ConsensusWarp(maps[mid], apix, r.base.centres, r.base.amplitudes, r.base.widths)
    for k in (0, len(maps) - 1):
        moved = r.grid.to_engine(hinge_rotation(phys, moving, point, axis, angles[k] - angles[mid]))
        out = warp(torch.from_numpy(moved - centres).float())[0].numpy()
        mov, rest = _regions(model, mask, point, axis, angles[k], box, apix)
        assert _corr(out, maps[k], mov) > 0.95, k
        assert _corr(out, maps[k], mov) > _corr(maps[mid], maps[k], mov) + 0.1
        assert _corr(out, maps[k], rest) > 0.98


def test_deformed_maps_match_the_true_states_better(tiny_trained, tiny_sim):
    """At every true conformation (median latent of its particles, as
    gaussianem.analysis.evaluate): the deformed consensus is closer to the true map than
    the map rendered from the Gaussians (FSC AUC, correlation; in the moving part and in
    the rest), and in the moving part closer than the undeformed consensus."""
    r = load_result(tiny_trained)
    truth = ev.load_truth(str(tiny_sim))
    model = read_model(tiny_sim / "model.pdb")
    mask, point, axis = default_hinge(model)
    cons = read_map(tiny_sim / "consensus.mrc")[0]
    box, apix = r.grid.box, r.grid.apix
    motion, present, levels = truth["motion"], truth["present"].astype(bool), truth["eval_motion"]
    half = 0.5 / (len(levels) - 1)
    for k, path in enumerate(truth["truth_maps"]):
        sel = present & (np.abs(motion - levels[k]) <= half * 0.5 + 1e-6)
        z = np.median(r.z[sel], axis=0)
        ref = read_map(path)[0]
        gauss, deformed = r.volume(z), r.volume(z, kind="deformed")
        mov, rest = _regions(model, mask, point, axis, (levels[k] - 0.5) * float(truth["hinge_angle"]), box, apix)
        assert _fsc_auc(deformed, ref, apix) > _fsc_auc(gauss, ref, apix) + 0.02, k
        assert _corr(deformed, ref) > _corr(gauss, ref) + 0.01, k
        assert _corr(deformed, ref, mov) > _corr(gauss, ref, mov), k
        assert _corr(deformed, ref, rest) > _corr(gauss, ref, rest) + 0.01, k
        if k in (0, len(levels) - 1):
            assert _corr(deformed, ref, mov) > _corr(cons, ref, mov) + 0.05, k


def test_result_api(tiny_result, tiny_sim, tmp_path):
    r = load_result(tiny_result)
    z = r.z[:2]
    assert np.array_equal(r.volume(z), r.volume(z, kind="gaussians"))     # the default is unchanged
    d = r.volume(z, kind="deformed")
    assert d.shape == (2, 32, 32, 32) and np.allclose(d, r.deformed_volume(z))
    assert np.allclose(r.deformed_volume(z[0]), d[0], atol=1e-6)
    assert r.deformed_volume(z[0], box=24).shape == (24, 24, 24)
    # the consensus map, in its own units
    cons = read_map(tiny_sim / "consensus.mrc")[0]
    assert _corr(d[0], cons) > 0.9 and 0.5 < d[0].max() / cons.max() < 2
    with pytest.raises(ResultError, match="unknown map kind"):
        r.volume(z, kind="blurred")
    # the consensus map moved away: a clear error for deformed maps only
    run = tmp_path / "run"
    shutil.copytree(tiny_result, run, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["consensus"] = str(tmp_path / "gone.mrc")
    (run / "config.json").write_text(json.dumps(cfg))
    moved = load_result(run)
    assert not moved.has_consensus_map()
    assert moved.volume(z[0]).shape == (32, 32, 32)
    with pytest.raises(ResultError, match="consensus map.*no longer exists"):
        moved.volume(z[0], kind="deformed")
    write_map(tmp_path / "gone.mrc", np.zeros((16, 16, 16), np.float32), 6.0)
    with pytest.raises(ResultError, match="is not the consensus map this run was trained on"):
        load_result(run).deformed_volume(z[0])


def test_generate_map_choice_and_force(tiny_result, tmp_path, capsys):
    out = tmp_path / "gen"
    r = load_result(tiny_result)
    base = ["generate", str(tiny_result), "--particle", "3", "5", "-o", str(out), "--no-model"]
    assert main(base) == 0                                          # default: deformed
    rep = json.loads((out / "generate.json").read_text())
    assert rep["map"] == "deformed" and rep["consensus"].endswith("consensus.mrc")
    assert np.allclose(read_map(out / "vol_001.mrc")[0], r.volume(r.z[5], kind="deformed"), atol=1e-6)
    assert "deformed consensus" in capsys.readouterr().out
    # a folder already holding generated files is refused, untouched
    before = (out / "vol_000.mrc").read_bytes()
    assert main(base + ["--map", "gaussians"]) == 1
    assert "already holds generated files" in capsys.readouterr().err
    assert (out / "vol_000.mrc").read_bytes() == before
    # --force replaces them (and removes higher-numbered ones)
    assert main(["generate", str(tiny_result), "--particle", "3", "-o", str(out), "--no-model", "--map",
                 "gaussians", "--force"]) == 0
    assert sorted(p.name for p in out.glob("vol_*")) == ["vol_000.mrc"]
    assert np.allclose(read_map(out / "vol_000.mrc")[0], r.volume(r.z[3]), atol=1e-5)
    assert json.loads((out / "generate.json").read_text())["map"] == "gaussians"
    # no consensus map: the default falls back with a note, --map deformed is an error
    run = tmp_path / "run"
    shutil.copytree(tiny_result, run, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["consensus"] = str(tmp_path / "gone.mrc")
    (run / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["generate", str(run), "--particle", "3", "-o", str(tmp_path / "g2"), "--no-model"]) == 0
    printed = capsys.readouterr().out
    assert "note:" in printed and "gone.mrc" in printed
    assert json.loads((tmp_path / "g2" / "generate.json").read_text())["map"] == "gaussians"
    assert main(["generate", str(run), "--particle", "3", "-o", str(tmp_path / "g3"), "--no-model",
                 "--map", "deformed"]) == 1
    assert "no longer exists" in capsys.readouterr().err
    assert not (tmp_path / "g3").exists() or not list((tmp_path / "g3").iterdir())


def test_a_model_at_an_end_state_finds_its_latent_and_lands_on_the_other_end(tiny_trained, tiny_sim):
    """An atomic model fitted at one end of the hinge (the simulator's model turned to the
    first true state) stands for that state: model_latent finds latents whose particles
    are at that end, and moving the model relative to it to the other end's latent lands
    closer to the true other end than moving it relative to the consensus does."""
    from gaussianem.analysis.reference import model_latent
    r = load_result(tiny_trained)
    truth = ev.load_truth(str(tiny_sim))
    model = read_model(tiny_sim / "model.pdb")
    mask, point, axis = default_hinge(model)
    levels, motion = truth["eval_motion"], truth["motion"]
    angle = lambda t: (t - 0.5) * float(truth["hinge_angle"])
    ends = (0, len(levels) - 1)
    models = {k: model.with_coords(hinge_rotation(model, mask, point, axis, angle(levels[k]))) for k in ends}
    z_end = {k: np.median(r.z[np.abs(motion - levels[k]) < 0.15], axis=0) for k in ends}
    for k, other in (ends, ends[::-1]):
        ml = model_latent(r, models[k])
        assert ml.distance < ml.consensus_distance
        near = np.argsort(((r.z - ml.z) ** 2).sum(1))[:20]
        assert abs(motion[near].mean() - levels[k]) < 0.3, (k, motion[near].mean())
        rel = r.displace_model(models[k], z_end[other], reference=ml.z).coords
        plain = r.displace_model(models[k], z_end[other]).coords
        target = models[other].coords
        rmsd = lambda x: float(np.sqrt(((x - target) ** 2).sum(1).mean()))
        assert rmsd(rel) < rmsd(plain), (k, rmsd(rel), rmsd(plain))
