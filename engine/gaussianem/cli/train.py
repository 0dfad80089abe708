"""Train the heterogeneity model: a latent space of deformed, re-weighted Gaussians.

Needs particles with consensus poses and CTF (RELION .star or cryoSPARC .cs) and the
consensus map they were refined against. Writes OUTDIR/config.json, gaussians.pt,
checkpoint.pt, checkpoints/epoch_NNN.pt, latents.npz and log.jsonl.

Coarse to fine: when the training box resolves finer detail than the default count of
Gaussians carries (Nyquist finer than about 3.5 A, e.g. box 128 at 1 A/pixel), the first
half of the epochs trains on the default count in OUTDIR/coarse and the second half on
more Gaussians (counted for the Nyquist resolution), starting from the coarse networks.
--fine-gaussians N sets that count (and asks for the two stages), 0 turns them off.

Consensus rounds (--consensus-rounds N, default 1): N rounds train first in
OUTDIR/round1.., each one's deformable reconstruction of all the particles (bent into
their mean state) the next round's consensus (OUTDIR/roundK/consensus.mrc), then the
training in OUTDIR on the last of them, starting from the round's networks: a consensus
smeared by the motion holds the decoded motion back. The default trains twice (twice the
time); --consensus-rounds 0 trains once, for a quicker first look that carries less of a
domain motion (docs/validation.md, "The whole motion, session 21").

examples:
  gaussianem train sim/particles.star --consensus sim/consensus.mrc -o run1
  gaussianem train J42_particles.cs --datadir /data/P3 --consensus J42_map.mrc \\
      --model fitted.pdb -o run2 --epochs 30 --downsample 128 --zdim-conf 8 --zdim-comp 2
  gaussianem train particles.star --consensus map.mrc -o run1 --resume --epochs 40
  # continue the run if OUTDIR holds one, else start it (what a submitted job runs)
  gaussianem train particles.star --consensus map.mrc -o run1 --resume auto
  # coarse to fine, explicit: 10 epochs on the default count, then 10 on 4000 Gaussians
  gaussianem train particles.star --consensus map.mrc -o run4 --epochs 20 --fine-gaussians 4000
  # or by hand, from any finished run (same data, training box and latent sizes)
  gaussianem train particles.star --consensus map.mrc -o fine --num-gaussians 4000 \\
      --init-from run1 --epochs 10
  # a quick first look: one training, no consensus round (half the time, less of a hinge)
  gaussianem train particles.star --consensus map.mrc -o run6 --consensus-rounds 0 --epochs 10
  torchrun --nproc_per_node 4 -m gaussianem.cli.main train particles.star \\
      --consensus map.mrc -o run3 --device cuda --amp
  # as a SLURM job (4 GPUs, torchrun), then follow and stop it (docs/cluster.md)
  gaussianem train particles.star --consensus map.mrc -o run5 --device cuda --amp \\
      --submit slurm --partition gpu --gpus 4 --time 12:00:00
  gaussianem status run5;  gaussianem stop run5

Stopping: SIGINT (Ctrl-C), SIGTERM or SIGUSR1 to any of the training's processes saves a
checkpoint after the current step on all of them and exits with status 130; a checkpoint
is also written every --checkpoint-minutes (docs/cluster.md, "Preemption and requeue").
"""

from __future__ import annotations


def add_args(p):
    from gaussianem.train.config import add_arguments
    add_arguments(p)                     # every training option, from TrainConfig's fields
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                   help="continue the run in OUTDIR (with the options given, which must agree with the run's); "
                        "'auto': continue it if OUTDIR holds one, else start it, and do nothing if it has finished "
                        "(a requeued or restarted job). A process restarted by SLURM or torchrun acts as 'auto'")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="terminal bar, JSON lines on stdout (for ChimeraX), or nothing")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    from gaussianem.cluster.submit import add_arguments as add_submit_arguments
    add_submit_arguments(p)              # --submit slurm and the job's resources (docs/cluster.md)


def given_options(args) -> set:
    """The training options given on the command line (the rest are unset: SUPPRESS)."""
    from gaussianem.train.config import TrainConfig
    names = set(TrainConfig.__dataclass_fields__)
    return {k for k in vars(args) if k in names or k.startswith("weight_")}


def main(args):
    import sys
    from gaussianem.train import signals
    if not args.submit:
        signals.install()                # first: a stop signal during set-up is a request, not death
    from gaussianem.cluster.submit import check_local, submit
    if args.submit:
        submit(args)
        return 0
    check_local(args)
    from gaussianem.progress import Progress
    from gaussianem.train.config import from_arguments
    from gaussianem.train.distributed import finish_distributed, leave_process
    from gaussianem.analysis.consensus_rounds import train
    cfg = from_arguments(args, resume=bool(args.resume))
    progress = Progress(args.progress)
    try:
        train(cfg, resume=args.resume, progress=progress, given=given_options(args))
        code = 0
    except signals.Stopped as e:
        if e.main:
            print(f"gaussianem train: {e}; continue it with the same command and --resume (a requeued job, "
                  f"or one with --resume auto, does so by itself)", file=sys.stderr, flush=True)
        code = 130
    except Exception as e:
        progress.event("error", message=str(e))
        raise
    finally:
        finish_distributed()
    return leave_process(code)
