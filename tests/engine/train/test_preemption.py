"""Runs that are stopped, killed and restarted lose nothing and end where an unbroken run
ends, bit for bit on the CPU (real processes, real signals; docs/cluster.md, "Preemption
and requeue").

Every run is ``gaussianem train`` on the tiny simulated set of ``tests/conftest.py``
(256 particles, box 32) for 3 epochs of 16 steps, one thread, two data-loading workers;
``straight`` is the unbroken run the others are compared with (weights, optimizer state
and latents, exactly).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from processes import children

TIMEOUT = 240
ARGS = ["--epochs", "3", "--batch-size", "16", "--zdim", "2", "--device", "cpu", "--threads", "1",
        "--num-workers", "2", "--progress", "json",
        "--consensus-rounds", "0"]     # one training (a round's resume: test_consensus_rounds.py)


def _cmd(sim, out, *extra) -> list[str]:
    return [sys.executable, "-m", "gaussianem.cli.main", "train", str(sim / "particles.star"),
            "--consensus", str(sim / "consensus.mrc"), "-o", str(out), *ARGS, *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _run(cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


def _until_step(cmd, epoch: int = 1):
    """Start ``cmd`` (its own session) and read its events until a step of ``epoch``."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    events = []
    for line in proc.stdout:
        if line.startswith("{"):
            events.append(json.loads(line))
            if events[-1]["event"] == "step" and events[-1]["epoch"] == epoch:
                return proc, events
    proc.kill()
    raise AssertionError(f"no step of epoch {epoch}: {proc.stderr.read()[-2000:]}")


def _finish(proc) -> tuple[int, list[dict], str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, [json.loads(x) for x in out.splitlines() if x.startswith("{")], err


def _same_run(a, b) -> None:
    ca = torch.load(a / "checkpoint.pt", weights_only=False)
    cb = torch.load(b / "checkpoint.pt", weights_only=False)
    assert ca["epoch"] == cb["epoch"] == 3 and ca["step"] == cb["step"] == 0
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(np.load(a / "latents.npz")["z"], np.load(b / "latents.npz")["z"])
    # the epochs' records (losses, health) as an unbroken run writes them
    ea = [r for r in map(json.loads, open(a / "log.jsonl")) if r["kind"] == "epoch"]
    eb = [r for r in map(json.loads, open(b / "log.jsonl")) if r["kind"] == "epoch"]
    assert [r["total"] for r in ea] == [r["total"] for r in eb]
    assert [r["health"] for r in ea] == [r["health"] for r in eb]


@pytest.fixture(scope="module")
def straight(tiny_sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    r = _run(_cmd(tiny_sim, out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("sig,to", [("SIGTERM", "all"), ("SIGUSR1", "main"), ("SIGTERM", "main, workers killed")])
def test_a_stop_signal_checkpoints_the_step_and_the_resumed_run_is_the_same(sig, to, tiny_sim, straight, tmp_path):
    """SIGTERM to every process (loader workers too, as scancel --full or a process group
    gets it), SIGUSR1 (SLURM's warning) to the main process alone, SIGTERM with the
    workers dying while the run shuts down: a checkpoint at the step, a ``stopped``
    event, a line that says so, exit 130; resumed, the run ends as the unbroken one."""
    out = tmp_path / "run"
    proc, _ = _until_step(_cmd(tiny_sim, out))
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    if to == "all":
        os.killpg(proc.pid, signal.Signals[sig])
    else:
        os.kill(proc.pid, signal.Signals[sig])
    if "killed" in to:                 # at once: the main process is still finishing its step
        for w in workers:
            os.kill(w, signal.SIGKILL)
    code, events, err = _finish(proc)
    assert code == 130, err[-3000:]
    stopped = [e for e in events if e["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["signal"] == sig, events[-3:]
    assert f"gaussianem train: stopped by {sig} at epoch {stopped[0]['epoch']}, step {stopped[0]['step']}" in err
    assert "DataLoader worker" not in err and "Traceback" not in err, err[-3000:]
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert (ck["epoch"] + 1, ck["step"]) == (stopped[0]["epoch"], stopped[0]["step"]) and ck["step"] > 0
    assert ck["in_epoch"]["steps"] == ck["step"]              # the epoch's sums so far
    assert not (out / "latents.npz").exists()
    r = _run(_cmd(tiny_sim, out, "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    _same_run(straight, out)
    starts = [r for r in map(json.loads, open(out / "attempts.jsonl")) if r["kind"] == "start"]
    assert [(s["resumed"], s["epoch"], s["step"]) for s in starts] == [(False, 1, 0), (True, ck["epoch"] + 1,
                                                                                     ck["step"])]


def test_a_killed_run_resumes_from_its_last_step_checkpoint(tiny_sim, straight, tmp_path):
    """Checkpoints every --checkpoint-minutes within an epoch (here about every step);
    SIGKILL to every process (a dead node: no handler runs) loses only the steps since
    the last one; ``--resume auto`` (a requeued job) continues and ends as the unbroken
    run. Only the latest --keep-checkpoints epoch checkpoints are kept."""
    out = tmp_path / "run"
    proc, _ = _until_step(_cmd(tiny_sim, out, "--checkpoint-minutes", "0.0005"), epoch=2)
    os.killpg(proc.pid, signal.SIGKILL)
    _finish(proc)
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 1 and ck["step"] > 0                   # within the second epoch
    log = [json.loads(x) for x in open(out / "log.jsonl")]
    assert sum(r["kind"] == "checkpoint" for r in log) >= 3
    r = _run(_cmd(tiny_sim, out, "--checkpoint-minutes", "0.0005", "--resume", "auto"))
    assert r.returncode == 0, r.stderr[-3000:]
    _same_run(straight, out)
    assert sorted(os.listdir(out / "checkpoints")) == ["epoch_002.pt", "epoch_003.pt"]
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_resume_refuses_another_command_and_a_finished_run_does_nothing(tiny_sim, straight, tmp_path):
    """Two different commands never mix in one folder: the options that differ are named,
    nothing in the folder changes; a finished run is left as it is."""
    before = {f: os.stat(straight / f).st_mtime_ns for f in os.listdir(straight) if os.path.isfile(straight / f)}
    r = _run(_cmd(tiny_sim, straight, "--resume", "auto", "--zdim", "3", "--lr", "0.01"))
    assert r.returncode == 1
    assert "holds a run trained with other settings: --lr 0.002 (this command: 0.01); --zdim 2 (this command: 3)" \
        in r.stderr, r.stderr
    r = _run(_cmd(tiny_sim, straight))                            # no --resume: refused
    assert r.returncode == 1 and "already holds a training run: use --resume" in r.stderr
    r = _run(_cmd(tiny_sim, straight, "--resume", "auto"))
    assert r.returncode == 0 and "has finished its 3 epoch(s): nothing to do" in r.stdout, r.stderr
    after = {f: os.stat(straight / f).st_mtime_ns for f in before}
    assert before == after
    # a finished run that failed its health checks stays failed when its job starts again
    failed = tmp_path / "failed"
    shutil.copytree(straight, failed, ignore=shutil.ignore_patterns("checkpoints"))
    rep = json.loads((failed / "health.json").read_text())
    (failed / "health.json").write_text(json.dumps({**rep, "status": "failed", "summary": "the latent is unused"}))
    r = _run(_cmd(tiny_sim, failed, "--resume", "auto"))
    assert r.returncode == 1 and "has finished but failed its health checks: the latent is unused" in r.stderr
