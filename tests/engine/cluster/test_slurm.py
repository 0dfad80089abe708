"""``gaussianem train --submit slurm``, ``status`` and ``stop`` against a real SLURM.

The session fixture runs tools/setup_slurm.sh (as root it installs Debian's slurmctld,
slurmd, slurm-client and munge and starts a one-node cluster on this machine; see
docs/cluster.md) and skips these tests, with the script's reason, where SLURM cannot be
set up (no root, no apt-get, no network ...). GAUSSIANEM_TEST_SLURM=0 skips them too.
Every wait has a time limit and every job a test submitted is cancelled at the end.
About a minute on two cores once SLURM is installed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gaussianem.cluster import template
from gaussianem.io.rundir import RunDir

ROOT = Path(__file__).resolve().parents[3]
CLI_TIMEOUT = 60              # one gaussianem command (plus its --wait)
TINY = ["--batch-size", "32", "--zdim", "2", "--device", "cpu", "--threads", "1"]


@pytest.fixture
def jobs():
    """Job ids submitted by a test; whatever is still queued or running is cancelled after it."""
    ids: list[str] = []
    yield ids
    for j in ids:
        subprocess.run(["scancel", j], capture_output=True, timeout=30)


def gem(*args, timeout=CLI_TIMEOUT, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "gaussianem.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, f"gaussianem {' '.join(map(str, args))}: {proc.stdout}\n{proc.stderr}"
    return proc


def submit(sim, run, *extra, jobs) -> dict:
    proc = gem("train", sim / "particles.star", "--consensus", sim / "consensus.mrc", "-o", run, *TINY, *extra,
               "--submit", "slurm")
    rec = json.loads((run / "slurm.json").read_text())
    jobs.append(rec["job_id"])
    assert f"submitted SLURM job {rec['job_id']}" in proc.stdout
    return rec


def status(run, wait=None) -> dict:
    args = ["status", run, "--json"] + (["--wait", wait, "--poll", 1] if wait else [])
    return json.loads(gem(*args, timeout=(wait or 0) + CLI_TIMEOUT).stdout)


def test_submitted_training_completes(slurm_up, tiny_sim, tmp_path, jobs):
    run = tmp_path / "run"
    rec = submit(tiny_sim, run, "--epochs", "1", "--time", "10:00", jobs=jobs)
    script = Path(rec["script"]).read_text()
    assert "#SBATCH --time=10:00" in script and "--partition" not in script and "--gres" not in script
    cmd = rec["command"]                                  # the same training, as a plain command
    assert shlex.join(cmd) in script and cmd[1:4] == ["-m", "gaussianem.cli.main", "train"]
    assert cmd[-2:] == ["--progress", "json"] and "--submit" not in cmd and "--time" not in cmd
    s = status(run, wait=150)
    assert s["slurm"]["state"] == "COMPLETED", s
    assert s["training"]["finished"] and s["training"]["epochs_done"] == 1
    z = RunDir(run).latents()["z"]
    assert z.shape == (256, 2) and np.isfinite(z).all()
    out = Path(rec["output"]).read_text()
    assert '"event": "done"' in out                      # --progress json went to the job's output
    text = gem("status", run).stdout
    assert f"job {rec['job_id']}: COMPLETED" in text and "finished" in text
    # the job has ended: stop says so and changes nothing
    assert "already ended (COMPLETED)" in gem("stop", run).stdout


def test_stop_checkpoints_cancels_and_resumes(slurm_up, tiny_sim, tmp_path, jobs):
    run = tmp_path / "long"
    rec = submit(tiny_sim, run, "--epochs", "100", jobs=jobs)
    deadline = time.monotonic() + 120
    while not RunDir(run).has_checkpoint():               # in the training loop: an epoch done
        assert time.monotonic() < deadline, f"no checkpoint after 120 s: {gem('status', run).stdout}"
        time.sleep(0.5)
    proc = gem("stop", run)
    assert f"scancel --signal=TERM --full {rec['job_id']}" in proc.stdout
    s = status(run, wait=90)
    assert s["slurm"]["state"] == "CANCELLED", s
    assert s["slurm"]["stopped"] is not None            # training saw SIGTERM and saved its checkpoint
    assert RunDir(run).has_checkpoint() and not RunDir(run).finished()
    done = s["training"]["epochs_done"]
    assert 1 <= done < 100
    text = gem("status", run).stdout
    assert "CANCELLED" in text and "stopped" in text and "--resume --submit slurm" in text
    # resumable: the same training, resumed as a job, finishes one epoch later
    rec2 = submit(tiny_sim, run, "--epochs", done + 2, "--resume", jobs=jobs)
    assert rec2["job_id"] != rec["job_id"] and rec2["earlier"][0]["job_id"] == rec["job_id"]
    s = status(run, wait=150)
    assert s["slurm"]["state"] == "COMPLETED", s
    assert s["training"]["finished"] and s["training"]["epochs_done"] == done + 2


def test_user_template_pending_job_and_cancel(slurm_up, tiny_sim, tmp_path, jobs):
    """A user's template (here: start in an hour, so the job waits); stop cancels it in the queue."""
    tpl = tmp_path / "mine.sh"
    tpl.write_text("#!/bin/bash\n#SBATCH --job-name={job_name}\n#SBATCH --output={output}\n"
                   "#SBATCH --begin=now+3600\n#SBATCH --partition={partition}\n{command}\n")
    run = tmp_path / "queued"
    rec = submit(tiny_sim, run, "--epochs", "1", "--template", tpl, "--job-name", "gem-test", jobs=jobs)
    assert rec["template"] == str(tpl)
    assert "--begin=now+3600" in Path(rec["script"]).read_text()
    s = status(run)
    assert s["slurm"]["state"] == "PENDING" and s["slurm"]["reason"] == "BeginTime", s
    assert "PENDING (BeginTime)" in gem("status", run).stdout
    # while the run has a job in the queue, another submission into it is refused
    proc = gem("train", tiny_sim / "particles.star", "--consensus", tiny_sim / "consensus.mrc", "-o", run,
               *TINY, "--submit", "slurm", check=False)
    assert proc.returncode == 1 and f"already has SLURM job {rec['job_id']} (PENDING)" in proc.stderr
    assert "was waiting in the queue: cancelled" in gem("stop", run).stdout
    s = status(run, wait=30)
    assert s["slurm"]["state"] == "CANCELLED" and not RunDir(run).has_checkpoint()


