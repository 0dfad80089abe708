"""An engine command in its own process on this machine, followed from the session.

An :class:`EngineJob` starts ``python -m gaussianem.cli.main <kind> ...`` and follows it
through the lines it prints. A background thread reads them into a queue; the session's
ChimeraX thread handles them, from a ``new frame`` trigger handler in the GUI
(:class:`~.registry.JobRegistry`), or by blocking in :meth:`EngineJob.wait` (the ``wait
true`` option, for scripts and tests). Nothing ChimeraX is touched outside the session's
thread.

What a line means depends on the command: an :class:`EngineJob` is given a
:class:`Reader` (composition, not subclasses), one per kind of job:

- :data:`TRAIN`: ``gaussianem train ... --progress json``, one JSON object per line with an
  ``event`` key (start, message, step, epoch, stopped, done, error);
- :data:`ANALYSIS`: ``gaussianem analyze``, plain text lines (stdout and stderr read as one
  stream, in order), each logged as it comes; the last one names a failure;
- :data:`RECONSTRUCTION`: ``gaussianem reconstruct ... --progress json``: its JSON progress
  (start, backprojected particles, done with the resolutions) and its closing text lines;
  exit status :data:`NO_SIGNAL` (files written, the half maps do not agree) still opens
  the map, with a warning.

``stop`` sends SIGINT: the engine finishes its current step (a training saves a resumable
checkpoint.pt) and exits; ``gaussianem train ... resume true`` goes on from it. Jobs still
running when ChimeraX exits are stopped the same way (:mod:`.registry`).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

from .engine import engine_command, engine_environment

ACTIVE = ("starting", "running", "stopping")
NO_SIGNAL = 3                 # gaussianem reconstruct's exit status: files written, the halves do not agree
ALL_JOBS: "weakref.WeakSet[EngineJob]" = weakref.WeakSet()     # stopped at exit (registry.py)


# ---------------------------------------------------------------------------- what lines mean

def _running(job) -> None:
    if job.state == "starting":
        job.state = "running"


def _train_start(job, ev) -> None:
    job.state = "running" if job.state == "starting" else job.state
    job.log_info(f"training on {ev.get('particles')} particles (box {ev.get('box')}, "
             f"trained at {ev.get('train_box')}) into {ev.get('outdir') or job.outdir}")   # a round: its own folder


def _message(job, ev) -> None:
    _running(job)
    job.log_info(str(ev.get("text", "")))


def _step(job, ev) -> None:
    _running(job)
    for k in ("epoch", "epochs", "step", "steps_per_epoch", "loss", "particles_per_s"):
        setattr(job, k, ev.get(k, getattr(job, k)))
    job.log_status(f"epoch {job.epoch}/{job.epochs}, step {job.step}/{job.steps_per_epoch}, "
               f"loss {job.loss:.4g}, {job.particles_per_s or 0:.0f} particles/s")


def _epoch(job, ev) -> None:
    job.epoch, job.epochs, job.loss = ev.get("epoch"), ev.get("epochs"), ev.get("loss")
    explained = ev.get("explained")
    job.log_info(f"epoch {job.epoch}/{job.epochs}: loss {job.loss:.4g} "
             + (f"(model explains {explained:.1%} of the consensus' signal) " if explained is not None else "")
             + f"({ev.get('seconds', 0):.1f} s, {ev.get('particles_per_s', 0):.0f} particles/s)")


def _stopped(job, ev) -> None:
    job.state = "stopped"
    job.log_info(f"stopped at epoch {ev.get('epoch')}, step {ev.get('step')}; checkpoint "
             f"{ev.get('checkpoint')} (continue with 'gaussianem train ... resume true')")


def _done(job, ev) -> None:
    job.state = "done"
    job.health = ev.get("health")


def _error(job, ev) -> None:
    job.state = "failed"
    job.error = str(ev.get("message", "unknown error"))


def _keep_text(job, ev) -> None:
    job.keep_line(ev["text"])


def _log_text(job, ev) -> None:
    _running(job)
    job.keep_line(ev["text"])            # the last line names a failure
    job.log_info(ev["text"])


def _reconstruct_start(job, ev) -> None:
    job.state = "running"
    job.log_info(f"reconstructing {ev.get('particles')} particles at box {ev.get('box')}")


def _status_message(job, ev) -> None:
    job.log_status(str(ev.get("text", "")))


def _reconstruct_done(job, ev) -> None:
    job.result = ev                      # the resolutions; the exit status ends the job


@dataclass(frozen=True)
class Reader:
    """How one kind of engine job's output is read: ``kind`` (the engine command),
    ``handlers`` (event -> function(job, event); a line that is not JSON is a "text"
    event), ``merge_stderr`` (read stderr with stdout, in order) and ``done_statuses``
    (exit statuses that mean done, besides 0)."""

    kind: str
    handlers: dict[str, Callable] = field(default_factory=dict)
    merge_stderr: bool = False
    done_statuses: tuple[int, ...] = ()


TRAIN = Reader("train", {"start": _train_start, "message": _message, "step": _step, "epoch": _epoch,
                         "stopped": _stopped, "done": _done, "error": _error, "text": _keep_text})
ANALYSIS = Reader("analyze", {**TRAIN.handlers, "text": _log_text}, merge_stderr=True)
RECONSTRUCTION = Reader("reconstruct", {**ANALYSIS.handlers, "start": _reconstruct_start,
                                        "message": _status_message, "done": _reconstruct_done},
                        merge_stderr=True, done_statuses=(NO_SIGNAL,))


# ---------------------------------------------------------------------------- the job

class EngineJob:
    """One engine process and what its lines said.

    ``state``: starting, running, stopping, done, stopped or failed. ``epoch``/``epochs``,
    ``step``/``steps_per_epoch``, ``loss`` and ``particles_per_s`` follow the last step;
    ``error`` holds the engine's message when it failed; ``result`` a reconstruction's
    closing numbers; ``no_signal`` whether it ended with :data:`NO_SIGNAL`. ``on_done(job)``
    is called in the session's thread when the job finished. Step progress goes to the
    status line at most every ``status_every`` seconds (without a GUI it is printed).
    """

    def __init__(self, job_id: int, args: list[str], outdir: str, reader: Reader = TRAIN, logger=None,
                 on_done=None, status_every: float = 0.0):
        self.id = job_id
        self.args = list(args)
        self.outdir = os.path.abspath(outdir)
        self.reader = reader
        self.logger = logger
        self.on_done = on_done
        self.status_every = status_every      # seconds between step status lines (0: every step)
        self._last_status = 0.0
        self.state = "starting"
        self.epoch = self.epochs = self.step = self.steps_per_epoch = None
        self.loss = self.particles_per_s = None
        self.error = None
        self.health = None            # the finished run's health status (healthy or warning)
        self.result = None            # a reconstruction's "done" event
        self.no_signal = False
        self.returncode = None
        self.started = time.time()
        self.events: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self._stderr = collections.deque(maxlen=40)
        self._process = None
        self._eof = False
        self._finished = False
        self._waiting = False         # wait() raises the failure itself: no error log then

    @property
    def kind(self) -> str:
        """What the engine process does (``gaussianem <kind>``)."""
        return self.reader.kind

    # ------------------------------------------------------------------ process
    def start(self) -> "EngineJob":
        merge = self.reader.merge_stderr
        self._process = subprocess.Popen(
            engine_command(self.args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", bufsize=1,
            env=engine_environment(),
            start_new_session=True)   # Ctrl-C in ChimeraX's terminal does not reach it
        ALL_JOBS.add(self)
        threading.Thread(target=self._read_stdout, name=f"gaussianem-job{self.id}-out", daemon=True).start()
        if not merge:
            threading.Thread(target=self._read_stderr, name=f"gaussianem-job{self.id}-err", daemon=True).start()
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
        """Ask the engine to stop after its current step (a training saves a resumable
        checkpoint first): SIGINT."""
        if not self.active or self._process is None or self._process.poll() is not None:
            return False
        self._process.send_signal(signal.SIGINT)
        self.state = "stopping"
        return True

    # ------------------------------------------------------------------ progress
    def poll(self) -> list[dict]:
        """Handle every line received so far (without blocking); returns their events."""
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
        """Block, handling lines as they come, until the job ends (or ``timeout`` seconds
        pass); returns the state."""
        end = None if timeout is None else time.time() + timeout
        self._waiting = True
        try:
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
        finally:
            self._waiting = False
        return self.state

    def _handle(self, ev):
        if ev is None:
            self._eof = True
            return None
        self.events.append(ev)
        handler = self.reader.handlers.get(ev.get("event"))
        if handler is not None:
            handler(self, ev)
        return ev

    def _finish_if_ended(self) -> None:
        if self._finished or not self._eof or self._process is None:
            return
        try:
            self.returncode = self._process.wait(timeout=5)      # its output has ended: it is exiting
        except subprocess.TimeoutExpired:
            return
        if self.state in ACTIVE:
            if self.returncode == 0 or self.returncode in self.reader.done_statuses:
                self.state = "done"
                self.no_signal = self.returncode == NO_SIGNAL   # its warning was logged with its lines
            elif self.state == "stopping" or self.returncode in (130, -signal.SIGINT):
                self.state = "stopped"
            else:
                self.state = "failed"
        if self.state == "failed" and not self.error:
            tail = [line for line in self._stderr if line.strip()]
            self.error = (tail[-1] if tail else f"the engine exited with status {self.returncode}")
        self._finished = True
        if self.state == "done":
            self.log_info(f"finished: {self.outdir}")
            if self.on_done is not None:
                self.on_done(self)
        elif self.state == "failed" and self.logger is not None and not self._waiting:
            self.logger.error(f"GaussianEM job {self.id} failed: {self.error}")

    @property
    def finished(self) -> bool:
        """The process has exited and every line it printed has been handled."""
        return self._finished

    def keep_line(self, text: str) -> None:
        """Keep a text line among the last few (the last one names a failure)."""
        self._stderr.append(text)

    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    def summary(self) -> dict:
        return {"id": self.id, "kind": self.kind, "outdir": self.outdir, "state": self.state, "epoch": self.epoch,
                "epochs": self.epochs, "step": self.step, "loss": self.loss, "pid": self.pid,
                "error": self.error}

    def log_info(self, text: str) -> None:
        if self.logger is not None:
            self.logger.info(f"GaussianEM job {self.id}: {text}")

    def log_status(self, text: str) -> None:
        now = time.time()
        if self.logger is not None and now - self._last_status >= self.status_every:
            self._last_status = now
            self.logger.status(f"GaussianEM job {self.id}: {text}")
