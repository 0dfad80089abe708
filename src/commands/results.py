"""The commands that make files from a result:

    gaussianem subset (cluster C[,C...] [k K] | particles FILE | pcRange K,A,B [latentPart all|conf|comp]
        | box X0,Y0,X1,Y1 [plot pca|umap] | polygon X1,Y1,X2,Y2,X3,Y3,... [plot pca|umap]
        | outliers only|exclude | lowSignal only|exclude) save FILE.star|.cs [replace true|false]
    gaussianem analyze [OUTDIR] [k K] [pcs N] [steps N] [range A,B] [umap true|false]
        [skipVolumes true|false] [map gaussians|deformed] [device cpu|auto|cuda] [wait true|false]
    gaussianem reconstruct [OUTDIR] output FILE.mrc [cluster C k K | particles FILE |
        pcRange PC,LO,HI [latentPart P]] [state mean|particle|z] [particle I] [z V1,V2,...]
        [box N] [replace true|false] [device cpu|auto|cuda] [wait true|false]
    gaussianem movie FILE.mp4 [pc K] [steps N] [range A,B] [latentPart all|conf|comp]
        [fromParticle I | fromCluster A] [toParticle J | toCluster B] [k K] [map gaussians|deformed]
        [framesPerStep N] [framerate F] [size W,H] [roundTrip true|false] [quality Q] [replace true|false]

``subset`` writes the particles of a selection in the latent space (:mod:`..subsets`).
``analyze`` runs the engine's ``gaussianem analyze`` in its own process, as a job like
``train``; ``reconstruct`` runs ``gaussianem reconstruct`` (deformable backprojection, half
maps, FSC) as a job too and opens the map when it is done (:mod:`..jobs`); ``movie`` records
a path through latent space on the live map and model with ChimeraX's ``movie
record/encode`` (:mod:`..movie`).
"""

from __future__ import annotations

import os

import numpy as np
from chimerax.core.commands import (BoolArg, CmdDesc, EnumOf, Float2Arg, Float3Arg, FloatArg, FloatsArg, Int2Arg,
                                    ListOf, NonNegativeIntArg, OpenFileNameArg, OpenFolderNameArg, PositiveIntArg,
                                    SaveFileNameArg)
from chimerax.core.commands import quote_path_if_necessary as quote
from chimerax.core.errors import UserError

from ..session_state import current_result, require_result
from .args import PATH_KEYWORDS, IntsArg, LatentPartArg, MapKindArg


# ---------------------------------------------------------------------------- subset

def gaussianem_subset(session, save=None, cluster=None, k=None, particles=None, pc_range=None, latent_part=None,
                      replace=False, box=None, polygon=None, plot=None, outliers=None, low_signal=None):
    """Save the particles of k-means clusters, of a selection file, of a range along a
    principal component (of all of z, or of its conformational or compositional part), or
    inside a region of the latent plot (a ``box`` x0,y0,x1,y1 or a lasso ``polygon``
    x1,y1,x2,y2,... on the ``plot`` pca (PC1/PC2 in sd, the default) or umap), or the
    motion ``outliers`` or the ``low_signal`` particles (``only`` those, or all but them:
    ``exclude``) to a RELION
    .star or cryoSPARC .cs file (original rows). An existing file is replaced only with
    ``replace true``; the run's own files and inputs never are."""
    from gaussianem.analysis.selection import box_corners
    res = require_result(session)
    if k is not None and cluster is None:
        raise UserError("k (the number of k-means clusters) goes with cluster")
    if latent_part is not None and pc_range is None:
        raise UserError("latentPart (whose principal components) goes with pcRange, "
                        "e.g. 'pcRange 1,-1,1 latentPart conf'")
    if box is not None and polygon is not None:
        raise UserError("give box or polygon, not both")
    if plot is not None and box is None and polygon is None:
        raise UserError("plot (pca or umap) goes with box or polygon: the plot the region is drawn on")
    region = None
    if box is not None:
        region = box_corners(box)
    elif polygon is not None:
        if len(polygon) < 6 or len(polygon) % 2:
            raise UserError(f"polygon takes the x,y of at least 3 corners (an even count of numbers), "
                            f"got {len(polygon)} numbers")
        region = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    save = os.path.abspath(os.path.expanduser(save))
    if os.path.splitext(save)[1].lower() not in (".star", ".cs"):
        raise UserError(f"cannot save {save}: the subset is saved as a .star or .cs file")
    out = res.subset(save, cluster=cluster, k=k, particles=particles, pc_range=pc_range,
                     part=latent_part or "all", replace=replace, region=region, view=plot or "pca",
                     outliers=outliers, low_signal=low_signal)
    session.logger.info(f"GaussianEM: saved {out['n']} particles ({out['what']}) to {out['file']}")
    return out


