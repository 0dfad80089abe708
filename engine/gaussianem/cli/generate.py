"""Generate volumes (and displaced atomic models) for chosen latents.

Writes DIR/vol_000.mrc ... (one per latent, in input order) on the consensus map's grid
(same voxel size and origin, so they overlay it), DIR/z.txt with the latents, and with
an atomic model (--model, by default the one given at training) DIR/model_000.pdb ...
(or .cif, as the input): the model moved by the decoded Gaussian displacements. The
bond-length RMS change of each model is printed and saved in DIR/generate.json.

--fit-domains: the model's rigid domains (found from the decoded displacements, as
DynDom finds them) are then fitted as rigid bodies to the particles of each latent
(--fit-particles, default 200): the decoded field shows which parts move and which way,
the particles give the full amplitude of a large domain motion. Each latent's particles
are found by their images (--fit-sort images, the default): every particle is placed on
the domains' path by the model projection it matches best, and a latent at the end of the
latent's range takes the particles at the end of the images' range (the latent alone
compresses the ends of a motion); --fit-sort latent takes the particles nearest the
latent. Each fit is checked on particles it did not see: fitted to half of the latent's
particles, it must match the other half better than the displaced model, or the displaced
model is written instead (and the log and DIR/generate.json say so). The atoms are
projected one Gaussian per residue: at box 64 on one CPU thread, 8,000 particles and ten
latents took 4.5 minutes (about two for the domains and the path, 17 seconds per latent;
1a28, two domains moving at once); use a GPU (--device auto) for many. Where two domains move at
once and the decoder carries one of them too little to split it off, the particles of the
most moved state judge the finer splits (each fitted to half of them and kept only when
the other half confirms it), so both are found. Where one domain moves after the other,
a state's particles can be a mixture and the fitted model worse than the displaced one;
when the particles of the model's own latent pull a domain over 0.6 of its way to the far
state, this is seen, and the displaced models are written and the log says why
(docs/validation.md, "--fit-domains where two domains move at once").

Maps (--map): "deformed" (the default while the consensus map the run was trained on
still exists) is the consensus map's own density carried by the decoded Gaussians, each
moving the share of the map it explains rigidly with its neighbourhood and scaling it by
its amplitude change: the consensus map's detail in each state. "gaussians" renders the
few hundred deformed Gaussians (a blurred picture of the state; the maps of earlier
versions). A folder that already holds generated files is refused unless --force (which
replaces them).

examples:
  gaussianem generate run1 --z "0.5 -1.2 0.3" -o gen
  gaussianem generate run1 --z "0 0 0" --z "1 0 0" -o gen --no-model
  gaussianem generate run1 --z-file picked.npy -o gen --box 128
  gaussianem generate run1 --particle 3 17 -o gen --model fitted.cif
  gaussianem generate run1 --kmeans 4 -o states --model fitted.cif --fit-domains
  gaussianem generate run1 --pc 1 --steps 20 --range -3 3 -o pc1
  gaussianem generate run1 --pc 1 --part conf -o motion     # split latent: z_conf only
  gaussianem generate run1 --kmeans 8 -o kmeans8
  gaussianem generate run1 --kmeans 8 -o kmeans8 --force --map gaussians
"""

from __future__ import annotations

import os

from gaussianem.analysis.vocabulary import LATENT_PARTS, MAP_KINDS, pc_label


def add_args(p):
    p.add_argument("outdir", help="training output folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--z", action="append", metavar='"V1 V2 ..."',
                     help='a latent (zdim numbers, e.g. --z "0.5 -1 2" or --z=-0.5,1,2); repeat for several')
    src.add_argument("--z-file", help="latents, one per row: .npy or text")
    src.add_argument("--particle", type=int, nargs="+", metavar="I", help="particles' latents (0-based indices)")
    src.add_argument("--pc", type=int, metavar="K", help="along principal component K (1-based)")
    src.add_argument("--kmeans", type=int, metavar="K", help="at the centres of K k-means clusters (as analyze)")
    p.add_argument("--steps", type=int, help="with --pc: number of latents (default 10)")
    p.add_argument("--range", type=float, nargs=2, metavar=("A", "B"),
                   help="with --pc: from A to B standard deviations (default: the particles' 5th to 95th "
                        "percentiles along the PC, as cryoDRGN)")
    p.add_argument("--part", choices=LATENT_PARTS, default="all",
                   help="with --pc: components of all of z, or of the conformational / compositional "
                        "part of a split latent (default all)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--map", choices=MAP_KINDS, default=None,
                   help="deformed: the consensus map carried by the decoded Gaussian motions and amplitude "
                        "changes (default while the run's consensus map file exists); gaussians: maps "
                        "rendered from the deformed Gaussians (the fallback)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that already holds generated files, replacing them")
    p.add_argument("--box", type=int, help="map box in voxels (default: the consensus box; same extent)")
    p.add_argument("--apix", type=float, help="voxel size in A (default: the consensus one, or extent / box)")
    p.add_argument("--model", help="atomic model (.pdb/.cif) fitted in the consensus map "
                                   "(default: the model given at training)")
    p.add_argument("--no-model", action="store_true", help="write volumes only")
    p.add_argument("--reference", default="auto", metavar='auto|consensus|"V1 V2 ..."',
                   help="the state the model stands for: auto (default) finds the latent whose deformed "
                        "Gaussians best match the model and moves it relative to that; consensus moves it "
                        "relative to the consensus Gaussians; or that state's latent values")
    p.add_argument("--fit-domains", action="store_true",
                   help="fit the model's rigid domains to the particles nearest each latent")
    p.add_argument("--fit-particles", type=int, default=200, metavar="N",
                   help="with --fit-domains: particles per latent (default 200)")
    p.add_argument("--fit-steps", type=int, default=80, metavar="N",
                   help="with --fit-domains: optimiser steps per latent (default 80)")
    p.add_argument("--fit-sort", choices=["images", "latent"], default="images",
                   help="with --fit-domains: each latent's particles by their images (default) or the ones "
                        "nearest the latent")
    p.add_argument("--seed", type=int, default=0, help="with --kmeans: k-means seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto or cuda[:N]")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def latents(args, result):
    """(B, zdim) latents and a description of where they came from."""
    import numpy as np
    from gaussianem.analysis.clusters import kmeans_for_result
    from gaussianem.analysis.selection import parse_latent, read_latents
    from gaussianem.errors import InputError
    if args.pc is None and (args.steps is not None or args.range is not None):
        raise InputError("--steps and --range apply to --pc only")
    if args.z:
        return result.check_z(np.concatenate([parse_latent(t) for t in args.z])), "--z"
    if args.z_file:
        return result.check_z(read_latents(args.z_file)), args.z_file
    if args.particle:
        return np.stack([result.particle_z(i) for i in args.particle]), f"particles {args.particle}"
    if args.pc is not None:
        rng = tuple(args.range) if args.range else result.pc_percentiles(args.pc, args.part)
        z = result.trajectory(pc=args.pc, steps=args.steps or 10, range_sd=rng, part=args.part)
        name = pc_label(args.pc, args.part)
        return z, (f"{name} from {rng[0]:.3g} to {rng[1]:.3g} sd"
                   + ("" if args.range else " (the particles' 5th to 95th percentiles)"))
    km = kmeans_for_result(result, args.kmeans, seed=args.seed)
    return km.centres, f"k-means k={args.kmeans} centres (particles {km.centre_index.tolist()})"


