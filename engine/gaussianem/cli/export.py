"""Export a particle subset back to RELION (.star) or cryoSPARC (.cs).

The selected rows of the particle file the result was trained on are written with all
their original columns (and the optics table); image names are copied unchanged, so
write the subset inside the same project. With --relion-project DIR the subset becomes
a finished job of that RELION project, DIR/External/jobNNN/particles.star, listed in
RELION's GUI (added to DIR/default_pipeline.star), its image names relative to DIR.
K-means labels are those of 'gaussianem analyze' (OUTDIR/analysis/kmeansK/labels.txt
when it exists, else computed the same way and saved there); --labels writes them as a
column (rlnClassNumber = cluster + 1; in a .cs file alignments3D/class = cluster).
A .cs file made from another format has the fields cryoSPARC's refinements write.

examples:
  gaussianem export run1 --kmeans 8 --cluster 0,3 -o Select/cluster0_3.star
  gaussianem export run1 --kmeans 8 --cluster 5 --invert -o without5.star
  gaussianem export run1 --kmeans 8 --cluster 0,3 --relion-project /data/proj --job-name open
  gaussianem export run1 --kmeans 8 --labels -o all_labelled.star
  gaussianem export run1 --select picked.txt -o picked.star
  gaussianem export run1 --select keep.npy -o keep.cs
  gaussianem export run1 --pc-range 1,-3,-1 --part conf -o open_state.star
  gaussianem export run1 --outliers --invert -o without_outliers.star
  gaussianem export run1 --low-signal --invert -o with_signal.star
"""

from __future__ import annotations

import os
import shlex

from gaussianem.analysis.vocabulary import LATENT_PARTS


