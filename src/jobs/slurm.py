"""A training submitted to SLURM (``gaussianem train ... --submit slurm``), followed through
its run folder on the shared file system, as the engine's ``gaussianem status`` reads it."""

from __future__ import annotations

import os
import subprocess
import time

from .engine import engine_command, engine_environment

ENDED_SLURM = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


class ClusterJob:
    """A training submitted to SLURM (``gaussianem train ... --submit slurm``), followed
    through its run folder on the shared file system: the job's state from SLURM and the
    training's progress from the run's log (:func:`gaussianem.cluster.status.summary`),
    read at most every ``every`` seconds. Same interface as :class:`~.local.EngineJob`."""

    STATES = {"PENDING": "queued", "CONFIGURING": "queued", "RUNNING": "running", "COMPLETING": "running",
              "COMPLETED": "done", "CANCELLED": "stopped"}

    def __init__(self, job_id: int, args: list[str], outdir: str, logger=None, on_done=None, every: float = 5.0):
        self.id, self.args, self.outdir = job_id, list(args), os.path.abspath(outdir)
        self.logger, self.on_done, self.every = logger, on_done, every
        self.state, self.error, self.health, self.slurm_id = "starting", None, None, None
        self.epoch = self.epochs = self.step = self.loss = None
        self.events: list[dict] = []
        self._finished, self._last = False, 0.0

    def start(self) -> "ClusterJob":
        """Submit (the engine's CLI, which writes the job script and runs sbatch)."""
        p = subprocess.run(engine_command(self.args), capture_output=True, text=True, env=engine_environment(),
                           timeout=180, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            lines = [x for x in (p.stderr or p.stdout).splitlines() if x.strip()]
            raise OSError(lines[-1] if lines else f"the engine exited with status {p.returncode}")
        self.state = "queued"
        self.log_info(" ".join(p.stdout.split("\n")[0:1]).strip())
        self.poll(force=True)
        return self

    @property
    def pid(self):
        return None

    @property
    def active(self) -> bool:
        return not self._finished

    @property
    def finished(self) -> bool:
        return self._finished

    def poll(self, force: bool = False) -> list[dict]:
        if self._finished or (not force and time.time() - self._last < self.every):
            return []
        self._last = time.time()
        from gaussianem.cluster.status import summary
        s = summary(self.outdir)
        t, job = s["training"], s.get("slurm") or {}
        self.slurm_id = job.get("job_id", self.slurm_id)
        self.epoch, self.epochs, self.step, self.loss = t["epoch"], t["epochs"], t["step"], t["loss"]
        state = self.STATES.get(job.get("state"), "failed" if job.get("state") in ENDED_SLURM else self.state)
        if state != self.state and state != "starting":
            self.log_info(f"SLURM job {self.slurm_id}: {job.get('state')}"
                       + (f", epoch {self.epoch}/{self.epochs}" if self.epoch else ""))
        self.state = state
        if state in ("done", "stopped", "failed"):
            self._finished = True
            self.health = (s.get("health") or {}).get("status")
            if state == "failed":
                self.error = job.get("error") or f"SLURM job {self.slurm_id} ended {job.get('state')}"
                if self.logger is not None:
                    self.logger.error(f"GaussianEM job {self.id} failed: {self.error}")
            if state == "done" and self.on_done is not None and t.get("finished"):
                self.on_done(self)
        return []

    def wait(self, timeout: float | None = None) -> str:
        end = None if timeout is None else time.time() + timeout
        while not self._finished and (end is None or time.time() < end):
            time.sleep(min(self.every, 2.0))
            self.poll(force=True)
        return self.state

    def stop(self) -> bool:
        """SIGTERM to the job (scancel): training checkpoints, then the job ends CANCELLED."""
        if self._finished:
            return False
        from gaussianem.cluster.status import stop
        self.log_info(stop(self.outdir))
        self.state = "stopping"
        return True

    def stderr_tail(self) -> list[str]:
        return []

    def summary(self) -> dict:
        return {"id": self.id, "kind": "train", "outdir": self.outdir, "state": self.state, "epoch": self.epoch,
                "epochs": self.epochs, "step": self.step, "loss": self.loss, "pid": None, "error": self.error,
                "slurm_job": self.slurm_id}

    def log_info(self, text: str) -> None:
        if self.logger is not None and text:
            self.logger.info(f"GaussianEM job {self.id}: {text}")