gaussianem_subset_desc = CmdDesc(
    keyword=[("save", SaveFileNameArg), ("cluster", IntsArg), ("k", PositiveIntArg),
             ("particles", OpenFileNameArg), ("pc_range", Float3Arg), ("latent_part", LatentPartArg),
             ("replace", BoolArg), ("box", ListOf(FloatArg, 4, 4)), ("polygon", FloatsArg), ("plot", EnumOf(["pca", "umap"])),
             ("outliers", EnumOf(["only", "exclude"])), ("low_signal", EnumOf(["only", "exclude"]))],
    required_arguments=["save"],
    synopsis="save a subset of particles picked in latent space")


# ---------------------------------------------------------------------------- analyze

def gaussianem_analyze(session, outdir=None, k=None, pcs=None, steps=None, range=None, umap=None,  # noqa: A002
                       skip_volumes=False, map=None, device=None, wait=False):  # noqa: A002
    """Run ``gaussianem analyze`` on a run folder (default: the current result's) in its own
    process: PCA, UMAP, k-means and trajectory maps into OUTDIR/analysis/, report.md. Its
    lines are logged as they come; ``wait true`` blocks until it ends (scripts). The
    Latent Explorer of that result then shows the UMAP view."""
    from gaussianem.io.rundir import RunDir

    from ..jobs.arguments import analyze_args
    from ..jobs.local import ANALYSIS, EngineJob
    from ..jobs.registry import registry, start_job
    outdir = _run_folder(session, outdir, "gaussianem analyze /data/P3/gem1")
    run_dir = RunDir(outdir)
    if steps is not None and steps < 2:
        raise UserError(f"a trajectory needs at least 2 steps, got {steps}")
    reg = registry(session)
    for job in reg.active():
        if job.outdir == outdir:
            raise UserError(f"GaussianEM job {job.id} ({job.kind}) is already running on {outdir}")
    args = analyze_args(outdir, k=k, pcs=pcs, steps=steps, umap=umap, skip_volumes=skip_volumes, map_kind=map,
                        range_sd=range, device=device)

    def on_done(job):
        report = os.path.join(run_dir.analysis, "report.md")
        session.logger.info(f"GaussianEM analysis of {outdir} written: {report}")
        res = current_result(session)
        if res is not None and res.outdir == outdir and session.ui.is_gui:
            from ..explorer.tool import show_explorer                      # now with the UMAP view
            show_explorer(session, res)

    job = EngineJob(reg.new_id(), args, outdir, ANALYSIS, logger=session.logger, on_done=on_done,
                    status_every=0.0 if session.ui.is_gui else 10.0)
    return start_job(session, job, "analysis", f"analysing {outdir}", wait)


gaussianem_analyze_desc = CmdDesc(
    optional=[("outdir", OpenFolderNameArg)],
    keyword=[("k", PositiveIntArg), ("pcs", PositiveIntArg), ("steps", PositiveIntArg), ("range", Float2Arg),
             ("umap", BoolArg), ("skip_volumes", BoolArg), ("map", MapKindArg),
             ("device", EnumOf(["cpu", "auto", "cuda"])), ("wait", BoolArg)],
    synopsis="analyse a GaussianEM result's latent space (PCA, UMAP, k-means, maps)")


