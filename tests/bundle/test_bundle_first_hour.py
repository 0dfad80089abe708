"""What a structural biologist meets in the first hour (issue 16), in a real headless
ChimeraX session through real commands: nothing overwritten by surprise, sessions that
save and close cleanly, selections along any latent axis, training refused before it
starts when its inputs cannot work, unfinished runs said plainly, a played map series
that does not break later maps, and the licence in both wheels.

Fixtures: ``cx`` (embedded session, models closed after each test), ``tiny_sim`` and
``tiny_result`` (tests/conftest.py: a result trained for 2 epochs with the model, split
latent 2 + 1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from chimerax_fixture import REPO, logged, run


@pytest.fixture
def one_thread_engine(monkeypatch):
    """One torch thread in the engine process (2-CPU test machines)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def user_error(session, command, match):
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match=match) as e:
        run(session, command)
    return str(e.value)


def unfinished_copy(tiny_result, tmp_path):
    """A copy of the tiny run as if it had stopped a day ago before writing its latents
    (a log written moments ago would be a run that may still be training:
    test_bundle_run_state.py)."""
    from test_bundle_run_state import unfinished
    return unfinished(tiny_result, tmp_path, age_s=86400)


# ---------------------------------------------------------------------------- 1. overwriting

def test_subset_refuses_existing_file_unless_replace(cx, tiny_result, tmp_path):
    run(cx, f"gaussianem open {tiny_result}")
    out = tmp_path / "mid.star"
    out.write_text("my own file\n")
    user_error(cx, f"gaussianem subset pcRange 1,-1,1 save {out}", "already exists: add 'replace true'")
    assert out.read_text() == "my own file\n"
    info = run(cx, f"gaussianem subset pcRange 1,-1,1 save {out} replace true")
    assert info["n"] > 0 and out.read_text() != "my own file\n"


def test_subset_never_writes_over_the_runs_files(cx, tiny_sim, tiny_result, tmp_path):
    """The run's particle file and the run folder's own files are refused even with
    replace true, also when named through a link; they stay as they were."""
    run(cx, f"gaussianem open {tiny_result}")
    particles = tiny_sim / "particles.star"
    before = particles.read_bytes()
    text = user_error(cx, f"gaussianem subset cluster 0 k 2 save {particles} replace true",
                      "it is the particle file of the GaussianEM run")
    assert "never overwritten" in text
    link = tmp_path / "link.star"
    os.symlink(particles, link)
    user_error(cx, f"gaussianem subset cluster 0 k 2 save {link} replace true", "the particle file")
    config = tmp_path / "config_link.star"
    os.symlink(tiny_result / "config.json", config)
    config_before = (tiny_result / "config.json").read_bytes()
    user_error(cx, f"gaussianem subset cluster 0 save {config} replace true", "the run folder's config.json")
    assert particles.read_bytes() == before
    assert (tiny_result / "config.json").read_bytes() == config_before
    info = run(cx, f"gaussianem subset cluster 0 k 2 save {tmp_path / 'c0.star'}")   # a new file is fine
    assert info["n"] > 0


# ---------------------------------------------------------------------------- 5. latent parts

