"""GaussianEM training jobs: the engine's ``gaussianem train`` in its own process.

A :class:`TrainJob` starts ``python -m gaussianem.cli.main train ... --progress json``
and follows it through the JSON lines the engine prints on standard output (one object
per line with an ``event`` key: start, message, step, epoch, stopped, done, error). A
background thread reads the lines into a queue; the session's ChimeraX thread handles
them, from a ``new frame`` trigger handler in the GUI (:class:`JobRegistry`), or by
blocking in :meth:`TrainJob.wait` (the ``wait true`` option, for scripts and tests).
Nothing ChimeraX is touched outside the session's thread.

``stop`` sends SIGINT: the engine finishes its current step, saves a resumable
checkpoint.pt and exits; ``gaussianem train ... resume true`` goes on from it. Jobs
still running when ChimeraX exits are stopped the same way, so none loses its work.
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref

ACTIVE = ("starting", "running", "stopping")
_ALL_JOBS: "weakref.WeakSet[TrainJob]" = weakref.WeakSet()


def python_executable() -> str:
    """The Python to run the engine with: ChimeraX's own Python in the ChimeraX app
    (whose sys.executable is the ChimeraX program), else this interpreter."""
    exe = os.path.realpath(sys.executable or "python3")
    if "chimerax" in os.path.basename(exe).lower():
        try:
            from chimerax.core.python_utils import chimerax_python_executable
            py = chimerax_python_executable()
            if os.path.exists(py):
                return py
        except ImportError:
            pass
    return sys.executable


def engine_environment() -> dict:
    """Environment for the engine process: this Python's, with the folder holding the
    ``gaussianem`` package this bundle imports first on PYTHONPATH (so both use the same
    engine), and ChimeraX's user site when running inside the ChimeraX app."""
    env = dict(os.environ)
    try:
        from chimerax.core.python_utils import chimerax_environment
        with chimerax_environment():
            env = dict(os.environ)
    except Exception:  # noqa: BLE001 (not inside the ChimeraX app; keep this environment)
        pass
    spec = importlib.util.find_spec("gaussianem")
    if spec is not None and spec.submodule_search_locations:
        parent = os.path.dirname(list(spec.submodule_search_locations)[0])
        env["PYTHONPATH"] = os.pathsep.join([parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"   # read back as UTF-8 whatever this process's locale
    return env


class TrainJob:
    """One ``gaussianem train`` process and what its progress lines said.

    ``state``: starting, running, stopping, done, stopped or failed. ``epoch``/``epochs``,
    ``step``/``steps_per_epoch``, ``loss`` and ``particles_per_s`` follow the last step;
    ``error`` holds the engine's message when it failed. ``on_done(job)`` is called in the
    session's thread when training finished. Step progress goes to the status line at
    most every ``status_every`` seconds (without a GUI the status line is printed).
    """

    kind = "train"                    # what the engine process does (gaussianem <kind>)
    merge_stderr = False              # read stderr with stdout, in order (text lines)

    def __init__(self, job_id: int, args: list[str], outdir: str, logger=None, on_done=None,
                 status_every: float = 0.0):
        self.id = job_id
        self.args = list(args)
        self.outdir = os.path.abspath(outdir)
        self.logger = logger
        self.on_done = on_done
        self.status_every = status_every      # seconds between step status lines (0: every step)
        self._last_status = 0.0
        self.state = "starting"
        self.epoch = self.epochs = self.step = self.steps_per_epoch = None
        self.loss = self.particles_per_s = None
        self.error = None
        self.health = None            # the finished run's health status (healthy or warning)
        self.returncode = None
        self.started = time.time()
        self.events: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self._stderr = collections.deque(maxlen=40)
        self._process = None
        self._eof = False
        self._finished = False
        self._waiting = False         # wait() raises the failure itself: no error log then

    # ------------------------------------------------------------------ process
    def start(self) -> "TrainJob":
        cmd = [python_executable(), "-m", "gaussianem.cli.main"] + self.args
        self._process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if self.merge_stderr else subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", bufsize=1,
            env=engine_environment(),
            start_new_session=True)   # Ctrl-C in ChimeraX's terminal does not reach it
        _ALL_JOBS.add(self)
        threading.Thread(target=self._read_stdout, name=f"gaussianem-job{self.id}-out",
                         daemon=True).start()
        if not self.merge_stderr:
            threading.Thread(target=self._read_stderr, name=f"gaussianem-job{self.id}-err",
                             daemon=True).start()
        return self

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def _read_stdout(self) -> None:
        for line in self._process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = None
            self._queue.put(ev if isinstance(ev, dict) and "event" in ev else {"event": "text", "text": line})
        self._queue.put(None)

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            if line.strip():
                self._stderr.append(line.rstrip())

    def stop(self) -> bool:
        """Ask the engine to save a resumable checkpoint and exit (SIGINT)."""
        if not self.active or self._process is None or self._process.poll() is not None:
            return False
        self._process.send_signal(signal.SIGINT)
        self.state = "stopping"
        return True

    # ------------------------------------------------------------------ progress
    def poll(self) -> list[dict]:
        """Handle every progress line received so far (without blocking); returns them."""
        handled = []
        while True:
            try:
                ev = self._queue.get_nowait()
            except queue.Empty:
                break
            handled.append(self._handle(ev))
        self._finish_if_ended()
        return [e for e in handled if e is not None]

    def wait(self, timeout: float | None = None) -> str:
        """Block, handling progress lines as they come, until the job ends (or
        ``timeout`` seconds pass); returns the state."""
        end = None if timeout is None else time.time() + timeout
        self._waiting = True
        try:
            self._wait_until(end)
        finally:
            self._waiting = False
        return self.state

    def _wait_until(self, end) -> None:
        while not self._finished:
            left = None if end is None else end - time.time()
            if left is not None and left <= 0:
                break
            try:
                ev = self._queue.get(timeout=0.2 if left is None else min(0.2, left))
            except queue.Empty:
                self._finish_if_ended()
                continue
            self._handle(ev)
            self.poll()

    def _handle(self, ev):
        if ev is None:
            self._eof = True
            return None
        self.events.append(ev)
        kind = ev.get("event")
        if kind == "start":
            self.state = "running" if self.state == "starting" else self.state
            self._info(f"training on {ev.get('particles')} particles (box {ev.get('box')}, "
                       f"trained at {ev.get('train_box')}) into {self.outdir}")
        elif kind == "message":
            if self.state == "starting":
                self.state = "running"
            self._info(str(ev.get("text", "")))
        elif kind == "step":
            if self.state == "starting":
                self.state = "running"
            for k in ("epoch", "epochs", "step", "steps_per_epoch", "loss", "particles_per_s"):
                setattr(self, k, ev.get(k, getattr(self, k)))
            self._status(f"epoch {self.epoch}/{self.epochs}, step {self.step}/{self.steps_per_epoch}, "
                         f"loss {self.loss:.4g}, {self.particles_per_s or 0:.0f} particles/s")
        elif kind == "epoch":
            self.epoch, self.epochs, self.loss = ev.get("epoch"), ev.get("epochs"), ev.get("loss")
            explained = ev.get("explained")
            self._info(f"epoch {self.epoch}/{self.epochs}: loss {self.loss:.4g} "
                       + (f"(model explains {explained:.1%} of the consensus' signal) " if explained is not None
                          else "")
                       + f"({ev.get('seconds', 0):.1f} s, {ev.get('particles_per_s', 0):.0f} particles/s)")
        elif kind == "stopped":
            self.state = "stopped"
            self._info(f"stopped at epoch {ev.get('epoch')}, step {ev.get('step')}; checkpoint "
                       f"{ev.get('checkpoint')} (continue with 'gaussianem train ... resume true')")
        elif kind == "done":
            self.state = "done"
            self.health = ev.get("health")
        elif kind == "error":
            self.state = "failed"
            self.error = str(ev.get("message", "unknown error"))
        elif kind == "text":
            self._stderr.append(ev["text"])
        return ev

    def _finish_if_ended(self) -> None:
        if self._finished or not self._eof or self._process is None:
            return
        try:
            self.returncode = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        if self.state in ACTIVE:
            if self.returncode == 0:
                self.state = "done"
            elif self.state == "stopping" or self.returncode in (130, -signal.SIGINT):
                self.state = "stopped"
            else:
                self.state = "failed"
        if self.state == "failed" and not self.error:
            tail = [line for line in self._stderr if line.strip()]
            self.error = (tail[-1] if tail else f"the engine exited with status {self.returncode}")
        self._finished = True
        if self.state == "done":
            self._info(f"finished: {self.outdir}")
            if self.on_done is not None:
                self.on_done(self)
        elif self.state == "failed" and self.logger is not None and not self._waiting:
            self.logger.error(f"GaussianEM job {self.id} failed: {self.error}")

    @property
    def finished(self) -> bool:
        """The process has exited and every line it printed has been handled."""
        return self._finished

    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    def summary(self) -> dict:
        return {"id": self.id, "kind": self.kind, "outdir": self.outdir, "state": self.state, "epoch": self.epoch,
                "epochs": self.epochs, "step": self.step, "loss": self.loss, "pid": self.pid,
                "error": self.error}

    def _info(self, text: str) -> None:
        if self.logger is not None:
            self.logger.info(f"GaussianEM job {self.id}: {text}")

    def _status(self, text: str) -> None:
        now = time.time()
        if self.logger is not None and now - self._last_status >= self.status_every:
            self._last_status = now
            self.logger.status(f"GaussianEM job {self.id}: {text}")


class ClusterJob:
    """A training submitted to SLURM (``gaussianem train ... --submit slurm``), followed
    through its run folder on the shared file system: the job's state from SLURM and the
    training's progress from the run's log (:func:`gaussianem.cluster.status.summary`),
    read at most every ``every`` seconds. Same interface as :class:`TrainJob`."""

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
        cmd = [python_executable(), "-m", "gaussianem.cli.main"] + self.args
        p = subprocess.run(cmd, capture_output=True, text=True, env=engine_environment(), timeout=180,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            lines = [x for x in (p.stderr or p.stdout).splitlines() if x.strip()]
            raise OSError(lines[-1] if lines else f"the engine exited with status {p.returncode}")
        self.state = "queued"
        self._info(" ".join(p.stdout.split("\n")[0:1]).strip())
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
            self._info(f"SLURM job {self.slurm_id}: {job.get('state')}"
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
        self._info(stop(self.outdir))
        self.state = "stopping"
        return True

    def stderr_tail(self) -> list[str]:
        return []

    def summary(self) -> dict:
        return {"id": self.id, "kind": "train", "outdir": self.outdir, "state": self.state, "epoch": self.epoch,
                "epochs": self.epochs, "step": self.step, "loss": self.loss, "pid": None, "error": self.error,
                "slurm_job": self.slurm_id}

    def _info(self, text: str) -> None:
        if self.logger is not None and text:
            self.logger.info(f"GaussianEM job {self.id}: {text}")


ENDED_SLURM = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


class JobRegistry:
    """The training jobs of a session, numbered from 1. In the GUI a ``new frame``
    trigger handler follows the active jobs; it removes itself when none is left."""

    def __init__(self, session):
        self._session = weakref.ref(session)
        self.jobs: dict[int, TrainJob] = {}
        self._handler = None

    def new_id(self) -> int:
        return max(self.jobs, default=0) + 1

    def add(self, job: TrainJob) -> TrainJob:
        self.jobs[job.id] = job
        session = self._session()
        if session is not None and session.ui.is_gui and self._handler is None:
            self._handler = session.triggers.add_handler("new frame", self._new_frame)
        return job

    def poll(self) -> None:
        for job in list(self.jobs.values()):
            if not job.finished:
                try:
                    job.poll()
                except Exception as e:  # noqa: BLE001 (a failing on_done must not stop the others)
                    job.logger.error(f"GaussianEM job {job.id}: {e}")

    def _new_frame(self, *_):
        self.poll()
        if all(job.finished for job in self.jobs.values()):
            self._handler = None
            from chimerax.core.triggerset import DEREGISTER
            return DEREGISTER
        return None

    def get(self, job_id: int) -> TrainJob | None:
        return self.jobs.get(int(job_id))

    def active(self) -> list[TrainJob]:
        return [j for j in self.jobs.values() if j.active]


# ---------------------------------------------------------------------------- checks before a job

def check_model_in_map(model_file: str, consensus_file: str, name: str) -> None:
    """Refuse an atomic model that does not lie in the consensus map's frame, before a
    job starts: most of its residues must lie inside the map's box, the rule training
    itself applies when it places Gaussians on the model
    (:func:`gaussianem.model.gaussians.init_from_atoms`, which raises the engine's error
    naming the model and the share of residues inside)."""
    from gaussianem.io.models import read_model
    from gaussianem.io.mrc import read_map
    from gaussianem.model.gaussians import init_from_atoms
    from gaussianem.physics.grid import Grid
    vol, apix, origin = read_map(consensus_file)
    init_from_atoms(read_model(model_file), Grid(vol.shape[0], apix, origin), vol, name=name)


def check_resume(run, epochs: int | None = None) -> str | None:
    """Before resuming ``run`` (a :class:`~gaussianem.io.rundir.RunDir`) to ``epochs`` in
    all (None: the epochs it was asked for): refuse (UserError) when it has finished and
    already trained that many, since resuming would train nothing. Returns a note to log
    when the run has trained them but not finished (resuming then only writes its
    latents), else None."""
    from chimerax.core.commands import quote_path_if_necessary as quote
    from chimerax.core.errors import UserError
    done, asked = run.epochs_done(), run.epochs_asked()
    target = epochs or asked
    if not target or done < target:
        return None
    if epochs is None:
        already = f"all {target} epochs it was asked for"
    else:
        already = f"{done} epochs, {'as many as' if done == target else 'more than'} the {epochs} asked for"
    if run.finished():
        raise UserError(f"the GaussianEM run in {run.path} has already trained {already}: resuming it would "
                        f"train nothing. To train longer, give more epochs in all (e.g. 'epochs {done + 10}'); "
                        f"to look at it, 'gaussianem open {quote(run.path)}'")
    return (f"the run in {run.path} has already trained {already}: resuming trains no more epochs, it only "
            "writes the particles' latents")


def registry(session) -> JobRegistry:
    """The session's job registry (made on first use)."""
    reg = getattr(session, "_gaussianem_jobs", None)
    if reg is None:
        reg = session._gaussianem_jobs = JobRegistry(session)
    return reg


@atexit.register
def _stop_all_at_exit() -> None:
    """Ask jobs still running to checkpoint and exit when ChimeraX exits."""
    for job in list(_ALL_JOBS):
        try:
            job.stop()
        except Exception:  # noqa: BLE001
            pass