# ---------------------------------------------------------------------------- reconstruct

def _run_folder(session, outdir, example):
    """The finished run folder a job works on: ``outdir``, or the current result's."""
    from gaussianem.io.rundir import RunDir

    from ..run_state import unfinished_message
    if outdir is None:
        res = current_result(session)
        if res is None:
            raise UserError(f"no GaussianEM result is open: give the run folder, e.g. '{example}'")
        outdir = res.outdir
    outdir = os.path.abspath(os.path.expanduser(outdir))
    run_dir = RunDir(outdir)
    if not run_dir.exists():
        raise UserError(f"{outdir} holds no GaussianEM training run (no {RunDir.CHECKPOINT})")
    if not run_dir.finished():
        raise UserError(unfinished_message(run_dir, session))
    return outdir


def gaussianem_reconstruct(session, outdir=None, output=None, cluster=None, k=None, particles=None,
                           pc_range=None, latent_part=None, state=None, particle=None, z=None, box=None,
                           replace=False, device=None, wait=False):
    """Backproject particles (all, k-means clusters, a selection file or a PC range)
    through their decoded motions into one state (the selection's mean, a particle's or
    a latent), with half maps, FSC and a rigid map beside it, in the engine's own process
    (``gaussianem reconstruct``); the map opens when it is done. ``wait true`` blocks."""
    from gaussianem.analysis.reconstruct import output_paths

    from ..jobs.arguments import reconstruct_args
    from ..jobs.local import RECONSTRUCTION, EngineJob
    from ..jobs.registry import registry, start_job
    outdir = _run_folder(session, outdir, "gaussianem reconstruct /data/P3/gem1 output cluster3.mrc cluster 3")
    if not output or not output.lower().endswith(".mrc"):
        raise UserError(f"output {output!r}: give a .mrc map file name")
    output = os.path.abspath(os.path.expanduser(output))
    if not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"output folder {os.path.dirname(output)} does not exist")
    chosen = [n for n, v in (("cluster", cluster), ("particles", particles), ("pcRange", pc_range)) if v is not None]
    if len(chosen) > 1:
        raise UserError(f"choose the particles one way: {' and '.join(chosen)} were both given")
    if k is not None and cluster is None:
        raise UserError("k (the number of k-means clusters) goes with cluster")
    if latent_part is not None and pc_range is None:
        raise UserError("latentPart goes with pcRange")
    existing = [p for p in output_paths(output).values() if os.path.exists(p)]
    if existing and not replace:
        raise UserError(f"{existing[0]} exists: choose another output, or 'replace true'")
    args = reconstruct_args(outdir, output, cluster=cluster, k=k, particles=particles, pc_range=pc_range,
                            latent_part=latent_part, state=state, particle=particle, z=z, box=box,
                            replace=replace, device=device)

    def on_done(job):
        from chimerax.core.commands import run

        from ..view import show_reconstruction
        files = output_paths(output)
        opened = run(session, f"open {quote(files['masked'])}", log=False) or []
        res = current_result(session)
        how = show_reconstruction(opened[0], res if res is not None and res.outdir == outdir else None) \
            if opened else "not opened"
        ev = job.result or {}
        session.logger.info(f"GaussianEM reconstruction {quote(files['map'])}: {ev.get('particles')} particles, "
                            f"resolution {ev.get('resolution')} A (rigid {ev.get('rigid_resolution')} A) at "
                            f"FSC = 0.143; opened masked ({os.path.basename(files['masked'])}"
                            f"{'' if not opened else ' as #' + opened[0].id_string}), {how}; the unmasked map, "
                            f"half maps, {os.path.basename(files['rigid'])} and {os.path.basename(files['fsc_png'])} "
                            "beside it")
        if job.no_signal:
            session.logger.warning(f"GaussianEM reconstruction {quote(files['map'])}: the half maps agree only in "
                                   "the lowest shells; the map holds no signal")
        if os.path.exists(files["fsc_png"]):
            import base64
            with open(files["fsc_png"], "rb") as f:
                data = base64.b64encode(f.read()).decode()
            session.logger.info(f'<img src="data:image/png;base64,{data}" width="420">', is_html=True)

    job = EngineJob(registry(session).new_id(), args, outdir, RECONSTRUCTION, logger=session.logger,
                    on_done=on_done, status_every=0.0 if session.ui.is_gui else 10.0)
    return start_job(session, job, "reconstruction", f"reconstructing {quote(output)} from {outdir}", wait)