def test_subset_pc_range_along_a_latent_part(cx, tiny_result, tmp_path):
    res = run(cx, f"gaussianem open {tiny_result}")
    r = res.result
    counts = {}
    for part in ("all", "conf", "comp"):
        p = r.pca(part)
        s = p.scores[:, 0] / p.sd[0]
        counts[part] = int(((s >= 0.2) & (s <= 3)).sum())
        info = run(cx, f"gaussianem subset pcRange 1,0.2,3 latentPart {part} save {tmp_path / (part + '.star')}")
        assert info["n"] == counts[part]
        assert ("z_" + part in info["what"]) == (part != "all")
    assert len(set(counts.values())) > 1                          # the parts are different axes
    run(cx, f"gaussianem subset pcRange 1,0.2,3 latent comp save {tmp_path / 'abbrev.star'}")  # unambiguous
    user_error(cx, f"gaussianem subset cluster 0 latentPart conf save {tmp_path / 'x.star'}",
               "latentPart .* goes with pcRange")
    # show and trajectory take the same keyword (and still their older `part`)
    z = np.asarray(run(cx, "gaussianem show pc 1 value 2 latentPart conf"))
    np.testing.assert_allclose(z, r.pca("conf").latent(1, 2.0), atol=1e-6)
    np.testing.assert_allclose(run(cx, "gaussianem show pc 1 value 2 part comp"), r.pca("comp").latent(1, 2.0),
                               atol=1e-6)
    series, _ = run(cx, "gaussianem trajectory steps 3 latentPart conf")
    np.testing.assert_allclose(series.maps[0].full_matrix(),
                               r.volume(r.trajectory(steps=3, part="conf")[0], kind="deformed"), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- 6. model frame

def test_train_refuses_a_model_outside_the_map_before_starting(cx, tiny_sim, tmp_path):
    from chimerax.gaussianem.jobs.registry import registry
    s = run(cx, f"open {tiny_sim / 'model.pdb'}")[0]
    run(cx, f"move x 400 models #{s.id_string}")
    jobs_before = len(registry(cx).jobs)
    out = tmp_path / "never"
    cmd = (f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'consensus.mrc'} "
           f"outdir {out} epochs 1")
    text = user_error(cx, f"{cmd} model #{s.id_string}", "does not overlap the consensus map")
    assert f"#{s.id_string}" in text and "0% of residues inside the box" in text
    # the same with the model as a file, and with the consensus as an open map
    moved = tmp_path / "moved.pdb"
    run(cx, f"save {moved} models #{s.id_string}")
    user_error(cx, f"{cmd} model {moved}", "moved.pdb does not overlap the consensus map")
    v = run(cx, f"open {tiny_sim / 'consensus.mrc'}")[0]
    user_error(cx, f"gaussianem train {tiny_sim / 'particles.star'} consensus #{v.id_string} "
                   f"model #{s.id_string} outdir {out} epochs 1", "does not overlap")
    assert not out.exists()                                      # nothing written,
    assert len(registry(cx).jobs) == jobs_before                 # no job started


# ---------------------------------------------------------------------------- 8. unfinished runs

def test_unfinished_run_says_so_and_how_to_resume(cx, tiny_sim, tiny_result, tmp_path):
    path = unfinished_copy(tiny_result, tmp_path)
    res, text = logged(cx, f"gaussianem open {path}")
    assert "0 particles" not in text
    assert f"the GaussianEM run in {path} is unfinished: training stopped after epoch 2 of 2" in text
    resume = (f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'consensus.mrc'} "
              f"outdir {path} resume true")
    assert resume in text
    assert not res.volume.deleted                                 # the consensus Gaussians' map
    for command in ("gaussianem show particle 1", "gaussianem show", "gaussianem show pc 1 value 1",
                    "gaussianem trajectory", "gaussianem markers particle 2",
                    f"gaussianem subset cluster 0 save {tmp_path / 'x.star'}"):
        message = user_error(cx, command, "is unfinished: training stopped after epoch 2 of 2")
        assert resume in message, command
    run(cx, "gaussianem show z 0.1,0.2,0.3")                     # any latent still shows
    run(cx, "gaussianem markers")


def test_resume_with_nothing_to_train_says_so(cx, tiny_sim, tiny_result, tmp_path):
    from chimerax.gaussianem.jobs.registry import registry
    run_dir = tmp_path / "done"
    shutil.copytree(tiny_result, run_dir)
    base = (f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'consensus.mrc'} "
            f"outdir {run_dir} resume true")
    jobs_before = len(registry(cx).jobs)
    user_error(cx, base, "has already trained all 2 epochs it was asked for: resuming it would train nothing")
    user_error(cx, base + " epochs 2", "already trained 2 epochs, as many as the 2 asked for")
    text = user_error(cx, base + " epochs 1", "already trained 2 epochs, more than the 1 asked for")
    assert "epochs 12" in text                                   # how to train longer
    assert len(registry(cx).jobs) == jobs_before


