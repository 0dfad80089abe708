"""Export a particle subset back to RELION (.star) or cryoSPARC (.cs).

The selected rows of the particle file the result was trained on are written with all
their original columns (and the optics table); image names are copied unchanged, so
write the subset inside the same project. K-means labels are those of 'gaussianem
analyze' (OUTDIR/analysis/kmeansK/labels.txt when it exists, else computed the same way
and saved there).

examples:
  gaussianem export run1 --kmeans 8 --cluster 0,3 -o Select/cluster0_3.star
  gaussianem export run1 --kmeans 8 --cluster 5 --invert -o without5.star
  gaussianem export run1 --select picked.txt -o picked.star
  gaussianem export run1 --select keep.npy -o keep.cs
  gaussianem export run1 --pc-range 1,-3,-1 --part conf -o open_state.star
"""

from __future__ import annotations

import os


def add_args(p):
    p.add_argument("outdir", help="training output folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--kmeans", type=int, metavar="K", help="select k-means clusters (with --cluster)")
    how.add_argument("--select", metavar="FILE",
                     help="particle indices (0-based): .txt (numbers) or .npy (indices or a boolean mask)")
    how.add_argument("--pc-range", metavar="PC,LO,HI",
                     help="particles whose score along principal component PC lies between LO and HI standard "
                          "deviations (e.g. 1,-3,-1)")
    p.add_argument("--part", choices=["all", "conf", "comp"], default="all",
                   help="with --pc-range: principal components of the whole latent (default) or of its "
                        "conformational or compositional part")
    p.add_argument("--cluster", metavar="C[,C2...]", help="with --kmeans: the cluster(s) to export")
    p.add_argument("--invert", action="store_true", help="export every other particle instead")
    p.add_argument("-o", "--output", required=True, help="output particle file (.star or .cs)")
    p.add_argument("--particles", help="the particle file the result was trained on (default: from config.json)")
    p.add_argument("--datadir", help="folder to resolve image paths against")
    p.add_argument("--seed", type=int, default=0, help="k-means seed when labels are computed (default 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args):
    from gaussianem.errors import InputError
    from gaussianem.analysis.clusters import parse_clusters
    from gaussianem.analysis.result import load_result
    from gaussianem.analysis.selection import export_subset, select_particles
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in (".star", ".cs"):
        raise InputError(f"{args.output}: the output must be a .star or .cs file")
    if args.kmeans is not None and not args.cluster:
        raise InputError("--kmeans needs --cluster (e.g. --cluster 0 or --cluster 0,3)")
    if args.cluster and args.kmeans is None:
        raise InputError("--cluster needs --kmeans K")
    pc_range = None
    if args.pc_range is not None:
        try:
            pc_range = tuple(float(v) for v in args.pc_range.split(","))
        except ValueError:
            pc_range = ()
        if len(pc_range) != 3:
            raise InputError(f"--pc-range {args.pc_range}: expected PC,LO,HI, e.g. 1,-3,-1")
    result = load_result(args.outdir)
    result.require_z()
    sel = select_particles(result, clusters=parse_clusters(args.cluster, args.kmeans) if args.kmeans else None,
                           k=args.kmeans, particles=args.select, pc_range=pc_range, part=args.part,
                           seed=args.seed, save_kmeans=True)
    idx, what = sel.indices, sel.what
    out = export_subset(result, idx, args.output, invert=args.invert, particles=args.particles,
                        datadir=args.datadir)
    inv = "all but " if args.invert else ""
    print(f"{out['n']} of {result.n_particles} particles ({inv}{what}) from {out['source']} -> {out['file']}")
    if os.path.dirname(out["file"]) != os.path.dirname(out["source"]):
        print("note: image names are copied unchanged; they resolve from the source file's project "
              f"({os.path.dirname(out['source'])})")
    return 0