gaussianem_reconstruct_desc = CmdDesc(
    optional=[("outdir", OpenFolderNameArg)],
    keyword=[("output", SaveFileNameArg), ("cluster", IntsArg), ("k", PositiveIntArg),
             ("particles", OpenFileNameArg), ("pc_range", Float3Arg), ("latent_part", LatentPartArg),
             ("state", EnumOf(["mean", "particle", "z"])), ("particle", NonNegativeIntArg), ("z", FloatsArg),
             ("box", PositiveIntArg), ("replace", BoolArg), ("device", EnumOf(["cpu", "auto", "cuda"])),
             ("wait", BoolArg)],
    required_arguments=["output"],
    synopsis="reconstruct a map from particles backprojected through their motions (a job)")


# ---------------------------------------------------------------------------- movie

def gaussianem_movie(session, output, pc=None, steps=10, range=None, latent_part=None,  # noqa: A002
                     from_particle=None, to_particle=None, from_cluster=None, to_cluster=None, k=None,
                     map=None, frames_per_step=None, framerate=None, size=None, round_trip=False,  # noqa: A002
                     quality="good", replace=False):
    """Record the map and model along a path through latent space (as ``gaussianem
    trajectory`` names it: a principal component, or two particles or cluster centres)
    into a movie file, with ChimeraX's ``movie record`` and ``movie encode``:
    ``framesPerStep`` frames (default 10, maps of the latents between them) from each of
    the ``steps`` states to the next, at ``framerate`` frames per second (default 25)."""
    from ..latent_paths import latent_path
    from ..movie import FRAMERATE, FRAMES_PER_STEP, check_movie, record_path
    res = require_result(session)
    check_movie(session, output, replace)          # before the path's maps are made
    path = latent_path(res, pc=pc, steps=steps, range_sd=range, part=latent_part or "all",
                       from_particle=from_particle, to_particle=to_particle, from_cluster=from_cluster,
                       to_cluster=to_cluster, k=k)
    if path.warning:
        session.logger.warning(path.warning)
    framerate = framerate or FRAMERATE
    out = record_path(session, res, path, output, kind=map, frames_per_step=frames_per_step or FRAMES_PER_STEP,
                      framerate=framerate, size=size, round_trip=round_trip, quality=quality, replace=replace)
    session.logger.info(f"GaussianEM movie {quote(out['file'])}: {path.name}, {path.description}, {out['frames']} frames "
                        f"at {framerate} per second, {out['seconds']:.1f} s"
                        f"{' (forward and back)' if round_trip else ''}")
    return out


gaussianem_movie_desc = CmdDesc(
    required=[("output", SaveFileNameArg)],
    keyword=[*PATH_KEYWORDS, ("frames_per_step", PositiveIntArg), ("framerate", PositiveIntArg), ("size", Int2Arg),
             ("round_trip", BoolArg), ("replace", BoolArg),
             ("quality", EnumOf(["highest", "higher", "high", "good", "medium", "fair", "low"]))],
    synopsis="record a movie of the map and model along a path through latent space")
