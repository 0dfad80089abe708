"""The ``gaussianem`` commands in a real headless ChimeraX session (no mocks).

Uses the shared fixtures: ``cx`` (embedded session, models closed after each test),
``tiny_sim`` (simulated dataset) and ``tiny_result`` (a result trained on it with the
model, split latent 2 + 1). Training tests start the real engine process.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from chimerax_fixture import logged, osmesa_available, run


def _read_mrc(path):
    import mrcfile
    with mrcfile.open(path, permissive=True) as m:
        origin = np.array([float(m.header.origin.x), float(m.header.origin.y), float(m.header.origin.z)])
        return np.asarray(m.data), float(m.voxel_size.x), origin


# ---------------------------------------------------------------------------- open

def test_open_puts_map_on_consensus_grid(opened, tiny_sim, tiny_result):
    from chimerax.atomic import AtomicStructure
    from chimerax.map import Volume

    from chimerax.gaussianem import current_result, open_result
    data, voxel, origin = _read_mrc(tiny_sim / "consensus.mrc")
    v = opened.volume
    assert isinstance(v, Volume) and not v.deleted
    assert v.data.size == tuple(reversed(data.shape))          # x, y, z
    assert v.data.step == pytest.approx((voxel,) * 3)
    assert v.data.origin == pytest.approx(tuple(origin))
    # the medoid particle's state, the deformed consensus (the run's consensus map is there)
    medoid = opened.result.medoid_index()
    assert opened.map_kind == "deformed" and opened.medoid == medoid
    np.testing.assert_array_equal(opened.z, opened.result.z[medoid])
    np.testing.assert_allclose(v.full_matrix(), opened.result.volume(opened.z, kind="deformed"), rtol=1e-5,
                               atol=1e-6)
    assert opened.result.z.shape == (256, 3)                   # latents loaded
    assert isinstance(opened.structure, AtomicStructure)       # the training model, opened
    assert opened.structure.name == "model.pdb"
    assert current_result(opened.session) is opened
    assert callable(open_result)


def test_open_result_from_python_with_open_model(cx, tiny_sim, tiny_result):
    from chimerax.gaussianem import open_result
    s = run(cx, f"open {tiny_sim / 'model.pdb'}")[0]
    r = open_result(cx, tiny_result, model=s)
    assert r.structure is s
    assert len(cx.models.list(type=type(s))) == 1               # not opened a second time


def test_bad_result_path_is_user_error_naming_it(cx, tmp_path):
    from chimerax.core.errors import UserError
    missing = tmp_path / "no_such_run"
    with pytest.raises(UserError, match=str(missing)):
        run(cx, f"gaussianem open {missing}")
    with pytest.raises(UserError, match="config.json is missing"):
        run(cx, f"gaussianem open {tmp_path}")
    with pytest.raises(UserError, match="no_such.star"):
        run(cx, f"gaussianem train {tmp_path / 'no_such.star'} consensus {tmp_path}")


# ---------------------------------------------------------------------------- show

def test_show_particle_moves_map_in_place_and_atoms(cx, opened, tiny_sim):
    v = opened.volume
    run(cx, f"volume #{v.id_string} level 0.05 color gold")
    rgba = tuple(v.surfaces[0].color)
    before = v.full_matrix().copy()
    coords0 = opened.structure.atoms.coords.copy()
    n_models = len(cx.models.list())

    z, text = logged(cx, "gaussianem show particle 3")

    np.testing.assert_array_equal(z, opened.result.z[3])
    assert "showing particle 3" in text
    assert opened.volume is v and not v.deleted                 # updated in place
    after = v.full_matrix()
    assert np.abs(after - before).max() > 1e-4
    np.testing.assert_allclose(after, opened.result.volume(opened.result.z[3], kind="deformed"), rtol=1e-5,
                               atol=1e-6)
    assert [s.level for s in v.surfaces] == [pytest.approx(0.05)]   # the user's level and colour
    assert tuple(v.surfaces[0].color) == rgba
    assert len(cx.models.list()) == n_models
    moved = opened.structure.atoms.coords
    assert np.abs(moved - coords0).max() > 1e-3
    from gaussianem.analysis.reference import model_latent
    from gaussianem.io.models import bond_length_rms_change, read_model
    model = read_model(tiny_sim / "model.pdb")
    ref = model_latent(opened.result, model).z                   # the state the model stands for
    np.testing.assert_allclose(opened.live.reference, ref, atol=1e-5)   # as generate --reference auto
    expected = opened.result.displace_model(model, z, reference=ref).coords   # the engine's, bonds kept
    np.testing.assert_allclose(moved, expected, atol=0.02)       # ChimeraX's bonds, the engine's by distance
    assert bond_length_rms_change(model, moved) < 0.01
    run(cx, "gaussianem show z " + ",".join(f"{v:.9g}" for v in ref))   # at its own latent: where it was
    np.testing.assert_allclose(opened.structure.atoms.coords, model.coords, atol=1e-3)


def test_moved_model_follows_the_map_where_it_is_shown(cx, tiny_sim, tiny_result):
    """A model placed by moving it (as fitmap does) is interpolated where it is shown
    relative to the map, and keeps its placement in trajectories."""
    s = run(cx, f"open {tiny_sim / 'model.pdb'}")[0]
    run(cx, f"turn z 10 models #{s.id_string} center 48,48,48")
    run(cx, f"move x 2 models #{s.id_string}")
    scene0 = s.atoms.scene_coords.copy()
    res = run(cx, f"gaussianem open {tiny_result} model #{s.id_string}")
    r = res.result
    z = run(cx, "gaussianem show particle 3")
    disp = r.decode(z)["displacement"][0]
    a1, a2 = s.bonds.atoms
    # the atoms follow the Gaussians of their own state and move relative to it
    interp = r.interpolator(scene0, bonds=np.stack([s.atoms.indices(a1), s.atoms.indices(a2)], 1),
                            reference=res.live.reference, residues=res.live.model.sequence)
    expected = interp.keep_bonds(scene0 + interp(disp).numpy())   # the map sits at identity
    np.testing.assert_allclose(s.atoms.scene_coords, expected, atol=1e-3)
    series, copy = run(cx, "gaussianem trajectory steps 3")
    assert copy.scene_position.is_identity() is False
    np.testing.assert_allclose(copy.scene_position.matrix, s.scene_position.matrix)


def test_show_by_z_pc_cluster_and_medoid(cx, opened):
    r = opened.result
    z = run(cx, "gaussianem show z 0.5,-0.25,1")
    np.testing.assert_allclose(z, [0.5, -0.25, 1.0])
    np.testing.assert_allclose(opened.volume.full_matrix(), r.volume(z, kind="deformed"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(cx, "gaussianem show pc 2 value -1.5"), r.pca().latent(2, -1.5))
    from gaussianem.analysis.clusters import kmeans_for_result
    np.testing.assert_allclose(run(cx, "gaussianem show cluster 1 k 3"),
                               kmeans_for_result(r, 3).centres[1])
    z, text = logged(cx, "gaussianem show")                      # a state particles have: the medoid
    np.testing.assert_array_equal(z, r.z[r.medoid_index()])
    assert f"showing the medoid particle {r.medoid_index()}" in text


def test_show_bad_latents_are_user_errors(cx, opened):
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="has 3 values, got 2"):
        run(cx, "gaussianem show z 1,2")
    with pytest.raises(UserError, match="out of range"):
        run(cx, "gaussianem show particle 256")
    with pytest.raises(UserError, match="pc and value go together"):
        run(cx, "gaussianem show pc 1")
    with pytest.raises(UserError, match="only one of"):
        run(cx, "gaussianem show particle 1 cluster 0")
    with pytest.raises(UserError, match="principal component 4 does not exist"):
        run(cx, "gaussianem show pc 4 value 1")


def test_show_recreates_a_closed_map(cx, opened):
    run(cx, f"close #{opened.volume.id_string}")
    run(cx, "gaussianem show particle 0")
    assert not opened.volume.deleted
    np.testing.assert_allclose(opened.volume.full_matrix(),
                               opened.result.volume(opened.result.z[0], kind="deformed"), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- trajectory, markers

def test_trajectory_gives_map_series_and_coordsets(cx, opened):
    series, copy = run(cx, "gaussianem trajectory pc 1 steps 5")
    assert len(series.maps) == 5 and series.name.endswith("PC1 trajectory")
    assert [m.parent for m in series.maps] == [series] * 5
    first, last = series.maps[0].full_matrix(), series.maps[-1].full_matrix()
    zs = opened.result.trajectory(pc=1, steps=5)              # the particles' 5th to 95th percentiles
    np.testing.assert_allclose(first, opened.result.volume(zs[0], kind="deformed"), rtol=1e-5, atol=1e-6)
    assert np.abs(last - first).max() > 1e-4
    assert list(copy.coordset_ids) == [1, 2, 3, 4, 5]
    assert copy.num_atoms == opened.structure.num_atoms
    c1, c5 = copy.coordset(1).xyzs, copy.coordset(5).xyzs
    assert np.abs(c5 - c1).max() > 1e-3
    run(cx, f"coordset #{copy.id_string} 3")                    # playable with coordset
    assert copy.active_coordset_id == 3


def test_markers_one_per_gaussian_follow_show(cx, opened):
    r = opened.result
    ms, text = logged(cx, "gaussianem markers")
    assert ms.num_atoms == len(r.base)
    shown = r.decode(opened.z)["centres"][0].numpy()             # the state shown: the medoid's
    np.testing.assert_allclose(ms.atoms.coords, r.grid.to_physical(shown), atol=1e-4)
    assert "coloured by displacement" in text
    run(cx, "gaussianem show particle 7")
    moved = r.grid.to_physical(r.decode(r.z[7])["centres"][0].numpy())
    np.testing.assert_allclose(ms.atoms.coords, moved, atol=1e-4)
    colors = ms.atoms.colors
    assert len({tuple(c) for c in colors}) > 1                   # a colour ramp, not one colour
    ms2 = run(cx, "gaussianem markers colorBy amplitude particle 7")
    assert ms2 is ms and ms.num_atoms == len(r.base)


# ---------------------------------------------------------------------------- subset

def test_subset_cluster_writes_star_with_cluster_count(cx, opened, tiny_sim, tmp_path):
    from gaussianem.analysis.clusters import kmeans
    from gaussianem.io.particles import load_particles
    out = tmp_path / "cluster0.star"
    info = run(cx, f"gaussianem subset cluster 0 k 2 save {out}")
    expected = int((kmeans(opened.result.z, 2).labels == 0).sum())
    assert 0 < info["n"] == expected < 256
    sub = load_particles(out, datadir=tiny_sim)          # images resolve to the originals
    assert len(sub) == expected


def test_subset_pc_range_and_file(cx, opened, tiny_sim, tmp_path):
    from gaussianem.io.particles import load_particles
    p = opened.result.pca()
    s = p.scores[:, 0] / p.sd[0]
    info = run(cx, f"gaussianem subset pcRange 1,-0.5,0.5 save {tmp_path / 'mid.star'}")
    assert info["n"] == int(((s >= -0.5) & (s <= 0.5)).sum())
    (tmp_path / "pick.txt").write_text("0 5 9\n")
    info = run(cx, f"gaussianem subset particles {tmp_path / 'pick.txt'} save {tmp_path / 'pick.star'}")
    assert info["n"] == 3 and len(load_particles(tmp_path / "pick.star", datadir=tiny_sim)) == 3
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="cluster 5 does not exist"):
        run(cx, f"gaussianem subset cluster 5 k 2 save {tmp_path / 'x.star'}")


def test_subset_motion_outliers_and_low_signal(cx, opened, tmp_path):
    """'outliers only' / 'outliers exclude': the particles moved over 3x the median
    particle's displacement (and 0.5 A), and all the others; together every particle once.
    'lowSignal exclude': all but the particles at half their optics group's scale."""
    from chimerax.core.errors import UserError
    res = opened.result
    mass = (res.base.amplitudes.abs() * res.base.widths ** 3).numpy()
    out = res.decode(res.z)
    w = mass * out["amp_factor"].numpy()              # the particle's own mass: absent parts do not count
    moved = np.sqrt(((out["displacement"].numpy() ** 2).sum(-1) * w).sum(1) / w.sum(1))
    n_out = int((moved > max(3 * np.median(moved), 0.5)).sum())
    info = run(cx, f"gaussianem subset outliers exclude save {tmp_path / 'clean.star'}")
    assert info["n"] == 256 - n_out and info["what"].startswith("all but the motion outliers")
    if n_out:
        assert run(cx, f"gaussianem subset outliers only save {tmp_path / 'out.star'}")["n"] == n_out
    else:                                  # nothing to save is said, not written
        with pytest.raises(UserError, match="no particles in the motion outliers"):
            run(cx, f"gaussianem subset outliers only save {tmp_path / 'out.star'}")
    with pytest.raises(UserError, match="one of clusters"):
        run(cx, f"gaussianem subset outliers only pcRange 1,-1,1 save {tmp_path / 'x.star'}")
    groups = dict(zip(res.intensity.groups, res.intensity.group_scale))
    from gaussianem.analysis.selection import source_particles
    scale = np.array([groups[int(g)] for g in source_particles(res).optics_group])
    n_low = int((np.asarray(res.intensity.particle) <= 0.5 * scale * (1 + 1e-4)).sum())
    info = run(cx, f"gaussianem subset lowSignal exclude save {tmp_path / 'signal.star'}")
    assert info["n"] == 256 - n_low and info["what"].startswith("all but the low-signal particles")