def map_kind(args, result) -> str:
    """--map, or its default: deformed while the consensus map file exists."""
    if args.map:
        return args.map
    if result.has_consensus_map():
        return "deformed"
    print(f"note: the run's consensus map ({result.consensus_path or 'not recorded'}) is not there; "
          "writing maps rendered from the Gaussians (--map gaussians)")
    return "gaussians"


def main(args):
    from gaussianem.analysis.outputs import generated_files, output_grid, remove_stale, write_models, write_volumes
    from gaussianem.io.atomic import write_json
    from gaussianem.analysis.result import load_result
    from gaussianem.device import resolve_device
    from gaussianem.errors import InputError
    out = args.output
    old = generated_files(out)
    if old and not args.force:
        shown = ", ".join(old[:3]) + (", ..." if len(old) > 3 else "")
        raise InputError(f"{out} already holds generated files ({shown}): use --force to replace them, "
                         "or another -o folder")
    result = load_result(args.outdir, device=resolve_device(args.device))
    z, source = latents(args, result)
    grid = output_grid(result, args.box, args.apix)
    kind = map_kind(args, result)
    if kind == "deformed":
        result.consensus_map()                                        # its error before any writing
    model = None if args.no_model else (args.model or result.default_model_path())
    if args.fit_domains and not model:
        raise InputError("--fit-domains needs an atomic model: give --model (the run has no default model)"
                         if not args.no_model else "--fit-domains and --no-model exclude each other")
    if args.fit_particles < 1 or args.fit_steps < 1:
        raise InputError("--fit-particles and --fit-steps must be at least 1")
    fit = ({"particles": args.fit_particles, "steps": args.fit_steps, "sort": args.fit_sort} if args.fit_domains
           else None)
    reference, ref_info = None, None
    if model and args.reference == "auto":
        from gaussianem.analysis.reference import model_latent
        from gaussianem.io.models import read_model
        ml = model_latent(result, read_model(model))
        reference = ml.z
        ref_info = {"z": ml.z.tolist(), "distance_A": ml.distance, "consensus_distance_A": ml.consensus_distance}
        print(f"the model matches latent [{' '.join(f'{v:.3g}' for v in ml.z)}] (residues {ml.distance:.2f} A "
              f"from the deformed Gaussians, {ml.consensus_distance:.2f} A from the consensus ones); "
              "models are moved relative to it")
    elif model and args.reference != "consensus":
        from gaussianem.analysis.selection import parse_latent
        reference = result.check_z(parse_latent(args.reference))[0]
        ref_info = {"z": reference.tolist()}
    models = write_models(result, model, z, out, reference=reference, fit=fit) if model else []   # fails early if off the map
    vols = write_volumes(result, z, out, grid, kind=kind)
    if not model:
        remove_stale(out, "model", (".pdb", ".cif"), 0)               # from an earlier run
    report = {"result": result.outdir, "source": source, "grid": grid.as_dict(), "map": kind,
              "consensus": result.consensus_path if kind == "deformed" else None,
              "z": z.tolist(), "volumes": [os.path.basename(v) for v in vols],
              "model": os.path.abspath(model) if model else None, "model_reference": ref_info,
              "fit_domains": fit,
              "models": [{**m, "file": os.path.basename(m["file"])} for m in models]}
    write_json(os.path.join(out, "generate.json"), report)
    for i, v in enumerate(vols):
        line = f"{v}"
        if models:
            m = models[i]
            line += f"  {m['file']}  bond-length RMS change {m['bond_length_rms_change']:.3f} A"
        print(line)
    what = "deformed consensus map(s)" if kind == "deformed" else "map(s) rendered from the Gaussians"
    print(f"{len(vols)} {what} on a {grid.box}^3 grid of {grid.apix:.4g} A voxels in {out}")
    return 0
