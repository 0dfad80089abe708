"""An unfinished run opened in a real headless ChimeraX (issue 29, item 14): still training
is said as such (from the engine's ``gaussianem status`` facts: its SLURM job, its log),
and only a run that has stopped is offered the resume command.

Fixtures: ``cx`` (embedded session), ``tiny_sim`` and ``tiny_result`` (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time

from chimerax_fixture import logged


def unfinished(tiny_result, tmp_path, age_s: float):
    """A copy of the tiny run without its latents, its log written ``age_s`` seconds ago."""
    from gaussianem.io.rundir import RunDir
    path = tmp_path / "unfinished"
    shutil.copytree(tiny_result, path)
    for name in (RunDir.LATENTS, RunDir.Z_PKL):
        if (path / name).exists():
            os.remove(path / name)
    recs = [json.loads(line) for line in (path / RunDir.LOG).read_text().splitlines() if line.strip()]
    shift = time.time() - age_s - max(r.get("time", 0) for r in recs)
    (path / RunDir.LOG).write_text("".join(json.dumps({**r, "time": r["time"] + shift}) + "\n"
                                           if "time" in r else json.dumps(r) + "\n" for r in recs))
    return path


def test_a_run_with_a_running_slurm_job_is_still_training(cx, tiny_result, tmp_path, monkeypatch):
    path = unfinished(tiny_result, tmp_path, age_s=3 * 3600)      # an old log: SLURM's word decides
    (path / "slurm.json").write_text(json.dumps({"job_id": "4242", "submitted": "now"}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text("#!/bin/sh\necho '4242|RUNNING|None|1:02:03|node7'\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    _, text = logged(cx, f"gaussianem open {path}")
    assert f"the GaussianEM run in {path} is still training (its SLURM job 4242 is RUNNING on node7)" in text
    assert "2 epoch(s) of 2 done so far" in text and "Open it again when it has finished" in text
    assert "stopped" not in text and "resume" not in text


def test_a_local_run_logged_moments_ago_may_still_be_training(cx, tiny_result, tmp_path):
    path = unfinished(tiny_result, tmp_path, age_s=20)
    _, text = logged(cx, f"gaussianem open {path}")
    assert "is unfinished and may still be training (its log was last written 20 s ago)" in text
    assert "training stopped" not in text
    assert "If it is still training, open it again when it has finished" in text
    assert "if it was stopped, resume it with: gaussianem train" in text


def test_a_run_whose_log_is_old_has_stopped(cx, tiny_result, tmp_path):
    path = unfinished(tiny_result, tmp_path, age_s=2 * 86400)
    _, text = logged(cx, f"gaussianem open {path}")
    assert "is unfinished: training stopped after epoch 2 of 2 (its log was last written 2 days ago)" in text
    assert f"Resume it with: gaussianem train" in text and f"outdir {path} resume true" in text
