"""Reconstruct a map from particle images, each backprojected through its own deformation.

The selected particles (all, a k-means cluster, a range along a principal component, or
a file of indices) are backprojected into the frame of one state: by default the mean
latent of the selection, or a particle's latent (--particle), or any latent (--z). Each
particle's decoded motion relative to that state bends its rays (deformable
backprojection, as DynaMight's), so particles in other conformations add to the state's
detail instead of blurring it. CTF-weighted, Wiener-filtered in Fourier space, in two
half sets (the star file's rlnRandomSubset when present, else random) whose FSC gives the
resolution at FSC = 0.143 (inside a soft mask around the consensus Gaussians, and
unmasked). A plain (rigid) backprojection of the same particles is written beside it.

Writes MAP.mrc, MAP_masked.mrc (times the soft mask of the FSC, MAP_mask.mrc),
MAP_half1.mrc, MAP_half2.mrc, MAP_rigid.mrc (+ its halves), MAP_fsc.txt,
MAP_fsc.png and MAP_fsc.json (resolutions, particles, particles/s), on the consensus map's
frame (they overlay it). The box defaults to the training box (images Fourier-cropped as
in training); --box up to the particles' own box. When the half maps agree in no more
than the lowest shells ("no signal" in MAP_fsc.json) the files are still written, with a
warning, and the exit status is 3.

examples:
  gaussianem reconstruct run1 -o recon/all.mrc
  gaussianem reconstruct run1 --kmeans 8 --cluster 3 -o recon/cluster3.mrc
  gaussianem reconstruct run1 --pc-range 1,1,3 --part conf -o recon/open.mrc --state particle --particle 17
  gaussianem reconstruct run1 --select picked.txt --z "0.5 -1 0.2" -o recon/picked.mrc --box 256 --device cuda
"""

from __future__ import annotations

import os

from gaussianem.analysis.vocabulary import LATENT_PARTS


def add_args(p):
    p.add_argument("outdir", help="training output folder")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--kmeans", type=int, metavar="K", help="k-means with K clusters; with --cluster")
    how.add_argument("--select", "--particles", dest="select", metavar="FILE",
                     help="particle indices (0-based): .txt or .npy (indices or a boolean mask)")
    how.add_argument("--pc-range", metavar="PC,LO,HI",
                     help="particles whose score along principal component PC lies between LO and HI sd")
    p.add_argument("--cluster", metavar="C[,C2...]", help="with --kmeans: the cluster(s) to reconstruct")
    p.add_argument("--part", choices=LATENT_PARTS, default="all",
                   help="with --pc-range: components of all of z (default) or of one part of a split latent")
    p.add_argument("--state", choices=["mean", "particle", "z"], default=None,
                   help="the state to reconstruct into: mean (default: the selection's mean latent), "
                        "particle (--particle) or z (--z)")
    p.add_argument("--particle", type=int, metavar="I", help="with --state particle: its index (0-based)")
    p.add_argument("--z", metavar='"V1 V2 ..."', help="with --state z: the latent")
    p.add_argument("--box", type=int, help="reconstruction box (default: the training box)")
    p.add_argument("-o", "--output", required=True, metavar="MAP.mrc", help="output map (other files beside it)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--seed", type=int, default=0, help="k-means and random half-set seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto or cuda[:N]")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar", help="progress output")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def state_latent(args, result):
    """The latent to reconstruct into, or None for the selection's mean."""
    from gaussianem.analysis.selection import parse_latent
    from gaussianem.errors import InputError
    state = args.state or ("z" if args.z else "particle" if args.particle is not None else "mean")
    if state == "z":
        if not args.z:
            raise InputError('--state z needs --z "V1 V2 ..."')
        return result.check_z(parse_latent(args.z))[0]
    if state == "particle":
        if args.particle is None:
            raise InputError("--state particle needs --particle I")
        return result.particle_z(args.particle)
    if args.z or args.particle is not None:
        raise InputError("--z and --particle choose the state: use them with --state z / --state particle")
    return None


def main(args):
    import numpy as np
    from gaussianem.analysis.reconstruct import output_paths, reconstruct, write_reconstruction
    from gaussianem.analysis.result import load_result
    from gaussianem.analysis.selection import select_particles
    from gaussianem.device import resolve_device
    from gaussianem.errors import InputError
    from gaussianem.progress import Progress
    if not args.output.lower().endswith(".mrc"):
        raise InputError(f"-o {args.output}: expected a .mrc map name")
    existing = [p for p in output_paths(args.output).values() if os.path.exists(p)]
    if existing and not args.force:
        raise InputError(f"{existing[0]} exists: choose another -o, or --force to replace the files")
    if (args.cluster is None) != (args.kmeans is None):
        raise InputError("--kmeans K and --cluster C go together")
    result = load_result(args.outdir, device=resolve_device(args.device))
    if args.kmeans is not None:
        sel = select_particles(result, clusters=[int(c) for c in args.cluster.split(",")], k=args.kmeans,
                               seed=args.seed)
    elif args.select:
        sel = select_particles(result, particles=args.select)
    elif args.pc_range:
        try:
            pc, lo, hi = (float(v) for v in args.pc_range.split(","))
        except ValueError:
            raise InputError(f"--pc-range {args.pc_range}: expected PC,LO,HI, e.g. 1,-3,-1") from None
        sel = select_particles(result, pc_range=(pc, lo, hi), part=args.part)
    else:
        sel = None
    idx = np.arange(result.n_particles) if sel is None else sel.indices
    what = "all particles" if sel is None else sel.what
    rec = reconstruct(result, idx, state=state_latent(args, result), box=args.box, seed=args.seed,
                      progress=Progress(args.progress))
    out = write_reconstruction(rec, args.output, selection=what)
    print(f"{rec.n_particles} particles ({what}), halves of {rec.n_half[0]} and {rec.n_half[1]} "
          f"({rec.split}), box {rec.grid.box} of {rec.grid.apix:.4g} A, {rec.seconds:.1f} s")
    print(f"resolution at FSC=0.143 (masked / unmasked): deformed {rec.resolution('deformed'):.2f} / "
          f"{rec.resolution('deformed unmasked'):.2f} A, rigid {rec.resolution('rigid'):.2f} / "
          f"{rec.resolution('rigid unmasked'):.2f} A")
    print(f"wrote {out['map']} (+ halves, {os.path.basename(out['rigid'])}, {os.path.basename(out['fsc_png'])})")
    if rec.no_signal:
        import sys
        print(f"gaussianem reconstruct: warning: the half maps agree only in the lowest shells (beyond "
              f"{rec.resolution('deformed'):.0f} A): this map holds no signal; select more particles, or check the "
              "poses", file=sys.stderr)
        return 3
    return 0
