"""Whether a training continues the run in its folder, and that it is the same run.

* no ``--resume``: a new run; a folder that already holds one is refused (its work is
  never started over silently);
* ``--resume``: continue the run in the folder (an error if there is none);
* ``--resume auto`` (what a submitted job runs): continue the run if there is one, start
  it if the folder holds none, and do nothing if it has finished all its epochs. A job
  that SLURM requeues, or processes that torchrun restarts, run the same command again:
  with ``auto`` they go on from the last checkpoint. A process that is such a restart
  (``SLURM_RESTART_COUNT`` or ``TORCHELASTIC_RESTART_COUNT`` above 0) acts as ``auto``
  without the option too.

A folder that holds the settings of a run (``config.json``) but no checkpoint yet (it was
stopped while setting up) starts over with ``--resume``/``auto``: nothing was trained.

The run keeps its own settings (:func:`~gaussianem.train.config.resumed`). So that two
different commands never mix in one folder, the options given on the command line
(``given``) must agree with them, except those a session may change
(:data:`~gaussianem.train.config.SESSION_FIELDS`: epochs, device, workers, threads,
checkpoint policy); any other difference is an error that names the options. (From
Python, ``given`` None, the saved settings win as before.)

Each start of the training is an *attempt*: ``RUN/attempts.jsonl`` records where each
began and, for a stop by a signal, where it ended (:func:`record_attempt`; ``gaussianem
status`` lists them).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, fields

from gaussianem.errors import TrainingError
from gaussianem.io.rundir import RunDir
from gaussianem.train import health, signals
from gaussianem.train.config import BEFORE_RECORDED, SESSION_FIELDS, WEIGHT_FLAGS, TrainConfig, cli_fields
from gaussianem.train.distributed import Dist

MODES = (False, True, "auto")
# set by the coarse-to-fine plan for each stage (gaussianem.train.stages), not by the user
STAGE_FIELDS = ("num_gaussians", "fine_gaussians", "first_epoch", "lowpass_epochs", "init_from", "epochs")
CLI = {f.name for f in cli_fields()}
PATH_FIELDS = ("particles", "consensus", "model", "datadir", "poses", "ctf", "ind", "init_from", "cache")


@dataclass
class Decision:
    action: str                 # "new", "resume" or "finished"
    note: str | None = None     # what to tell the user


def mode(resume) -> bool | str:
    """``resume`` as given (False, True, "auto"), ``auto`` for a restarted process."""
    if resume in ("auto", "AUTO"):
        return "auto"
    if resume not in MODES and resume not in (0, 1):
        raise TrainingError(f"--resume takes no value or 'auto', got {resume!r}")
    if not resume and signals.restart_count():
        return "auto"
    return bool(resume)


def _flag(name: str) -> str:
    for flag, weight, _ in WEIGHT_FLAGS:
        if name == "weight_" + weight:
            return flag
    f = {f.name: f for f in fields(TrainConfig)}.get(name)
    return (f.metadata.get("flag") if f is not None else None) or "--" + name.replace("_", "-")


def _norm(name: str, value):
    if name in PATH_FIELDS and isinstance(value, str) and value != "auto":
        return os.path.abspath(os.path.expanduser(value))
    return value


def saved_settings(run: RunDir) -> tuple[TrainConfig | None, bool]:
    """(the run's saved settings, whether it trains in two stages): the run's own
    ``config.json``, else its coarse stage's; None when the folder holds neither."""
    staged = os.path.exists(run.plan)
    for where in (run, run.coarse):
        if os.path.exists(where.config):
            d = where.read_config().get("train") or {}
            return TrainConfig.from_dict({**BEFORE_RECORDED, **d}), staged or where is not run
    return None, staged


def differences(cfg: TrainConfig, saved: TrainConfig, given, staged: bool) -> list[str]:
    """``--option SAVED (this command: NEW)`` for each given option that differs."""
    skip = set(SESSION_FIELDS) | {"outdir", "engine_version"} | (set(STAGE_FIELDS) if staged else set())
    out = []
    for name in sorted(given or ()):
        if name in skip:
            continue
        if name.startswith("weight_"):
            key = name[len("weight_"):]
            old, new = getattr(saved.weights, key), getattr(cfg.weights, key)
        elif hasattr(cfg, name):
            old, new = _norm(name, getattr(saved, name)), _norm(name, getattr(cfg, name))
        else:
            continue
        if old != new:
            out.append(f"{_flag(name)} {old} (this command: {new})")
    return out


def decide(run: RunDir, cfg: TrainConfig, resume, given=None, dd: Dist | None = None) -> Decision:
    """What ``train`` does with ``run`` (see the module's docstring), decided by rank 0
    for all processes; raises :class:`TrainingError` for a folder it must not touch."""
    dd = dd or Dist()
    try:
        decision = _decide(run, cfg, resume, given) if dd.main else None
    except TrainingError as e:
        decision = str(e)
    decision = dd.from_main(decision)
    if isinstance(decision, str):
        raise TrainingError(decision)
    return decision


def _decide(run: RunDir, cfg: TrainConfig, resume, given) -> Decision:
    resume = mode(resume)
    why = signals.restart_count()
    trained = run.exists()                            # a checkpoint, a plan or a coarse stage's checkpoint
    saved, staged = saved_settings(run)
    if resume is False:
        run.require_new(holds=trained)
        return Decision("new")
    if saved is None and not trained:
        if resume is True:
            run.require_resumable(holds=False)
        return Decision("new")
    if saved is not None and given is not None:
        diff = differences(cfg, saved, given, staged)
        if diff:
            raise TrainingError(
                f"{run.path} holds a run trained with other settings: {'; '.join(diff)}. A resumed run keeps its "
                f"own settings (only {', '.join(_flag(f) for f in SESSION_FIELDS if f in CLI)} may change): "
                f"leave these options out to continue it, or train into another folder")
    if not trained:
        return Decision("new", f"{run.path} holds this run's settings but no checkpoint (it was stopped while "
                               "setting up, before its first step): starting it from the beginning")
    asked = run.epochs_asked()
    if run.finished() and cfg.epochs <= max(run.epochs_done(), asked or 0):
        report = health.read(run) or {}
        if report.get("status") == "failed":          # a restart must not turn a failed run into success
            raise TrainingError(f"{run.path} has finished but failed its health checks: {report.get('summary')} "
                                f"(details in {run.health})")
        return Decision("finished", f"{run.path} has finished its {run.epochs_done()} epoch(s): nothing to do "
                                    f"(--epochs N with a larger N trains it longer)")
    note = None
    if why:
        note = "restarted (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in why.items()) + "): continuing the run"
    return Decision("resume", note)


def record_attempt(run: RunDir, kind: str, **fields) -> None:
    """A ``start`` (where, from which epoch and step, how many processes, and SLURM's and
    torchrun's restart counts) or ``stopped`` record in ``RUN/attempts.jsonl``."""
    if kind == "start":
        fields.update(host=socket.gethostname(), job=os.environ.get("SLURM_JOB_ID"), **signals.restart_count())
    run.append_attempt({"kind": kind, **fields, "time": time.time()})
