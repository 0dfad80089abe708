"""``gaussianem analyze`` as a job: the engine's analysis in its own process.

:class:`AnalyzeJob` is a :class:`~.jobs.TrainJob` (same process handling, registry,
``gaussianem jobs``, ``gaussianem stop``, ``wait``) whose engine command is
``python -m gaussianem.cli.main analyze OUTDIR ...``. The analysis writes plain text
lines, not JSON progress: each one (stdout and stderr, read as one stream in order) is
logged as it comes, in the session's thread; the last one names a failure. :func:`analyze_args` builds the command line
from the engine's own option names (gaussianem/cli/analyze.py).
"""

from __future__ import annotations

import subprocess

from .jobs import ACTIVE, TrainJob, registry


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


def analyze_args(outdir: str, *, k=None, pcs=None, steps=None, umap=None, skip_volumes=False, map_kind=None,
                 range_sd=None, seed=None, device=None) -> list[str]:
    """The engine's ``analyze`` arguments for these options (None: the engine's default)."""
    args = ["analyze", outdir]
    for flag, value in (("--kmeans", k), ("--pcs", pcs), ("--trajectory-steps", steps), ("--map", map_kind),
                        ("--seed", seed), ("--device", device)):
        if value is not None:
            args += [flag, str(value)]
    if range_sd is not None:
        args += ["--range", f"{range_sd[0]:g}", f"{range_sd[1]:g}"]
    if umap is not None:
        args.append("--umap" if umap else "--no-umap")
    if skip_volumes:
        args.append("--skip-volumes")
    return args


class AnalyzeJob(TrainJob):
    """One ``gaussianem analyze`` process; its output lines are logged as they come."""

    kind = "analyze"
    merge_stderr = True               # the analysis notes its steps on stderr: keep them in order

    def _handle(self, ev):
        if ev is not None and ev.get("event") == "text":
            if self.state == "starting":
                self.state = "running"
            self.events.append(ev)
            self._stderr.append(ev["text"])         # the last line names a failure
            self._info(ev["text"])
            return ev
        return super()._handle(ev)


def reconstruct_args(outdir: str, output: str, *, cluster=None, k=None, particles=None, pc_range=None,
                     latent_part=None, state=None, particle=None, z=None, box=None, replace=False,
                     device=None) -> list[str]:
    """The engine's ``reconstruct`` arguments (gaussianem/cli/reconstruct.py) for these options."""
    args = ["reconstruct", outdir, "-o", output, "--progress", "json"]
    if cluster is not None:
        args += ["--kmeans", str(k or 8), "--cluster", ",".join(str(int(c)) for c in cluster)]
    if particles is not None:
        args += ["--select", particles]
    if pc_range is not None:
        args += ["--pc-range", ",".join(f"{v:g}" for v in pc_range)]
        if latent_part is not None:
            args += ["--part", latent_part]
    for flag, value in (("--state", state), ("--particle", particle), ("--box", box), ("--device", device)):
        if value is not None:
            args += [flag, str(value)]
    if z is not None:
        args += ["--z", " ".join(f"{float(v):.7g}" for v in z)]
    if replace:
        args.append("--force")
    return args


class ReconstructJob(AnalyzeJob):
    """One ``gaussianem reconstruct`` process: its JSON progress (start, backprojected
    particles, done with the resolutions) and its closing text lines are logged."""

    kind = "reconstruct"

    def _handle(self, ev):
        if ev is not None and ev.get("event") == "start":
            self.state = "running"
            self.events.append(ev)
            self._info(f"reconstructing {ev.get('particles')} particles at box {ev.get('box')}")
            return ev
        if ev is not None and ev.get("event") == "message":
            self.events.append(ev)
            self._status(str(ev.get("text", "")))
            return ev
        if ev is not None and ev.get("event") == "done":
            self.events.append(ev)
            self.result = ev
            return ev
        return super()._handle(ev)

    NO_SIGNAL = 3                     # the engine's exit status: files written, the halves do not agree

    def _finish_if_ended(self) -> None:
        if not self._finished and self._eof and self._process is not None and self.state in ACTIVE:
            try:
                rc = self._process.wait(timeout=5)      # its output has ended: it is exiting
            except subprocess.TimeoutExpired:
                return
            if rc == self.NO_SIGNAL:
                self.state = "done"   # the map opens; its warning was logged with the engine's lines
                self.no_signal = True
        super()._finish_if_ended()