def add_args(p):
    p.add_argument("outdir", help="training output folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--kmeans", type=int, metavar="K",
                     help="k-means with K clusters: export clusters (--cluster) and/or label particles (--labels)")
    how.add_argument("--select", metavar="FILE",
                     help="particle indices (0-based): .txt (numbers) or .npy (indices or a boolean mask)")
    how.add_argument("--pc-range", metavar="PC,LO,HI",
                     help="particles whose score along principal component PC lies between LO and HI standard "
                          "deviations (e.g. 1,-3,-1)")
    how.add_argument("--outliers", action="store_true",
                     help="the particles the decoder moves far more than the rest (over 3 times the median "
                          "particle's displacement and over 0.5 A RMS, the rule of health.json's "
                          "motion_outliers): often junk; with --invert, all the others")
    how.add_argument("--low-signal", action="store_true",
                     help="the particles whose images match the consensus projections at under half their "
                          "optics group's intensity scale (junk without the protein); with --invert, the others")
    p.add_argument("--part", choices=LATENT_PARTS, default="all",
                   help="with --pc-range: principal components of the whole latent (default) or of its "
                        "conformational or compositional part")
    p.add_argument("--cluster", metavar="C[,C2...]", help="with --kmeans: the cluster(s) to export")
    p.add_argument("--labels", action="store_true",
                   help="with --kmeans: write each particle's cluster (rlnClassNumber = cluster + 1; .cs: "
                        "alignments3D/class); without --cluster, all particles")
    p.add_argument("--invert", action="store_true", help="export every other particle instead")
    p.add_argument("-o", "--output", help="output particle file (.star or .cs); never the particle file the "
                                           "result was trained on")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.add_argument("--relion-project", metavar="DIR",
                   help="instead of -o: write DIR/External/jobNNN/particles.star and add the job to the "
                        "RELION project's pipeline, so RELION's GUI lists it")
    p.add_argument("--job-name", metavar="NAME", help="with --relion-project: the job's alias (External/NAME)")
    p.add_argument("--particles", help="the particle file the result was trained on (default: from config.json)")
    p.add_argument("--datadir", help="folder to resolve image paths against")
    p.add_argument("--seed", type=int, default=0, help="k-means seed when labels are computed (default 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args):
    import numpy as np
    from gaussianem.errors import InputError
    from gaussianem.analysis.clusters import kmeans_for_result, parse_clusters
    from gaussianem.analysis.result import load_result
    from gaussianem.analysis.selection import export_subset, select_particles
    if (args.output is None) == (args.relion_project is None):
        raise InputError("give -o FILE (.star or .cs) or --relion-project DIR, one of them")
    if args.job_name is not None and args.relion_project is None:
        raise InputError("--job-name needs --relion-project DIR")
    if args.output is not None and os.path.splitext(args.output)[1].lower() not in (".star", ".cs"):
        raise InputError(f"{args.output}: the output must be a .star or .cs file")
    if args.labels and args.kmeans is None:
        raise InputError("--labels needs --kmeans K (e.g. --kmeans 8 --labels)")
    if args.kmeans is not None and not args.cluster and not args.labels:
        raise InputError("--kmeans needs --cluster (e.g. --cluster 0 or --cluster 0,3), or --labels")
    if args.cluster and args.kmeans is None:
        raise InputError("--cluster needs --kmeans K")
    if args.output is not None:
        check_output(args.output, args.outdir, args.particles, args.force)
    pc_range = None
    if args.pc_range is not None:
        try:
            pc_range = tuple(float(v) for v in args.pc_range.split(","))
        except ValueError:
            pc_range = ()
        if len(pc_range) != 3:
            raise InputError(f"--pc-range {args.pc_range}: expected PC,LO,HI, e.g. 1,-3,-1")
    result = load_result(args.outdir)
    n = len(result.require_z())
    labels = None
    if args.labels:
        km = kmeans_for_result(result, args.kmeans, seed=args.seed, save=True)
        labels = km.labels
    if args.labels and not args.cluster:
        idx, what = np.arange(n), f"all, labelled with k-means clusters (k={args.kmeans})"
    else:
        sel = select_particles(result, clusters=parse_clusters(args.cluster, args.kmeans) if args.kmeans else None,
                               k=args.kmeans, particles=args.select, pc_range=pc_range, part=args.part,
                               seed=args.seed, save_kmeans=True, outliers=args.outliers,
                               low_signal=args.low_signal)
        idx, what = sel.indices, sel.what
    out = export_subset(result, idx, args.output, invert=args.invert, particles=args.particles,
                        datadir=args.datadir, labels=labels, relion_project=args.relion_project,
                        job_name=args.job_name, command=_command_line(args))
    inv = "all but " if args.invert else ""
    print(f"{out['n']} of {result.n_particles} particles ({inv}{what}) from {out['source']} -> {out['file']}")
    if out["job"] is not None:
        print(f"RELION job {out['job']} added to {os.path.join(args.relion_project, 'default_pipeline.star')}")
        if out["absolute_names"]:
            print(f"note: {out['absolute_names']} image(s) are in stacks outside the project, named by "
                  "absolute path")
    elif os.path.dirname(out["file"]) != os.path.dirname(out["source"]) and out["file"].endswith(".star"):
        print("note: image names are copied unchanged; they resolve from the source file's project "
              f"({os.path.dirname(out['source'])})")
    return 0


def check_output(output: str, outdir: str, particles: str | None, force: bool) -> None:
    """Refuse to write onto the files the result was trained on (its particle file, or the
    one given by --particles, and cryoDRGN's pickles), even with ``force``, and onto any
    existing file without ``force``."""
    from gaussianem.errors import InputError, ResultError
    from gaussianem.io.rundir import RunDir
    if not os.path.exists(output):
        return
    try:
        train = RunDir(outdir).read_config().get("train", {})
    except ResultError:
        train = {}                 # not a result: loading it says so
    inputs = [particles] + [train.get(k) for k in ("particles", "poses", "ctf", "ind")]
    for source in (p for p in inputs if p and os.path.exists(p)):
        if os.path.samefile(output, source):
            raise InputError(f"-o {output} is the particle file this result was trained on ({source}); "
                             "exporting would replace it: write the subset to another file")
    if not force:
        raise InputError(f"-o {output} exists: choose another file name, or --force to replace it")


def _command_line(args) -> str:
    """The command, as it could be typed again (for a RELION job's note.txt)."""
    words = ["gaussianem", "export", args.outdir]
    for option in ("kmeans", "cluster", "select", "pc_range", "part", "particles", "datadir", "seed",
                   "output", "relion_project", "job_name"):
        value = getattr(args, option)
        if value is not None and not (option == "part" and value == "all") and not (
                option == "seed" and value == 0):
            words += ["--" + option.replace("_", "-"), str(value)]
    words += [f"--{flag.replace('_', '-')}" for flag in ("labels", "invert", "outliers", "low_signal", "force")
              if getattr(args, flag)]
    return " ".join(shlex.quote(w) for w in words)
