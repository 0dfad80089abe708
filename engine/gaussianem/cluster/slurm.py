"""The SLURM commands GaussianEM uses, run as subprocesses with time limits.

``sbatch --parsable`` submits, ``squeue`` (then ``sacct``, when the cluster keeps
accounting) tells a job's state, ``scancel`` stops it. Every failure is a
:class:`ClusterError` whose message carries the command's own error output.
"""

from __future__ import annotations

import shutil
import subprocess

from gaussianem.errors import GaussianEMError

# job states (squeue/sacct names) in which a job still holds or waits for resources
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
          "STAGE_OUT", "SIGNALING", "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
         "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
UNKNOWN = "UNKNOWN"
TIMEOUT_S = 60          # any one SLURM command


class ClusterError(GaussianEMError, RuntimeError):
    """A cluster command is missing or failed, or a run's job record is missing or unreadable."""


def require(tool: str) -> str:
    """The path of a SLURM command, or a :class:`ClusterError` saying there is no SLURM."""
    path = shutil.which(tool)
    if path is None:
        raise ClusterError(f"no SLURM here: {tool} not found (on PATH); run this on a machine of the "
                           f"cluster (a login node)" + (", or train here without --submit" if tool == "sbatch" else ""))
    return path


def run(args: list[str], timeout: float = TIMEOUT_S, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run a SLURM command; a :class:`ClusterError` when it is missing or does not answer."""
    exe = require(args[0])
    try:
        return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{args[0]} did not answer within {timeout:g} s ({' '.join(args)}): is the "
                           f"SLURM controller up? ('scontrol ping')") from None


def _failed(args: list[str], proc: subprocess.CompletedProcess) -> ClusterError:
    err = (proc.stderr or proc.stdout or "").strip() or "no error message"
    return ClusterError(f"{args[0]} failed (exit status {proc.returncode}): {err}")


def sbatch(script: str, cwd: str | None = None) -> tuple[str, str | None]:
    """Submit ``script``; returns (job id, cluster name or None) from ``sbatch --parsable``."""
    args = ["sbatch", "--parsable", script]
    proc = run(args, cwd=cwd)
    if proc.returncode != 0:
        raise _failed(args, proc)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    first = lines[-1].split(";") if lines else [""]
    if not first[0].strip().isdigit():
        raise ClusterError(f"sbatch answered {proc.stdout.strip()!r}, not a job id (sbatch --parsable); "
                           f"stderr: {proc.stderr.strip()}")
    return first[0].strip(), (first[1].strip() if len(first) > 1 and first[1].strip() else None)


def _cluster_args(cluster: str | None) -> list[str]:
    return ["--clusters", cluster] if cluster else []


def job_state(job_id: str, cluster: str | None = None) -> dict:
    """What SLURM knows of a job: ``state`` (PENDING, RUNNING, COMPLETED, FAILED,
    CANCELLED, TIMEOUT ... or UNKNOWN), ``reason`` (why it waits or ended), ``elapsed``,
    ``exit_code`` (sacct only), ``node`` and ``source`` (squeue, sacct, or why neither
    answered). squeue knows finished jobs only for a few minutes (MinJobAge); sacct, where
    the cluster keeps accounting, for longer."""
    notes = []
    fmt = "%i|%T|%r|%M|%N"
    if shutil.which("squeue"):
        proc = run(["squeue", "-h", "-j", str(job_id), "-t", "all", "-o", fmt, *_cluster_args(cluster)])
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 5 and parts[0].split("_")[0] == str(job_id):
                return {"state": parts[1], "reason": "" if parts[2] == "None" else parts[2],
                        "elapsed": parts[3], "node": parts[4], "exit_code": None, "source": "squeue"}
        notes.append("squeue no longer lists it" if proc.returncode == 0 or "Invalid job id" in proc.stderr
                     else f"squeue: {proc.stderr.strip()}")
    else:
        notes.append("squeue not found")
    if shutil.which("sacct"):
        proc = run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "JobID,State,Reason,Elapsed,ExitCode,NodeList",
                    *_cluster_args(cluster)])
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 6 and parts[0] == str(job_id):
                return {"state": parts[1].split()[0] if parts[1] else UNKNOWN,
                        "reason": "" if parts[2] == "None" else parts[2], "elapsed": parts[3],
                        "exit_code": parts[4], "node": parts[5], "source": "sacct"}
        err = proc.stderr.strip() or proc.stdout.strip()
        notes.append(f"sacct: {err}" if proc.returncode != 0 and err else "sacct does not list it")
    else:
        notes.append("sacct not found")
    return {"state": UNKNOWN, "reason": "", "elapsed": "", "node": "", "exit_code": None,
            "source": "; ".join(notes)}


def scancel(job_id: str, signal: str | None = None, full: bool = False, cluster: str | None = None) -> str:
    """``scancel [--signal=SIG] [--full] JOBID``; returns the command as run."""
    args = ["scancel", *([f"--signal={signal}"] if signal else []), *(["--full"] if full else []),
            *_cluster_args(cluster), str(job_id)]
    proc = run(args)
    if proc.returncode != 0 or proc.stderr.strip().startswith("scancel: error"):
        raise _failed(args, proc)
    return " ".join(args)