def test_resume_of_a_run_with_all_its_epochs_writes_its_latents(cx, tiny_sim, tiny_result, tmp_path,
                                                                   one_thread_engine):
    """A run stopped after its last epoch but before its latents: resuming says it trains
    no more and only writes them; then the run opens with its particles."""
    path = unfinished_copy(tiny_result, tmp_path)
    job, text = logged(cx, f"gaussianem train {tiny_sim / 'particles.star'} consensus "
                           f"{tiny_sim / 'consensus.mrc'} outdir {path} resume true wait true")
    assert "resuming trains no more epochs, it only writes the particles' latents" in text
    assert job.state == "done", job.stderr_tail()
    assert not [e for e in job.events if e["event"] == "epoch"]  # no epoch trained
    assert (path / "latents.npz").exists()
    from chimerax.gaussianem import current_result
    assert current_result(cx).result.n_particles == 256


# ---------------------------------------------------------------------------- 4. sessions

def test_close_session_forgets_the_result(cx, tiny_result):
    from chimerax.gaussianem import current_result
    run(cx, f"gaussianem open {tiny_result}")
    run(cx, "gaussianem show particle 3")
    run(cx, "close session")
    assert current_result(cx) is None
    user_error(cx, "gaussianem show particle 4", "no GaussianEM result is open")
    assert cx.models.list() == []                                # no map rebuilt from the old result


def test_session_file_restores_the_live_result(cx, tiny_result, tmp_path):
    """Save a .cxs with a result shown at a particle, with markers; close; restore: the
    restored map, model and markers are the live ones, and show moves them in place."""
    from chimerax.gaussianem import current_result
    res = run(cx, f"gaussianem open {tiny_result}")
    run(cx, f"volume #{res.volume.id_string} level 0.05 color gold")
    run(cx, "gaussianem show particle 3")
    run(cx, "gaussianem markers")
    ids = (res.volume.id_string, res.structure.id_string, res.marker_set.id_string)
    run(cx, "gaussianem show particle 5")                        # the reference state, for later
    want_map = res.volume.full_matrix().copy()
    want_atoms = res.structure.atoms.coords.copy()
    want_markers = res.marker_set.atoms.coords.copy()
    run(cx, "gaussianem show particle 3")
    session_file = tmp_path / "gem.cxs"
    run(cx, f"save {session_file}")
    run(cx, "close session")
    assert current_result(cx) is None

    _, text = logged(cx, f"open {session_file}")
    r = current_result(cx)
    assert r is not None and r is not res and r.outdir == str(tiny_result)
    assert r.map_kind == "deformed"                              # the session's choice of maps, kept
    assert "GaussianEM: restored result" in text
    assert (r.volume.id_string, r.structure.id_string, r.marker_set.id_string) == ids
    np.testing.assert_array_equal(r.z, r.result.z[3])
    np.testing.assert_array_equal(r.live.reference, res.live.reference)   # the model's own latent, kept
    n_models = len(cx.models.list())
    run(cx, "gaussianem show particle 5")
    assert len(cx.models.list()) == n_models                     # no second map or model
    assert r.volume.id_string == ids[0] and [s.level for s in r.volume.surfaces] == [pytest.approx(0.05)]
    np.testing.assert_allclose(r.volume.full_matrix(), want_map, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.structure.atoms.coords, want_atoms, atol=1e-3)
    np.testing.assert_allclose(r.marker_set.atoms.coords, want_markers, atol=1e-4)


def test_session_of_a_moved_result_folder_still_opens(cx, tiny_result, tmp_path):
    from chimerax.gaussianem import current_result
    moved = tmp_path / "run"
    shutil.copytree(tiny_result, moved)
    run(cx, f"gaussianem open {moved}")
    run(cx, f"save {tmp_path / 'gem.cxs'}")
    run(cx, "close session")
    shutil.rmtree(moved)
    _, text = logged(cx, f"open {tmp_path / 'gem.cxs'}")
    assert "cannot be reopened" in text and "'gaussianem open' makes it current again" in text
    assert current_result(cx) is None
    assert len(cx.models.list()) >= 2                             # the map and model are restored


# ---------------------------------------------------------------------------- 10. map series

