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
"""

from __future__ import annotations

import os


def add_args(p):
    p.add_argument("outdir", help="training output folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--kmeans", type=int, metavar="K", help="select k-means clusters (with --cluster)")
    how.add_argument("--select", metavar="FILE",
                     help="particle indices (0-based): .txt (numbers) or .npy (indices or a boolean mask)")
    p.add_argument("--cluster", metavar="C[,C2...]", help="with --kmeans: the cluster(s) to export")
    p.add_argument("--invert", action="store_true", help="export every other particle instead")
    p.add_argument("-o", "--output", required=True, help="output particle file (.star or .cs)")
    p.add_argument("--particles", help="the particle file the result was trained on (default: from config.json)")
    p.add_argument("--datadir", help="folder to resolve image paths against")
    p.add_argument("--seed", type=int, default=0, help="k-means seed when labels are computed (default 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args):
    import numpy as np
    from gaussianem.analysis.clusters import kmeans_for_result, parse_clusters
    from gaussianem.analysis.selection import export_subset, read_selection
    from gaussianem.analysis.result import load_result
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in (".star", ".cs"):
        raise ValueError(f"{args.output}: the output must be a .star or .cs file")
    if args.kmeans is not None and not args.cluster:
        raise ValueError("--kmeans needs --cluster (e.g. --cluster 0 or --cluster 0,3)")
    if args.cluster and args.kmeans is None:
        raise ValueError("--cluster needs --kmeans K")
    result = load_result(args.outdir)
    result.require_z()
    if args.kmeans is not None:
        km = kmeans_for_result(result, args.kmeans, seed=args.seed, save=True)
        clusters = parse_clusters(args.cluster, km.k)
        idx = np.flatnonzero(np.isin(km.labels, clusters))
        what = f"k-means k={km.k} cluster(s) {','.join(map(str, clusters))}"
    else:
        idx = read_selection(args.select, result.n_particles)
        what = args.select
    out = export_subset(result, idx, args.output, invert=args.invert, particles=args.particles,
                        datadir=args.datadir)
    inv = "all but " if args.invert else ""
    print(f"{out['n']} of {result.n_particles} particles ({inv}{what}) from {out['source']} -> {out['file']}")
    if os.path.dirname(out["file"]) != os.path.dirname(out["source"]):
        print("note: image names are copied unchanged; they resolve from the source file's project "
              f"({os.path.dirname(out['source'])})")
    return 0
