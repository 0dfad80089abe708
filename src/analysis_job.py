"""``gaussianem analyze`` as a job: the engine's analysis in its own process.

:class:`AnalyzeJob` is a :class:`~.jobs.TrainJob` (same process handling, registry,
``gaussianem jobs``, ``gaussianem stop``, ``wait``) whose engine command is
``python -m gaussianem.cli.main analyze OUTDIR ...``. The analysis writes plain text
lines, not JSON progress: each one (stdout and stderr, read as one stream in order) is
logged as it comes, in the session's thread; the last one names a failure. :func:`analyze_args` builds the command line
from the engine's own option names (gaussianem/cli/analyze.py).
"""

from __future__ import annotations

from .jobs import TrainJob


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
