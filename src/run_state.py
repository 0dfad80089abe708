"""Whether an unfinished run (no particle latents yet) is still training or has stopped,
and what to tell the user about it.

The facts come from the engine's own ``gaussianem status`` logic
(:func:`gaussianem.cluster.status.summary`: the training log's epoch and step, the
checkpoint, the SLURM job's state when the run was submitted) and from this session's
jobs (:func:`.jobs.registry`). A run is *training* when a job of this session is still
writing into it, or when its SLURM job is pending or running; *stopped* when its SLURM
job has ended, or a job of this session training into it has ended, or its log has not
been written for :data:`QUIET_S` seconds; otherwise (a local run whose log was written
moments ago) it *may still be training* elsewhere, and the message says so instead of
telling the user to resume a run that is still running.
"""

from __future__ import annotations

import os
import time

from chimerax.core.commands import quote_path_if_necessary as _quote

QUIET_S = 600.0      # a local run whose log is older than this (seconds) has stopped


def _session_job(session, path: str):
    """The last job of this session that trained into ``path``, or None."""
    if session is None:
        return None
    from .jobs.registry import registry
    reg = registry(session)          # not polled here: a job's end may open its result, not from inside this
    jobs = [j for j in reg.jobs.values() if j.outdir == path and getattr(j, "kind", "train") == "train"]
    return jobs[-1] if jobs else None


def training_state(run, session=None) -> dict:
    """``{"state": "training" | "stopped" | "maybe", "why": text, "summary": the engine's
    status summary}`` for an unfinished run folder (a RunDir)."""
    from gaussianem.cluster import slurm
    from gaussianem.cluster.status import summary
    try:
        s = summary(run.path)
    except slurm.ClusterError as e:              # e.g. squeue did not answer: the log still tells
        s = {"training": None, "slurm": None, "error": str(e)}
    job = _session_job(session, run.path)
    if job is not None and job.active:
        return {"state": "training", "why": f"GaussianEM job {job.id} of this session is training into it",
                "summary": s}
    if s.get("slurm"):
        j = s["slurm"]
        if j["state"] in slurm.ACTIVE:
            where = f" on {j['node']}" if j.get("node") and j["state"] != "PENDING" else ""
            return {"state": "training", "why": f"its SLURM job {j['job_id']} is {j['state']}{where}", "summary": s}
        if j["state"] != slurm.UNKNOWN:
            return {"state": "stopped", "why": f"its SLURM job {j['job_id']} ended {j['state']}", "summary": s}
    if job is not None:
        return {"state": "stopped", "why": f"GaussianEM job {job.id} of this session ended {job.state}",
                "summary": s}
    last = (s.get("training") or {}).get("last_log")
    if last is None:
        return {"state": "stopped", "why": "", "summary": s}
    age = max(0.0, time.time() - float(last))
    if age >= QUIET_S:
        return {"state": "stopped", "why": f"its log was last written {_ago(age)} ago", "summary": s}
    return {"state": "maybe", "why": f"its log was last written {_ago(age)} ago", "summary": s}


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _progress(run) -> tuple[int, int | None]:
    """(epochs done, epochs asked) of a run or of its coarse stage."""
    if not os.path.exists(run.config) and os.path.exists(run.coarse.config):   # coarse to fine, coarse stage
        return run.coarse.epochs_done(), run.epochs_asked()
    return run.epochs_done(), run.epochs_asked()


def resume_command(run) -> str:
    """``gaussianem train PARTICLES consensus MAP outdir RUN resume true`` with the run's
    own files filled in."""
    if os.path.exists(run.config):
        config = run.read_config()
    elif os.path.exists(run.coarse.config):
        config = run.coarse.read_config()
    else:
        config = {}
    train = config.get("train", {})
    return (f"gaussianem train {_quote(train.get('particles') or 'PARTICLES')} consensus "
            f"{_quote(train.get('consensus') or 'MAP')} outdir {_quote(run.path)} resume true")


def unfinished_message(run, session=None) -> str:
    """What to tell the user about a run that has no particle latents yet: still training
    (and where), or stopped after which epoch and the command that resumes it."""
    from gaussianem.io.rundir import RunDir
    done, asked = _progress(run)
    of = f" of {asked}" if asked else ""
    st = training_state(run, session)
    why = f" ({st['why']})" if st["why"] else ""
    latents = f"so there are no particle latents yet ({RunDir.LATENTS} is written when training ends)"
    status = f"'gaussianem status {_quote(run.path)}' on the command line shows its progress"
    if st["state"] == "training":
        reached = f"{done} epoch(s){of} done so far" if done else "its first epoch not done yet"
        return (f"the GaussianEM run in {run.path} is still training{why}: {reached}, {latents}. "
                f"Open it again when it has finished; {status}")
    where = (f"after epoch {done}" if done else "before its first epoch ended") + of
    if st["state"] == "maybe":
        return (f"the GaussianEM run in {run.path} is unfinished and may still be training{why}: it has trained "
                f"{done} epoch(s){of}, {latents}. If it is still training, open it again when it has finished "
                f"({status}); if it was stopped, resume it with: {resume_command(run)}")
    return (f"the GaussianEM run in {run.path} is unfinished: training stopped {where}{why}, {latents}. "
            f"Resume it with: {resume_command(run)}")
