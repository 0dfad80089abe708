"""Stop a training run submitted to SLURM, keeping a checkpoint to resume from.

A running job gets 'scancel --signal=TERM --full JOBID': every process of the job receives
SIGTERM, training saves a checkpoint at its next step and exits, and the job ends as
CANCELLED. A job still waiting in the queue is cancelled. Continue the run with the same
'gaussianem train' command plus --resume (with --submit slurm, again as a job). A run
trained without SLURM stops with Ctrl-C in its terminal (or 'kill -TERM PID').

examples:
  gaussianem stop run1
  gaussianem status run1 --wait 120     # until the job has ended
"""

from __future__ import annotations


def add_args(p):
    p.add_argument("run", metavar="RUN", help="the training's output folder (holding slurm.json)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args):
    from gaussianem.cluster.status import stop
    print(stop(args.run), flush=True)
    return 0
