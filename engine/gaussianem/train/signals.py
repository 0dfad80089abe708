"""Stop signals: a training stops at a step boundary with a checkpoint, never in the middle.

SIGINT (Ctrl-C), SIGTERM (``gaussianem stop``, ``scancel``, a time limit, a requeue, a
preemption) and SIGUSR1 (SLURM's early warning, ``#SBATCH --signal=B:USR1@120``, passed on
by the job script) only note the request (:func:`requested`); the loop checks it before
each step, all processes agree on it (any signal to any process stops them all), the state after the last finished step
is saved and
:class:`Stopped` ends the run (exit status 130 from the command line).

Data-loading workers ignore the three signals (:func:`ignore_in_worker`, their
``worker_init_fn``): a signal sent to every process of a job (``scancel --full``, a
process group) reaches them too, and they must keep serving the main process until it has
saved its checkpoint and shuts them down. From the first stop signal on, a worker's death
no longer raises in the main process at an arbitrary point (PyTorch's SIGCHLD handler is
put aside): the loop is not asked for another batch, and the checkpoint is written whole.

The handlers are process-wide: the command line installs them first thing (a signal during
set-up is then a request, not the default action, which for SIGUSR1 is to die), and
:class:`~gaussianem.train.loop.Trainer` installs them around its loop when called from
Python (only in the main thread; a ChimeraX tool's thread gets none).
"""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

_request: dict = {"signal": None}
_put_aside: dict = {}          # SIGCHLD's handler while stopping


class Stopped(KeyboardInterrupt):
    """The run stopped on a signal after saving a checkpoint (a KeyboardInterrupt, so
    that code that catches Ctrl-C catches it too)."""

    def __init__(self, signal_name: str, epoch: int, step: int, checkpoint: str, main: bool = True):
        super().__init__(f"stopped by {signal_name} at epoch {epoch}, step {step}: checkpoint {checkpoint}")
        self.signal_name, self.epoch, self.step, self.checkpoint, self.main = \
            signal_name, epoch, step, checkpoint, main


def _handler(signum, frame) -> None:
    if _request["signal"] is None:
        _request["signal"] = int(signum)
        # a loader worker that dies from now on is noticed when the next batch is asked
        # for (which a stopping loop does not do), not in the middle of writing the checkpoint
        try:
            _put_aside.setdefault("chld", signal.signal(signal.SIGCHLD, signal.SIG_DFL))
        except (ValueError, OSError):
            pass


def install() -> dict | None:
    """Route the stop signals to :func:`requested`; returns what to give :func:`restore`
    (None when this is not the main thread, or the handlers were already in place)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is _handler:
        return None
    _request["signal"] = None
    return {s: signal.signal(s, _handler) for s in STOP_SIGNALS}


def restore(old: dict | None) -> None:
    """Put back the handlers :func:`install` replaced (and SIGCHLD's)."""
    if not old:
        return
    for s, h in old.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    if "chld" in _put_aside:
        signal.signal(signal.SIGCHLD, _put_aside.pop("chld") or signal.SIG_DFL)


def requested() -> int:
    """The number of the first stop signal received, or 0 (see :func:`name`)."""
    return int(_request["signal"] or 0)


def name(signum: int) -> str:
    return signal.Signals(signum).name


def ignore_in_worker(worker_id: int = 0) -> None:
    """``worker_init_fn`` of the training's data loaders: the stop signals are the main
    process's to handle."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def restart_count() -> dict:
    """Why this process may be a restart: SLURM's requeue count and torchrun's restart
    count (absent or 0 for a first start)."""
    out = {}
    for key, var in (("slurm_restart", "SLURM_RESTART_COUNT"), ("torchrun_restart", "TORCHELASTIC_RESTART_COUNT")):
        try:
            n = int(os.environ.get(var, "0") or 0)
        except ValueError:
            n = 0
        if n:
            out[key] = n
    return out
