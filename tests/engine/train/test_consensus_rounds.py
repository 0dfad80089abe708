"""``--consensus-rounds``: a round trained first, its deformable reconstruction of all the
particles as the next consensus, the final training on it, and what a resume does."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gaussianem.analysis.result import load_result
from gaussianem.errors import TrainingError
from gaussianem.io.mrc import read_map
from gaussianem.analysis.consensus_rounds import round_dir, train
from test_train import cfg_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_one_round_then_the_final_training_on_its_map(tiny_sim, tmp_path):
    out = tmp_path / "rounds"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "engine"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gaussianem.cli.main", "train", str(tiny_sim / "particles.star"),
           "--consensus", str(tiny_sim / "consensus.mrc"), "-o", str(out), "--epochs", "1",
           "--batch-size", "32", "--zdim", "3", "--consensus-rounds", "1", "--progress", "json",
           "--downsample", "24",              # trained at 4 A/pixel: the rebuilt map must have the particles' 3 A
           "--device", "cpu", "--threads", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    messages = [e.get("text", "") for e in events]
    assert any("consensus round 1 of 1" in m for m in messages)
    assert any("consensus round 1 trained" in m for m in messages)
    done = [e for e in events if e["event"] == "done"]          # one job, one end: the final training's
    assert len(done) == 1 and done[0]["outdir"] == str(out)
    # a training start per training (the round's, the final's), none for the reconstruction
    assert [e["outdir"] for e in events if e["event"] == "start"] == [str(out / "round1"), str(out)]
    assert any("reconstructing 256 particles" in m for m in messages)
    rebuilt = out / "round1" / "consensus.mrc"
    assert (out / "round1" / "latents.npz").exists() and rebuilt.exists()
    summary = json.load(open(out / "round1" / "consensus_fsc.json"))
    assert summary["particles"] == 256 and "0 low-signal particles left out" in summary["selection"]
    # the rebuilt map is the particles' density on the consensus map's grid (reconstructed at
    # the training box and Fourier-padded to the map's): it correlates with the consensus map
    vol, apix, _ = read_map(str(rebuilt))
    cons, capix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    assert vol.shape == cons.shape and abs(apix - capix) < 1e-3
    assert np.corrcoef(vol.ravel(), cons.ravel())[0, 1] > 0.6
    # the final run trained on it, and says so where every reader looks
    cfg = json.load(open(out / "config.json"))["train"]
    assert os.path.abspath(cfg["consensus"]) == str(rebuilt) and cfg["consensus_rounds"] == 1
    # and started from the round's networks, not from scratch
    assert os.path.abspath(cfg["init_from"]) == str(out / "round1")
    assert any(m == f"networks initialised from {out / 'round1'}" for m in messages), messages
    assert json.load(open(out / "round1" / "config.json"))["train"]["init_from"] is None
    res = load_result(out)
    assert res.z.shape == (256, 3) and np.all(np.isfinite(res.z))
    # while a round trains, `gaussianem status` reports that round's progress
    from gaussianem.cluster.status import format_summary, summary
    mid = tmp_path / "mid"
    shutil.copytree(out / "round1", mid / "round1")
    t = summary(str(mid))["training"]
    assert t["stage"] == "consensus round 1" and t["epochs_done"] == 1 and t["finished"]
    assert "[consensus round 1]" in format_summary(summary(str(mid)))
    # the same command again: the folder holds a run
    r2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r2.returncode != 0 and "--resume" in r2.stderr
    # resumed when finished: nothing is trained again, the same map stays
    mtime = rebuilt.stat().st_mtime
    r3 = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert rebuilt.stat().st_mtime == mtime


def test_a_round_without_motion_rebuilds_nothing(tmp_path):
    from gaussianem.analysis.consensus_rounds import no_motion
    run = tmp_path / "r"
    run.mkdir()
    assert no_motion(str(run)) is None                          # no health report: nothing to say
    checks = [{"name": "motion_arrived", "status": "warning", "message": "the ends ask 1.3 times"},
              {"name": "motion_found", "status": "healthy", "message": "ok"}]
    (run / "health.json").write_text(json.dumps({"status": "warning", "checks": checks}))
    assert no_motion(str(run)) is None                          # a short motion is what rounds are for
    checks[1] = {"name": "motion_found", "status": "warning", "message": "half of the particles move by less"}
    checks.append({"name": "latent_signal", "status": "warning", "message": "the latent is mostly noise"})
    (run / "health.json").write_text(json.dumps({"status": "warning", "checks": checks}))
    assert no_motion(str(run)) == "half of the particles move by less; the latent is mostly noise"


def test_no_rounds_is_the_plain_training_and_counts_are_checked(tiny_sim, tmp_path):
    with pytest.raises(TrainingError, match="consensus-rounds"):
        cfg_for(tiny_sim, tmp_path / "x", consensus_rounds=-1)
    assert round_dir("/a/run", 2) == "/a/run/round2"
    out = train(cfg_for(tiny_sim, tmp_path / "plain", epochs=1, consensus_rounds=0))
    assert not os.path.exists(round_dir(out, 1)) and os.path.exists(os.path.join(out, "latents.npz"))
    # a run trained without rounds (an older default, or --consensus-rounds 0), resumed by the
    # default command, goes on as it was trained: no round is started beside it
    assert train(cfg_for(tiny_sim, out, epochs=2), resume=True) == out
    assert not os.path.exists(round_dir(out, 1))
    assert json.load(open(os.path.join(out, "config.json")))["train"]["consensus_rounds"] == 0
    assert [r["epoch"] for r in map(json.loads, open(os.path.join(out, "log.jsonl"))) if r.get("kind") == "epoch"][-1] == 2
    # and a new training there is refused at once, not after a round
    with pytest.raises(TrainingError, match="resume"):
        train(cfg_for(tiny_sim, out, epochs=1))
    assert not os.path.exists(round_dir(out, 1))
