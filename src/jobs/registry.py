"""The session's engine jobs: numbered, followed from the session's thread, stopped at exit.

:func:`registry` is the session's :class:`JobRegistry` (``gaussianem jobs`` lists it,
``gaussianem stop`` stops its jobs); :func:`start_job` starts a job, registers it and logs
it. Jobs still running when ChimeraX exits are asked to stop (a training saves a resumable
checkpoint first), so none loses its work.
"""

from __future__ import annotations

import atexit
import weakref

from .local import ALL_JOBS, EngineJob


class JobRegistry:
    """The engine jobs of a session (local processes and SLURM jobs), numbered from 1. In the GUI a ``new frame``
    trigger handler follows the active jobs; it removes itself when none is left."""

    def __init__(self, session):
        self._session = weakref.ref(session)
        self.jobs: dict[int, EngineJob] = {}
        self._handler = None

    def new_id(self) -> int:
        return max(self.jobs, default=0) + 1

    def add(self, job: EngineJob) -> EngineJob:
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

    def get(self, job_id: int) -> EngineJob | None:
        return self.jobs.get(int(job_id))

    def active(self) -> list[EngineJob]:
        return [j for j in self.jobs.values() if j.active]


def registry(session) -> JobRegistry:
    """The session's job registry (made on first use)."""
    reg = getattr(session, "_gaussianem_jobs", None)
    if reg is None:
        reg = session._gaussianem_jobs = JobRegistry(session)
    return reg


def start_job(session, job, noun: str, doing: str, wait: bool):
    """Start an engine ``job`` (an analysis or a reconstruction), register it and log it
    (``doing``: what it does, for the log); ``wait``: block until it ends, a failure
    becoming a UserError with the engine's message."""
    from chimerax.core.errors import UserError
    try:
        job.start()
    except OSError as e:
        raise UserError(f"cannot start the GaussianEM {noun} ({e})") from None
    registry(session).add(job)
    session.logger.info(f"GaussianEM job {job.id} started (process {job.pid}): {doing}"
                        + ("" if wait else f"; 'gaussianem jobs' shows it, 'gaussianem stop {job.id}' stops it"))
    if wait and job.wait() == "failed":
        raise UserError(f"GaussianEM {noun} failed: {job.error}")
    return job


@atexit.register
def _stop_all_at_exit() -> None:
    """Ask jobs still running to checkpoint and exit when ChimeraX exits."""
    for job in list(ALL_JOBS):
        try:
            job.stop()
        except Exception:  # noqa: BLE001
            pass
