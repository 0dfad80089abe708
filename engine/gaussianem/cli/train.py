"""Train the heterogeneity model: a latent space of deformed, re-weighted Gaussians.

Needs particles with consensus poses and CTF (RELION .star or cryoSPARC .cs) and the
consensus map they were refined against. Writes OUTDIR/config.json, gaussians.pt,
checkpoint.pt, checkpoints/epoch_NNN.pt, latents.npz and log.jsonl.

Coarse to fine: when the training box resolves finer detail than the default count of
Gaussians carries (Nyquist finer than about 3.5 A, e.g. box 128 at 1 A/pixel), the first
half of the epochs trains on the default count in OUTDIR/coarse and the second half on
more Gaussians (counted for the Nyquist resolution), starting from the coarse networks.
--fine-gaussians N sets that count (and asks for the two stages), 0 turns them off.

examples:
  gaussianem train sim/particles.star --consensus sim/consensus.mrc -o run1
  gaussianem train J42_particles.cs --datadir /data/P3 --consensus J42_map.mrc \\
      --model fitted.pdb -o run2 --epochs 30 --downsample 128 --zdim-conf 8 --zdim-comp 2
  gaussianem train particles.star --consensus map.mrc -o run1 --resume --epochs 40
  # coarse to fine, explicit: 10 epochs on the default count, then 10 on 4000 Gaussians
  gaussianem train particles.star --consensus map.mrc -o run4 --epochs 20 --fine-gaussians 4000
  # or by hand, from any finished run (same data, training box and latent sizes)
  gaussianem train particles.star --consensus map.mrc -o fine --num-gaussians 4000 \\
      --init-from run1 --epochs 10
  torchrun --nproc_per_node 4 -m gaussianem.cli.main train particles.star \\
      --consensus map.mrc -o run3 --device cuda --amp
  # as a SLURM job (4 GPUs, torchrun), then follow and stop it (docs/cluster.md)
  gaussianem train particles.star --consensus map.mrc -o run5 --device cuda --amp \\
      --submit slurm --partition gpu --gpus 4 --time 12:00:00
  gaussianem status run5;  gaussianem stop run5
"""

from __future__ import annotations


def add_args(p):
    from gaussianem.train.config import add_arguments
    add_arguments(p)                     # every training option, from TrainConfig's fields
    p.add_argument("--resume", action="store_true", help="continue the run in OUTDIR")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="terminal bar, JSON lines on stdout (for ChimeraX), or nothing")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    from gaussianem.cluster.submit import add_arguments as add_submit_arguments
    add_submit_arguments(p)              # --submit slurm and the job's resources (docs/cluster.md)


def main(args):
    from gaussianem.cluster.submit import check_local, submit
    if args.submit:
        submit(args)
        return 0
    check_local(args)
    from gaussianem.progress import Progress
    from gaussianem.train.config import from_arguments
    from gaussianem.train.distributed import finish_distributed
    from gaussianem.train.loop import train
    cfg = from_arguments(args, resume=args.resume)
    progress = Progress(args.progress)
    try:
        train(cfg, resume=args.resume, progress=progress)
    except Exception as e:
        progress.event("error", message=str(e))
        raise
    finally:
        finish_distributed()
    return 0