# ---------------------------------------------------------------------------- picture

@pytest.mark.skipif(not osmesa_available(), reason="OSMesa (libosmesa6) not installed")
def test_offscreen_png_of_generated_map_is_not_blank(cx, opened, tmp_path):
    from PIL import Image
    run(cx, "gaussianem show particle 3")
    run(cx, f"volume #{opened.volume.id_string} level 0.05 color gold")
    run(cx, f"hide #{opened.structure.id_string} models")
    run(cx, "view")
    png = tmp_path / "map.png"
    run(cx, f"save {png} width 200 height 200 supersample 1")
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert pixels.shape == (200, 200, 3)
    assert pixels.var() > 0


# ---------------------------------------------------------------------------- training jobs

@pytest.fixture
def one_thread_engine(monkeypatch):
    """The engine process inherits this environment: one torch thread keeps a 2-CPU test
    machine from oversubscribing (this process and the engine each want both CPUs)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_train_wait_opens_result(cx, tiny_sim, tmp_path, one_thread_engine):
    """An open map (origin moved) and an open model as inputs; the engine trains one
    epoch in its own process, and the result is opened when it is done."""
    from chimerax.map import Volume
    v = run(cx, f"open {tiny_sim / 'consensus.mrc'}")[0]
    run(cx, f"volume #{v.id_string} origin 3,0,-3")
    s = run(cx, f"open {tiny_sim / 'model.pdb'}")[0]
    out = tmp_path / "run"
    job = run(cx, f"gaussianem train {tiny_sim / 'particles.star'} consensus #{v.id_string} "
                  f"model #{s.id_string} outdir {out} epochs 1 zdim 2 downsample 16 batchSize 128 "
                  "device cpu wait true")
    assert job.state == "done" and job.returncode == 0
    # the default: a consensus round in OUTDIR/round1, then the final training on its map
    assert [e["event"] for e in job.events if e["event"] in ("start", "epoch", "done")] == \
        ["start", "epoch", "start", "epoch", "done"]
    assert [e["outdir"] for e in job.events if e["event"] == "start"] == [str(out / "round1"), str(out)]
    assert (out / "round1" / "consensus.mrc").exists()
    _, voxel, origin = _read_mrc(out / "consensus_input.mrc")    # the open map, saved
    assert voxel == pytest.approx(3.0) and origin == pytest.approx([3.0, 0.0, -3.0])
    assert (out / "model_input.pdb").exists()
    from chimerax.gaussianem import current_result
    res = current_result(cx)
    assert res.outdir == str(out) and res.result.z.shape == (256, 2)
    assert isinstance(res.volume, Volume) and not res.volume.deleted
    assert res.volume.data.origin == pytest.approx((3.0, 0.0, -3.0))
    assert res.structure is s                                    # the open model moves with it
    rows = run(cx, "gaussianem jobs")
    assert rows[-1]["id"] == job.id and rows[-1]["state"] == "done"


def test_train_coarse_to_fine_is_one_job(cx, tiny_sim, tmp_path, one_thread_engine):
    """fineGaussians: one job, two stages (OUTDIR/coarse, then OUTDIR); progress counts
    epochs over both and the result opens once. A run interrupted between the stages is
    seen as a run (not overwritten) and resumes with its own epochs."""
    out = tmp_path / "c2f"
    cmd = (f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'consensus.mrc'} "
           f"outdir {out} epochs 2 zdim 2 downsample 16 batchSize 128 fineGaussians 150 consensusRounds 0 "
           "device cpu wait true")
    job = run(cx, cmd)
    assert job.state == "done" and job.returncode == 0
    assert [(e["epoch"], e["epochs"]) for e in job.events if e["event"] == "epoch"] == [(1, 2), (2, 2)]
    assert [e["event"] for e in job.events].count("done") == 1
    from chimerax.gaussianem import current_result
    res = current_result(cx)
    assert res.outdir == str(out)
    from gaussianem.analysis.result import load_result
    assert len(res.result.base) > len(load_result(str(out / "coarse")).base)
    # between the stages: the fine stage's files gone, the plan and the coarse run left
    for f in ("checkpoint.pt", "config.json", "latents.npz", "log.jsonl"):
        os.remove(out / f)
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="already holds"):
        run(cx, cmd)
    job = run(cx, cmd.replace(" epochs 2", "") + " resume true")
    assert job.state == "done", job.stderr_tail()
    assert "--epochs" not in job.args                                # the engine keeps the plan's epochs
    assert [e["epochs"] for e in job.events if e["event"] == "epoch"] == [2]
    assert (out / "latents.npz").exists()


def test_stop_leaves_resumable_checkpoint(cx, tiny_sim, tiny_result, tmp_path, one_thread_engine):
    """Resume a copy of a finished run for many more epochs, stop it once it reports
    progress: the engine saves a checkpoint where it stopped and the job reads 'stopped'."""
    import torch
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_result, run_dir)
    ck = run_dir / "checkpoint.pt"
    before = torch.load(ck, weights_only=False)
    os.utime(ck, (0, 0))
    job = run(cx, f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'consensus.mrc'} "
                  f"outdir {run_dir} epochs 100 resume true")
    assert job.active
    deadline = time.time() + 120
    while not any(e["event"] == "step" for e in job.events):
        assert time.time() < deadline and not job.finished, job.stderr_tail()
        job.poll()
        time.sleep(0.05)
    assert run(cx, "gaussianem jobs")[-1]["state"] == "running"
    assert run(cx, f"gaussianem stop {job.id}") == [job.id]
    while not job.finished:                                      # poll until the process exits
        assert time.time() < deadline, job.stderr_tail()
        job.poll()
        time.sleep(0.05)
    assert job.returncode != 0 and os.path.getmtime(ck) > 0      # a new checkpoint was written
    after = torch.load(ck, weights_only=False)
    # the stop saved the position it reached (a later epoch, possibly mid-epoch): resumable
    assert (after["epoch"], after["step"]) > (before["epoch"], before["step"])
    assert after["epoch"] < 100
    assert run(cx, "gaussianem jobs")[-1]["state"] == "stopped"
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="not running"):
        run(cx, f"gaussianem stop {job.id}")


def test_train_failure_raises_engine_message(cx, tiny_sim, tmp_path, one_thread_engine):
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="GaussianEM training failed: .*model.pdb: not a readable MRC"):
        run(cx, f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'model.pdb'} "
                f"outdir {tmp_path / 'bad'} epochs 1 wait true")
    assert run(cx, "gaussianem jobs")[-1]["state"] == "failed"


# ---------------------------------------------------------------------------- the example script

def test_example_script_runs_in_chimerax(tiny_result, tmp_path, monkeypatch, one_thread_engine):
    from chimerax_fixture import REPO, run_chimerax
    monkeypatch.setenv("GAUSSIANEM_RESULT", str(tiny_result))
    monkeypatch.setenv("GAUSSIANEM_OUT", str(tmp_path))
    r = run_chimerax(REPO / "docs" / "example_script.py", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "saved" in r.stdout and (tmp_path / "cluster0.star").exists()
    if osmesa_available():
        assert (tmp_path / "particle1.png").stat().st_size > 0


def test_conformational_axis_of_a_split_latent(cx, tiny_result):
    """`part conf` moves along a principal component of z_conf only: the compositional
    part of the latent stays at its mean."""
    import numpy as np
    run(cx, f"gaussianem open {tiny_result}")
    z = np.asarray(run(cx, "gaussianem show pc 1 value 2 part conf"))
    from gaussianem.analysis.result import load_result
    res = load_result(tiny_result)
    assert np.allclose(z[2:], res.z.mean(0)[2:], atol=1e-5)
    assert not np.allclose(z[:2], res.z.mean(0)[:2])
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="component 3 does not exist"):
        run(cx, "gaussianem show pc 3 value 1 part conf")


# ---------------------------------------------------------------------------- run health

def test_open_reports_the_run_health(cx, tiny_result, tmp_path):
    """``gaussianem open`` logs the run's health (health.json); an unhealthy run is a
    warning naming what failed."""
    _, text = logged(cx, f"gaussianem open {tiny_result}")
    assert "GaussianEM run health:" in text
    run(cx, "close")
    bad = tmp_path / "unhealthy"
    shutil.copytree(tiny_result, bad)
    import json
    rep = json.loads((bad / "health.json").read_text())
    rep["status"], rep["summary"] = "failed", "failed: mean amplitude factor 0.01 (1 = the consensus' density)"
    (bad / "health.json").write_text(json.dumps(rep))
    from chimerax.core.logger import StringPlainTextLog
    with StringPlainTextLog(cx.logger) as log:
        run(cx, f"gaussianem open {bad}")
    assert "run health: failed: mean amplitude factor 0.01" in log.getvalue()


def test_train_that_diverges_fails_with_the_engine_reason(cx, tiny_sim, tmp_path, one_thread_engine):
    """A run that cannot recover (learning rate far too high) is a failed job with the
    engine's reason, not 'done'; health.json says failed."""
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="GaussianEM training failed: .*diverged"):
        run(cx, f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'consensus.mrc'} "
                f"outdir {tmp_path / 'diverges'} epochs 2 lr 300 consensusRounds 0 device cpu wait true")
    assert run(cx, "gaussianem jobs")[-1]["state"] == "failed"
    import json
    assert json.loads((tmp_path / "diverges" / "health.json").read_text())["status"] == "failed"


def test_train_takes_skip_consensus_check(cx):
    """The engine's consensus check can be overridden from ChimeraX, as its error says
    (``skipConsensusCheck true``, the engine's --skip-consensus-check)."""
    from gaussianem.train.config import command_line
    _, text = logged(cx, "usage gaussianem train")
    assert "skipConsensusCheck" in text, text
    assert command_line({"skip_consensus_check": True}) == ["--skip-consensus-check"]
    assert "cutGraph" in text, text                    # --cut-graph N, for domain motions
    assert command_line({"cut_graph": 3}) == ["--cut-graph", "3"]
    assert "consensusRounds" in text, text             # --consensus-rounds N, with the cut
    assert command_line({"consensus_rounds": 1}) == ["--consensus-rounds", "1"]
    assert "encoderLowpass" in text, text              # --encoder-lowpass A, for low SNR
    assert command_line({"encoder_lowpass": 10.0}) == ["--encoder-lowpass", "10.0"]