def test_sbatch_failure_is_reported(slurm_up, tiny_sim, tmp_path):
    run = tmp_path / "bad"
    proc = gem("train", tiny_sim / "particles.star", "--consensus", tiny_sim / "consensus.mrc", "-o", run,
               *TINY, "--submit", "slurm", "--partition", "no-such-partition", check=False)
    assert proc.returncode == 1
    assert "sbatch failed" in proc.stderr and "invalid partition" in proc.stderr.lower(), proc.stderr
    assert not (run / "slurm.json").exists()


def test_torchrun_job_stops_on_every_rank(slurm_up, tiny_sim, tmp_path, jobs):
    """--gpus 2 runs torchrun with two processes (here on the CPU, from a user's template
    without the GPU request, as this cluster has no GPUs); stop reaches both ranks."""
    tpl = tmp_path / "cpu.sh"
    tpl.write_text("".join(line for line in template.DEFAULT_SLURM.splitlines(keepends=True) if "--gres" not in line))
    run = tmp_path / "ddp"
    rec = submit(tiny_sim, run, "--epochs", "100", "--gpus", "2", "--cpus", "2", "--template", tpl, jobs=jobs)
    cmd = rec["command"]
    assert "--nproc_per_node" in cmd and cmd[cmd.index("--nproc_per_node") + 1] == "2"
    deadline = time.monotonic() + 120
    while not RunDir(run).has_checkpoint():
        assert time.monotonic() < deadline, f"no checkpoint after 120 s: {gem('status', run).stdout}"
        time.sleep(0.5)
    gem("stop", run)
    s = status(run, wait=90)
    assert s["slurm"]["state"] == "CANCELLED" and s["slurm"]["stopped"] is not None, s
    assert RunDir(run).has_checkpoint() and not RunDir(run).finished()
    assert "--gpus 2 --cpus 2 --template" in gem("status", run).stdout         # the resume command
