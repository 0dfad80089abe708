"""Where a training's state goes, and how often: ``RUN/checkpoint.pt`` and ``RUN/checkpoints/``.

``checkpoint.pt`` is the latest state, the one a resume reads and analysis loads (the
final weights once the run has finished). It is written

* at the end of every epoch,
* within an epoch, after the first step that ends ``checkpoint_minutes`` (default 10)
  after the last checkpoint, so that a killed run (a dead node, a job killed without
  warning) loses at most that much work,
* when the run is stopped by a signal (:mod:`gaussianem.train.signals`).

Each write goes to a temporary file in the same folder, is flushed to the disk
(``fsync``) and replaces the old one with ``os.replace``: a reader, or a process killed
while writing, sees the old state or the new one, never part of one. A checkpoint taken
within an epoch also holds the epoch's running sums (losses, health statistics) and
where it is in the epoch, so the resumed run logs and judges the epoch as an unbroken one
would and ends with the same weights, bit for bit on a CPU.

``checkpoints/epoch_NNN.pt`` copies the state at the end of epoch NNN; only the latest
``keep_checkpoints`` (default 2) are kept, older ones are removed as new ones are
written. Nothing reads them but a resume within the next epoch (the last healthy state
to go back to if that epoch diverges) and people who want to go back an epoch; analysis
reads ``checkpoint.pt``. Temporary files that a killed write left behind are removed when
the run goes on.
"""

from __future__ import annotations

import copy
import glob
import os
import tempfile
import time

import numpy as np
import torch

from gaussianem import __version__
from gaussianem.io.rundir import RunDir
from gaussianem.train.health import EpochHealth


def durable_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:                                   # the rename itself, on file systems that need it
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _epoch_of(path: str) -> int:
    digits = os.path.basename(path)[len("epoch_"):-len(".pt")]
    return int(digits) if digits.isdigit() else -1


class Checkpoints:
    """The checkpoint files of one run folder and when the next one is due (rank 0 writes)."""

    def __init__(self, run: RunDir, minutes: float, keep: int, writer: bool = True):
        self.run, self.interval, self.keep, self.writer = run, max(0.0, float(minutes)) * 60.0, int(keep), writer
        self.last = time.monotonic()
        self.seconds: list[float] = []     # how long each write took

    def due(self) -> bool:
        """Whether ``checkpoint_minutes`` have passed since the last checkpoint."""
        return time.monotonic() - self.last >= self.interval

    def save(self, state: dict, epoch_done: int | None = None) -> None:
        """Write ``state`` as the latest checkpoint; with ``epoch_done`` also as that
        epoch's (keeping the latest ``keep`` of those)."""
        t0 = time.monotonic()
        if self.writer:
            durable_save(state, self.run.checkpoint)
            if epoch_done is not None and self.keep > 0:
                os.makedirs(self.run.file(RunDir.CHECKPOINTS), exist_ok=True)
                durable_save(state, self.run.epoch_checkpoint(epoch_done))
                self.prune()
        self.last = time.monotonic()
        self.seconds.append(self.last - t0)

    def prune(self) -> None:
        """Remove all but the latest ``keep`` epoch checkpoints."""
        files = sorted(glob.glob(os.path.join(self.run.file(RunDir.CHECKPOINTS), "epoch_*.pt")), key=_epoch_of)
        for f in files[:max(0, len(files) - self.keep)]:
            try:
                os.remove(f)
            except FileNotFoundError:
                pass

    def remove_leftovers(self) -> None:
        """Temporary files of writes that a killed process left (never a checkpoint)."""
        for folder in (self.run.path, self.run.file(RunDir.CHECKPOINTS)):
            for f in glob.glob(os.path.join(folder, ".tmp-*.pt")):
                os.remove(f)

    def load(self) -> dict:
        if self.writer:
            self.remove_leftovers()
        # on the CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest
        return torch.load(self.run.checkpoint, map_location="cpu", weights_only=False)

    def epoch_state(self, epoch: int) -> dict | None:
        """Networks, optimizer and scaler as saved at the end of ``epoch`` (None if not kept)."""
        path = self.run.epoch_checkpoint(epoch)
        if not os.path.exists(path):
            return None
        ck = torch.load(path, map_location="cpu", weights_only=False)
        return {k: ck[k] for k in ("model", "optimizer", "scaler")}


def training_state(model, opt, scaler, device, **extra) -> dict:
    """What a checkpoint holds: networks, optimizer, gradient scaler, the RNG states
    (CUDA's too), the engine version and ``extra`` (epoch, step, intensity scales ...)."""
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
            "engine_version": __version__, **extra}


def restore_state(ck: dict, model, opt, scaler, device) -> None:
    """Load a checkpoint's networks, optimizer, scaler and RNG states."""
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    scaler.load_state_dict(ck["scaler"])
    torch.set_rng_state(ck["rng"]["torch"])
    np.random.set_state(ck["rng"]["numpy"])
    if ck["rng"].get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(ck["rng"]["cuda"], device)


class EpochProgress:
    """An epoch's running sums: the loss terms, steps, particles and health statistics
    (:class:`~gaussianem.train.health.EpochHealth`), kept in a checkpoint taken within
    the epoch (:meth:`state`) and taken up again on resuming (``saved``)."""

    def __init__(self, device, saved: dict | None = None):
        self.health, self.sums, self.steps, self.seen = EpochHealth(), {}, 0, 0
        if saved:
            move = lambda v: v.to(device) if torch.is_tensor(v) else v    # noqa: E731
            self.sums = {k: move(v) for k, v in saved["sums"].items()}
            self.steps, self.seen = saved["steps"], saved["seen"]
            self.health.sums = {k: move(v) for k, v in saved["health_sums"].items()}
            self.health.n = saved["health_n"]
        self.seen_before = self.seen

    def add(self, total, terms: dict, stats: dict, particles: int) -> None:
        self.health.add(stats)
        for k, v in terms.items():             # on the device; read back only when logging
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.sums["total"] = self.sums.get("total", 0.0) + total.detach()
        self.steps, self.seen = self.steps + 1, self.seen + particles

    def state(self, all_reduce=None) -> dict:
        """The sums as CPU tensors; the health sums of all processes (``all_reduce``), so
        that rank 0's copy stands for the epoch so far."""
        cpu = lambda v: v.detach().cpu().clone() if torch.is_tensor(v) else v    # noqa: E731
        h = copy.deepcopy(self.health)
        if all_reduce is not None:
            h.reduce(all_reduce)
        return {"sums": {k: cpu(v) for k, v in self.sums.items()}, "steps": self.steps, "seen": self.seen,
                "health_sums": {k: cpu(v) for k, v in h.sums.items()}, "health_n": h.n}