def test_played_series_then_a_new_result_in_a_fresh_chimerax(tiny_result, tmp_path, one_thread_engine):
    """The sequence of the report, in a fresh ChimeraX: a trajectory played, everything
    closed, the result opened again; no error in any "graphics update"."""
    from chimerax_fixture import run_chimerax
    script = tmp_path / "series.cxc"
    script.write_text("\n".join([
        f"gaussianem open {tiny_result}",
        "gaussianem trajectory steps 4",
        "vseries play #3 loop true",
        "wait 5",
        "close",
        f"gaussianem open {tiny_result}",
        "wait 3",
        "gaussianem show particle 3",
        "wait 3",
        "gaussianem trajectory steps 3",
        "wait 2",
    ]) + "\n")
    r = run_chimerax(script, cwd=tmp_path, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "KeyError" not in out and "Error processing trigger" not in out, out[-3000:]


def test_maps_added_to_an_empty_session_together_all_get_surfaces(cx, tiny_result):
    """ChimeraX 1.7 re-enters its volume update loop when the first surface of a session
    without models fits the camera; with two maps waiting, the outer loop then failed
    with KeyError (vset.remove) on every later frame. Once the bundle has made a map,
    the session's update manager tolerates it."""
    from chimerax.core.logger import StringPlainTextLog
    from chimerax.map import volume_from_grid_data
    from chimerax.map_data import ArrayGridData
    res = run(cx, f"gaussianem open {tiny_result}")
    array = res.result.consensus_volume()
    run(cx, "close")
    assert cx.models.list() == []
    with StringPlainTextLog(cx.logger) as log:
        maps = [volume_from_grid_data(ArrayGridData(array.copy(), step=(3.0,) * 3, name=n), cx,
                                      open_model=False) for n in ("a", "b")]
        cx.models.add(maps)
        run(cx, "wait 2")
        run(cx, "gaussianem show particle 2")                     # and later maps still draw
        run(cx, "wait 2")
    text = log.getvalue()
    assert "KeyError" not in text and "Error processing trigger" not in text, text[-2000:]
    assert all(len(m.surfaces) == 1 for m in maps)
    assert len(res.volume.surfaces) == 1


# ---------------------------------------------------------------------------- 15. licence

def _wheel_license(wheel) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if ".dist-info/" in n and os.path.basename(n) == "LICENSE"]
        assert names, f"no LICENSE in {wheel}: {z.namelist()}"
        return z.read(names[0])


def test_both_wheels_ship_the_mit_license(tmp_path):
    license_text = (REPO / "LICENSE").read_bytes()
    assert license_text.startswith(b"MIT License") and b"ChimeraX-GaussianEM authors" in license_text
    # the bundle wheel, as tools/build_bundle.py builds it
    from chimerax_fixture import _load_build_bundle
    build_bundle = _load_build_bundle()
    assert _wheel_license(build_bundle.build_wheel(tmp_path / "bundle")) == license_text
    # the engine wheel, built from a copy of engine/ (no build files left in the repository)
    engine = tmp_path / "engine"
    shutil.copytree(REPO / "engine", engine, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    code = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "engine_dist")], cwd=engine,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheel = tmp_path / "engine_dist" / r.stdout.strip().splitlines()[-1]
    assert _wheel_license(wheel) == license_text


def test_train_submitted_to_slurm_is_followed_and_opened(cx, tiny_sim, tmp_path, slurm_up):
    """'gaussianem train ... submit slurm' submits through the engine (sbatch, a real
    one-node SLURM), 'gaussianem jobs' follows the job through the run folder, and the
    result opens when the job has completed."""
    from chimerax.core.commands import run

    from chimerax.gaussianem import current_result
    out = tmp_path / "slurm_run"
    job = run(cx, f"gaussianem train {tiny_sim / 'particles.star'} consensus {tiny_sim / 'consensus.mrc'} "
                  f"outdir {out} epochs 1 zdim 2 batchSize 32 device cpu submit slurm wait true")
    try:
        assert job.slurm_id and job.state == "done", (job.state, job.error)
        rows = run(cx, "gaussianem jobs")
        assert rows[-1]["slurm_job"] == job.slurm_id and rows[-1]["state"] == "done"
        assert (out / "latents.npz").exists()
        assert current_result(cx).outdir == str(out)
    finally:
        import subprocess
        subprocess.run(["scancel", str(job.slurm_id)], capture_output=True, timeout=30)
