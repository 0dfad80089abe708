"""Analyse a result's latent space: PCA, UMAP, k-means, trajectories and a report.

Writes everything under OUTDIR/analysis/: report.md (links to all of it), summary.json
(explained variance, cluster sizes), pca_density.png, umap_density.png, loss.png,
pca_variance.png, embeddings.npz, pcN/vol_000.mrc ... (volumes along the first
principal components, on the consensus map's grid), between_I_J/ (from particle I to
particle J) and kmeansK/ (vol_000.mrc ... at the cluster centres, labels.txt with one
cluster per particle, centres.txt and centre_particles.txt).

examples:
  gaussianem analyze run1
  gaussianem analyze run1 --kmeans 20 --pcs 2 --trajectory-steps 20
  gaussianem analyze run1 --between 105 2291 --no-umap
  gaussianem analyze run1 --skip-volumes          # numbers and plots only
"""

from __future__ import annotations

import argparse
import sys

from gaussianem.analysis.vocabulary import MAP_KINDS


def add_args(p):
    p.add_argument("outdir", help="training output folder")
    p.add_argument("--kmeans", type=int, default=8, metavar="K", help="number of k-means clusters (default 8)")
    p.add_argument("--pcs", type=int, default=3, help="trajectories along this many principal components (default 3)")
    p.add_argument("--umap", action=argparse.BooleanOptionalAction, default=True,
                   help="UMAP embedding and density plot (default on; skipped below 20 particles)")
    p.add_argument("--trajectory-steps", type=int, default=10, help="volumes per trajectory (default 10)")
    p.add_argument("--range", type=float, nargs=2, metavar=("A", "B"),
                   help="principal-component trajectories from A to B standard deviations (default: the "
                        "particles' 5th to 95th percentiles along each component)")
    p.add_argument("--map", choices=MAP_KINDS,
                   help="deformed: the consensus map carried by the decoded motions (default while the run's "
                        "consensus map is there); gaussians: maps rendered from the Gaussians")
    p.add_argument("--between", type=int, nargs=2, action="append", default=[], metavar=("I", "J"),
                   help="also a trajectory from particle I to particle J (0-based; repeatable)")
    p.add_argument("--skip-volumes", action="store_true", help="write no volumes (numbers, labels and plots only)")
    p.add_argument("--box", type=int, help="write volumes with this box (same extent; default the consensus box)")
    p.add_argument("--seed", type=int, default=0, help="k-means and UMAP seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto or cuda[:N]")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args):
    from gaussianem.analysis.report import analyze
    from gaussianem.analysis.result import load_result
    from gaussianem.device import resolve_device
    result = load_result(args.outdir, device=resolve_device(args.device))
    s = analyze(result, k=args.kmeans, pcs=args.pcs, umap=args.umap, steps=args.trajectory_steps,
                range_sd=tuple(args.range) if args.range else None, between=args.between, map_kind=args.map, skip_volumes=args.skip_volumes,
                box=args.box, seed=args.seed, log=lambda t: print(t, file=sys.stderr))
    ev = ", ".join(f"{v:.2f}" for v in s["pca"]["explained_variance_ratio"][:5])
    print(f"{s['n_particles']} particles, zdim {s['zdim']}; PCA explained variance {ev}")
    print(f"k-means k={s['kmeans']['k']}: cluster sizes {' '.join(str(v) for v in s['kmeans']['sizes'])}")
    print(f"report: {s['files']['report']}")
    return 0
