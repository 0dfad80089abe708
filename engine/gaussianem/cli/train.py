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
  gaussianem train particles.star --consensus map.mrc -o fine --num-gaussians 4000 \
      --init-from run1 --epochs 10
  torchrun --nproc_per_node 4 -m gaussianem.cli.main train particles.star \\
      --consensus map.mrc -o run3 --device cuda --amp
"""

from __future__ import annotations

import argparse


def add_args(p):
    p.add_argument("particles", help="particles: RELION .star or cryoSPARC .cs")
    p.add_argument("--consensus", required=True, help="consensus map (.mrc) the poses refer to")
    p.add_argument("--model", help="fitted atomic model (.pdb/.cif): one Gaussian per residue")
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument("--datadir", help="folder to resolve image paths against (default: the particle file's)")
    p.add_argument("--epochs", type=int,
                   help="epochs in all, both stages of coarse to fine included (default 20; with --resume "
                        "the run's own)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (default 2e-3)")
    p.add_argument("--zdim", type=int,
                   help="an unsplit latent of this size (one decoder moves and re-weights Gaussians); "
                        "default: the split latent below")
    p.add_argument("--zdim-conf", type=int,
                   help="split latent, conformational part: moves Gaussians only (default 8)")
    p.add_argument("--zdim-comp", type=int,
                   help="split latent, compositional part: changes amplitudes only (default 1)")
    p.add_argument("--downsample", type=int, help="train at this box (Fourier cropping; default min(box,128))")
    p.add_argument("--num-gaussians", type=int, help="number of Gaussians (default: one per residue's worth of the molecule's volume, "
                        "measured on the map smoothed to 2 A sigma: about 1.2 per residue)")
    p.add_argument("--init", choices=["kmeans", "grid", "model"], default="kmeans",
                   help="Gaussian initialisation (default kmeans; 'model' needs --model)")
    p.add_argument("--atoms-per-gaussian", type=int,
                   help="with --init model: one Gaussian per N heavy atoms (default: one per residue)")
    p.add_argument("--threshold", type=float, help="map level for initialisation (default mean + 3 sd)")
    p.add_argument("--loss", choices=["l1", "l2", "corr"], default="l2",
                   help="image loss: l2 (default), l1 (GaussianEM's) or corr")
    p.add_argument("--encoder-input", choices=["residual", "image", "both"], default="residual",
                   help="what the image encoder sees: the image minus the consensus projection with the "
                        "particle's pose and CTF (default), the image alone (as cryoDRGN), or both")
    p.add_argument("--lowpass-start", type=float, default=15.0,
                   help="the image loss starts low-pass filtered at this resolution in Angstrom and "
                        "widens to Nyquist over --lowpass-epochs (default 15; 0: full band from the start)")
    p.add_argument("--lowpass-epochs", type=float,
                   help="epochs over which the loss band widens to Nyquist (default 10, or half of "
                        "--epochs when that is less than 20)")
    p.add_argument("--gaussian-features", action=argparse.BooleanOptionalAction, default=None,
                   help="the encoder also reads, per Gaussian, the residual's correlation with its "
                        "projection in the particle's pose, pooled over the Gaussian embedding (a pose-free "
                        "view of missing or extra density; on by default)")
    p.add_argument("--width-change", action="store_true",
                   help="let the conformational decoder also change Gaussian widths (off by default: "
                        "width changes can stand in for compositional change)")
    p.add_argument("--init-from", metavar="RUN",
                   help="start the networks from a finished run (same data and latent sizes), e.g. one "
                        "trained with fewer Gaussians: coarse to fine")
    p.add_argument("--fine-gaussians", type=int, metavar="N",
                   help="coarse to fine: after --coarse-epochs on the default count, train on N Gaussians "
                        "(default: automatic when the training box resolves more detail than the default "
                        "count carries; 0: never)")
    p.add_argument("--coarse-epochs", type=int,
                   help="epochs of the coarse stage (default: half of --epochs)")
    p.add_argument("--beta", type=float, default=1e-6, help="KL weight (default 1e-6)")
    p.add_argument("--kl-warmup", type=float, default=5.0, help="epochs over which the KL weight rises from 0 (default 5)")
    p.add_argument("--w-distance", type=float, default=1.0, help="neighbour distance-preservation weight (default 1.0)")
    p.add_argument("--w-alignment", type=float, default=1e-3, help="neighbour displacement-alignment weight (default 1e-3)")
    p.add_argument("--w-contrastive", type=float, default=0.0, help="latent-neighbourhood term weight")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16) on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--invert", action="store_true", help="multiply images by -1 (dark protein)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores; 1 on busy machines)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTDIR")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="terminal bar, JSON lines on stdout (for ChimeraX), or nothing")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args):
    from gaussianem.model.losses import LossWeights
    from gaussianem.progress import Progress
    from gaussianem.train.stages import saved_epochs
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    epochs = args.epochs
    if epochs is None:
        epochs = (saved_epochs(args.outdir) if args.resume else None) or 20
    extra = {} if args.gaussian_features is None else {"gaussian_features": args.gaussian_features}
    cfg = TrainConfig(
        particles=args.particles, consensus=args.consensus, outdir=args.outdir, model=args.model,
        datadir=args.datadir, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
        zdim=args.zdim, zdim_conf=args.zdim_conf, zdim_comp=args.zdim_comp,
        downsample=args.downsample, num_gaussians=args.num_gaussians, init=args.init,
        atoms_per_gaussian=args.atoms_per_gaussian,
        threshold=args.threshold, loss=args.loss, encoder_input=args.encoder_input,
        lowpass_start=args.lowpass_start or None, lowpass_epochs=args.lowpass_epochs,
        width_change=args.width_change, init_from=args.init_from,
        fine_gaussians=args.fine_gaussians, coarse_epochs=args.coarse_epochs, **extra, kl_warmup=args.kl_warmup, device=args.device, amp=args.amp,
        seed=args.seed, invert=args.invert, num_workers=args.num_workers, threads=args.threads,
        weights=LossWeights(kl=args.beta, distance=args.w_distance, alignment=args.w_alignment,
                            contrastive=args.w_contrastive))
    progress = Progress(args.progress)
    try:
        train(cfg, resume=args.resume, progress=progress)
    except Exception as e:
        progress.event("error", message=str(e))
        raise
    return 0
