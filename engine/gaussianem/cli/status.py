"""Show what a training run is doing: its SLURM job's state and the training's progress.

For a run submitted with 'gaussianem train ... --submit slurm', the job's state (PENDING,
RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT ...) from squeue or sacct, why it waits or
ended, and its output file; for every run, the epoch and step reached, the loss, whether
a checkpoint exists, whether the run finished (latents.npz), its health report, and each
attempt: every start of the training (new, resumed, requeued by SLURM, restarted by
torchrun), where it began and how it ended (stopped by a signal at an epoch and step,
killed, running, finished).

examples:
  gaussianem status run1
  gaussianem status run1 --json
  gaussianem status run1 --wait 3600     # until the job has ended (at most an hour)
"""

from __future__ import annotations

import json
import sys
import time


def add_args(p):
    p.add_argument("run", metavar="RUN", help="the training's output folder")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="wait, at most SECONDS, until the run's SLURM job has ended (exit status 1 if it has not)")
    p.add_argument("--poll", type=float, default=5.0, metavar="SECONDS", help="with --wait: look every SECONDS "
                                                                               "(default: 5)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args):
    from gaussianem.cluster import slurm
    from gaussianem.cluster.status import format_summary, summary
    s = summary(args.run)
    deadline = time.monotonic() + (args.wait or 0)
    while args.wait is not None and s["slurm"] is not None and s["slurm"]["state"] not in slurm.ENDED \
            and time.monotonic() < deadline:
        time.sleep(max(0.1, min(args.poll, deadline - time.monotonic())))
        s = summary(args.run)
    print(json.dumps(s, indent=2, default=str) if args.json else format_summary(s), flush=True)
    if args.wait is not None and s["slurm"] is not None and s["slurm"]["state"] not in slurm.ENDED:
        print(f"gaussianem status: SLURM job {s['slurm']['job_id']} is still {s['slurm']['state']} after "
              f"{args.wait:g} s", file=sys.stderr)
        return 1
    return 0
