"""The ``gaussianem`` commands: ``gaussianem <subcommand> ...``.

Each command is a thin function over the ``gaussianem`` engine (through the session's
:class:`~.session_result.GaussianEMResult` and :mod:`.jobs`): parse, call, show, log.
Users see keywords in camelCase (``zdimConf``); Python uses snake_case (``zdim_conf``).

    gaussianem train PARTICLES consensus MAP|#MAP [model FILE|#MODEL] [outdir PATH]
        [epochs N] [zdim N] [zdimConf N] [zdimComp N] [batchSize N] [downsample N]
        [fineGaussians N] [device auto|cpu|cuda] [wait true|false] [resume true|false]
    gaussianem open OUTDIR [model FILE|#MODEL] [device cpu|cuda] [map gaussians|deformed]
    gaussianem show [z V1,V2,...] [particle I] [pc K value V [latentPart all|conf|comp]] [cluster C [k K]]
        [map gaussians|deformed]
    gaussianem trajectory [pc K] [steps N] [range A,B] [latentPart all|conf|comp] [map gaussians|deformed]
    gaussianem trajectory (fromParticle I | fromCluster A) (toParticle J | toCluster B) [k K] [steps N]
    gaussianem markers [colorBy displacement|amplitude] [z V1,...|particle I]
    gaussianem subset (cluster C[,C...] [k K] | particles FILE | pcRange K,A,B [latentPart all|conf|comp]
        | box X0,Y0,X1,Y1 [plot pca|umap] | polygon X1,Y1,X2,Y2,X3,Y3,... [plot pca|umap]
        | outliers only|exclude | lowSignal only|exclude) save FILE.star|.cs [replace true|false]
    gaussianem analyze [OUTDIR] [k K] [pcs N] [steps N] [umap true|false] [skipVolumes true|false]
        [map gaussians|deformed] [wait true|false]                       (cmd_analysis.py)
    gaussianem reconstruct [OUTDIR] output FILE.mrc [cluster C k K | particles FILE | pcRange PC,LO,HI]
        [state mean|particle|z] [box N] [replace true|false] [device ...] [wait true|false]
    gaussianem movie FILE.mp4 [path options of trajectory] [framesPerStep N] [framerate F]
        [size W,H] [roundTrip true|false] [quality Q]                     (cmd_analysis.py)
    gaussianem fitdomains [particles N] [steps N]                          (cmd_model.py)
    gaussianem jobs
    gaussianem stop [ID]
    gaussianem version

To add a subcommand: write ``gaussianem_xxx(session, ...)`` and ``gaussianem_xxx_desc``,
add it to ``_COMMANDS`` and list it in bundle_info.xml (ChimeraX calls
``register_command`` only for the commands listed there).
"""

from __future__ import annotations

import os

import numpy as np
from chimerax.core.commands import (Annotation, BoolArg, CmdDesc, EnumOf, Float3Arg,
                                    FloatArg, FloatsArg, IntArg, ListOf, NonNegativeIntArg,
                                    OpenFileNameArg, OpenFolderNameArg, PositiveFloatArg, PositiveIntArg,
                                    SaveFileNameArg, StringArg, register)
from chimerax.core.commands import quote_path_if_necessary as quote
from chimerax.core.errors import UserError

from .cmd_analysis import (LATENT_PARTS, MAP_KINDS, IntsArg, PATH_KEYWORDS, gaussianem_analyze, gaussianem_analyze_desc,
                           gaussianem_movie, gaussianem_movie_desc, gaussianem_reconstruct,
                           gaussianem_reconstruct_desc)
from .cmd_model import gaussianem_fitdomains, gaussianem_fitdomains_desc

BUNDLE_DIST = "ChimeraX-GaussianEM"
ENGINE_DIST = "gaussianem"
DEVICES = ["auto", "cpu", "cuda"]


def _dist_version(dist):
    """Version of an installed distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------- arguments

class _ModelOrFileArg(Annotation):
    """``#N`` (an open model of one class) or the name of a file to open."""
    model_arg = None
    what = "model"

    @classmethod
    def parse(cls, text, session):
        if text.lstrip().startswith("#"):
            return cls.model_arg().parse(text, session)
        return OpenFileNameArg.parse(text, session)


class MapOrFileArg(_ModelOrFileArg):
    name = "an open map (#N) or a map file"

    @staticmethod
    def model_arg():
        from chimerax.map import MapArg
        return MapArg


class StructureOrFileArg(_ModelOrFileArg):
    name = "an open atomic model (#N) or a .pdb/.cif file"

    @staticmethod
    def model_arg():
        from chimerax.atomic import AtomicStructureArg
        return AtomicStructureArg




def _state():
    from . import session_state
    return session_state


# ---------------------------------------------------------------------------- version

def gaussianem_version(session):
    """Report the versions of this bundle and of the GaussianEM engine."""
    bundle = _dist_version(BUNDLE_DIST) or "unknown (not installed as a wheel)"
    engine = _dist_version(ENGINE_DIST)
    if engine is None:
        raise UserError(f"GaussianEM bundle {bundle}: the GaussianEM engine (Python "
                        f"package {ENGINE_DIST!r}) is not installed in ChimeraX's Python")
    session.logger.info(f"GaussianEM bundle {bundle}, engine {engine}")
    return {"bundle": bundle, "engine": engine}


gaussianem_version_desc = CmdDesc(synopsis="report GaussianEM bundle and engine versions")


# ---------------------------------------------------------------------------- train

def _default_outdir(particles: str) -> str:
    base = os.path.join(os.path.dirname(os.path.abspath(particles)), "gaussianem")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}_{n}"
    return path


def save_volume_mrc(volume, path: str) -> str:
    """Write an open Volume's full grid to an MRC file with its voxel size and origin."""
    import mrcfile
    d = volume.data
    step = np.asarray(d.step, dtype=np.float64)
    if not np.allclose(step, step[0], rtol=1e-4):
        raise UserError(f"map #{volume.id_string} has voxel size {tuple(step)}: the consensus map must "
                        "have cubic voxels (use 'volume resample')")
    if tuple(d.cell_angles) != (90, 90, 90) or not np.allclose(d.rotation, np.eye(3)):
        raise UserError(f"map #{volume.id_string} has a skewed or rotated grid: save it on an "
                        "orthogonal grid first (use 'volume resample')")
    size = d.size
    if not (size[0] == size[1] == size[2]):
        raise UserError(f"map #{volume.id_string} is {size[0]}x{size[1]}x{size[2]} voxels: the "
                        "consensus map must be a cube of the particles' box")
    array = np.asarray(volume.full_matrix(), dtype=np.float32)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(array)
        m.voxel_size = float(step[0])
        m.header.origin.x, m.header.origin.y, m.header.origin.z = (float(v) for v in d.origin)
    return path


def _save_structure(session, structure, path: str, relative_to=None) -> str:
    """Save an open atomic model as PDB (in the consensus map's frame when given)."""
    from chimerax.core.commands import run
    cmd = f"save {quote(path)} models #{structure.id_string}"
    if relative_to is not None:
        cmd += f" relModel #{relative_to.id_string}"
    run(session, cmd, log=False)
    return path


CONSENSUS_INPUT = "consensus_input.mrc"   # an open consensus map, saved into OUTDIR
MODEL_INPUT = "model_input.pdb"           # an open atomic model, saved into OUTDIR in the map's frame


def _write_inputs(session, outdir, consensus, consensus_path, model, model_path) -> None:
    """Save an open consensus map and atomic model for a new run, at ``consensus_path``
    and ``model_path`` in OUTDIR, after checking that the model lies in the map's frame
    (:func:`.jobs.check_model_in_map`). They are saved to a staging folder first and moved
    into OUTDIR (made here) only once checked, so a refused run leaves nothing behind."""
    import shutil
    import tempfile

    from chimerax.atomic import AtomicStructure
    from chimerax.map import Volume

    from .jobs import check_model_in_map
    with tempfile.TemporaryDirectory(prefix="gaussianem-inputs-") as stage:
        staged = {}
        if isinstance(consensus, Volume):
            staged[consensus_path] = save_volume_mrc(consensus, os.path.join(stage, CONSENSUS_INPUT))
        if isinstance(model, AtomicStructure):
            staged[model_path] = _save_structure(session, model, os.path.join(stage, MODEL_INPUT),
                                                 consensus if isinstance(consensus, Volume) else None)
        if model_path is not None:
            name = (f"the atomic model #{model.id_string} ({model.name})" if isinstance(model, AtomicStructure)
                    else f"the atomic model {model_path}")
            check_model_in_map(staged.get(model_path, model_path), staged.get(consensus_path, consensus_path),
                               name=name)
        os.makedirs(outdir, exist_ok=True)
        for dest, source in staged.items():
            shutil.move(source, dest)


def gaussianem_train(session, particles, consensus=None, model=None, outdir=None, wait=False, resume=False,
                     submit=None, partition=None, gpus=None, time=None, account=None, **options):
    """Train a model in a separate engine process; opens the result when done.

    ``consensus`` and ``model`` may be open models: they are saved into OUTDIR first
    (consensus_input.mrc, model_input.pdb, the model relative to the map). ``options``
    are training options by their engine names (:data:`TRAIN_OPTIONS`: ``epochs``,
    ``zdim_conf``, ...), handed to the engine through
    :func:`gaussianem.train.config.command_line`; with ``resume`` and no ``epochs`` the
    engine keeps the run's own. Returns the :class:`~.jobs.TrainJob`; with ``wait true``
    blocks until training ends and raises UserError with the engine's message if it failed.

    ``submit slurm`` (with ``partition``, ``gpus``, ``time``, ``account``) submits the
    training as a SLURM job (``gaussianem train ... --submit slurm``) and follows it through
    the run folder (:class:`~.jobs.ClusterJob`); ``gaussianem jobs`` shows it, ``gaussianem
    stop`` stops it (checkpoint, then CANCELLED), and the result opens when it is done.

    Checked before anything is written or started: the inputs exist, a new run's atomic
    model lies in the consensus map's frame (:func:`.jobs.check_model_in_map`), and a
    resumed run has epochs left to train (:func:`.jobs.check_resume`).
    """
    from chimerax.atomic import AtomicStructure
    from chimerax.map import Volume

    from gaussianem.io.rundir import RunDir
    from gaussianem.train.config import command_line

    from .jobs import ClusterJob, TrainJob, check_resume, registry
    particles = os.path.abspath(os.path.expanduser(particles))
    if not os.path.isfile(particles):
        raise UserError(f"no such particle file: {particles}")
    if (options.get("zdim_conf") is None) != (options.get("zdim_comp") is None):
        raise UserError("zdimConf and zdimComp go together: give both for a split latent "
                        "(e.g. zdimConf 8 zdimComp 2), or neither")
    if outdir is None:
        if resume:
            raise UserError("resume true needs the outdir of the run to continue")
        outdir = _default_outdir(particles)
    outdir = os.path.abspath(os.path.expanduser(outdir))
    run_dir = RunDir(outdir)
    if resume and not run_dir.exists():
        raise UserError(f"nothing to resume: {outdir} holds no training run (no {RunDir.CHECKPOINT})")
    if not resume and run_dir.exists():
        raise UserError(f"{outdir} already holds a training run: add 'resume true' to continue "
                        "it, or choose another outdir")
    note = check_resume(run_dir, options.get("epochs")) if resume else None
    reg = registry(session)
    for job in reg.active():
        if job.outdir == outdir:
            raise UserError(f"GaussianEM job {job.id} is already training into {outdir}")

    consensus_path = (os.path.join(outdir, CONSENSUS_INPUT) if isinstance(consensus, Volume)
                      else os.path.abspath(os.path.expanduser(consensus)))
    open_model = model
    if isinstance(model, AtomicStructure):
        model_path = os.path.join(outdir, MODEL_INPUT)
    else:
        model_path = None if model is None else os.path.abspath(os.path.expanduser(model))
        open_model = model_path
    if resume:
        os.makedirs(outdir, exist_ok=True)
    else:
        _write_inputs(session, outdir, consensus, consensus_path, model, model_path)
    if note:
        session.logger.info(f"GaussianEM: {note}")

    options.setdefault("device", "auto")
    args = ["train"] + command_line({"particles": particles, "consensus": consensus_path, "outdir": outdir,
                                     "model": model_path, **options})
    if not submit:                      # a local job reports its progress on stdout
        args += ["--progress", "json"]
    if resume:
        args.append("--resume")

    def on_done(job):
        from chimerax.core.commands import run
        cmd = f"gaussianem open {quote(job.outdir)}"
        if isinstance(open_model, AtomicStructure) and not open_model.deleted:
            cmd += f" model #{open_model.id_string}"
        elif isinstance(open_model, str):
            cmd += f" model {quote(open_model)}"
        run(session, cmd)

    if submit:
        args += ["--submit", submit]
        for flag, value in (("--partition", partition), ("--gpus", gpus), ("--time", time),
                            ("--account", account)):
            if value is not None:
                args += [flag, str(value)]
        job = ClusterJob(reg.new_id(), args, outdir, logger=session.logger, on_done=on_done)
    else:
        if any(v is not None for v in (partition, gpus, time, account)):
            raise UserError("partition, gpus, time and account go with 'submit slurm'")
        job = TrainJob(reg.new_id(), args, outdir, logger=session.logger, on_done=on_done,
                       status_every=0.0 if session.ui.is_gui else 10.0)
    try:
        job.start()
    except OSError as e:
        raise UserError(f"cannot {'submit' if submit else 'start'} the GaussianEM training ({e})") from None
    reg.add(job)
    where = f"SLURM job {job.slurm_id}" if submit else f"process {job.pid}"
    session.logger.info(f"GaussianEM job {job.id} started ({where}): "
                        f"{'resuming' if resume else 'training'} into {outdir}"
                        + ("" if wait else "; 'gaussianem jobs' shows its progress, "
                           f"'gaussianem stop {job.id}' stops it"))
    if wait:
        state = job.wait()
        if state == "failed":
            raise UserError(f"GaussianEM training failed: {job.error}")
    return job


# the engine's training options offered as keywords (engine field name, ChimeraX type)
TRAIN_OPTIONS = (("epochs", PositiveIntArg), ("zdim", PositiveIntArg), ("zdim_conf", PositiveIntArg),
                 ("zdim_comp", PositiveIntArg), ("batch_size", PositiveIntArg), ("downsample", PositiveIntArg),
                 ("fine_gaussians", NonNegativeIntArg), ("device", EnumOf(DEVICES)), ("invert", BoolArg),
                 ("lr", PositiveFloatArg), ("datadir", OpenFolderNameArg), ("num_gaussians", PositiveIntArg),
                 ("skip_consensus_check", BoolArg))
gaussianem_train_desc = CmdDesc(
    required=[("particles", OpenFileNameArg)],
    keyword=[("consensus", MapOrFileArg), ("model", StructureOrFileArg), ("outdir", SaveFileNameArg),
             ("wait", BoolArg), ("resume", BoolArg), *TRAIN_OPTIONS, ("submit", EnumOf(["slurm"])),
             ("partition", StringArg), ("gpus", NonNegativeIntArg), ("time", StringArg), ("account", StringArg)],
    required_arguments=["consensus"],
    synopsis="train a deformable Gaussian model on particle images")


# ---------------------------------------------------------------------------- jobs, stop

def gaussianem_jobs(session):
    """List the session's training jobs (and catch up on their progress)."""
    from .jobs import registry
    reg = registry(session)
    reg.poll()
    rows = [job.summary() for job in reg.jobs.values()]
    if not rows:
        session.logger.info("No GaussianEM training jobs in this session")
        return rows
    lines = ["GaussianEM jobs:"]
    for r in rows:
        epoch = "-" if r["epoch"] is None else f"{r['epoch']}/{r['epochs']}"
        loss = "-" if r["loss"] is None else f"{r['loss']:.4g}"
        lines.append(f"  {r['id']}  {r.get('kind', 'train'):<7}  {r['state']:<8}  epoch {epoch:<7}  loss {loss:<9}  "
                     f"{r['outdir']}")
        if r["error"]:
            lines.append(f"      error: {r['error']}")
    session.logger.info("\n".join(lines))
    return rows


gaussianem_jobs_desc = CmdDesc(synopsis="list GaussianEM training jobs")


def gaussianem_stop(session, job_id=None):
    """Stop a training job (all running jobs when no id is given); the engine saves a
    resumable checkpoint first."""
    from .jobs import registry
    reg = registry(session)
    reg.poll()
    if job_id is None:
        jobs = reg.active()
        if not jobs:
            raise UserError("no GaussianEM training job is running")
    else:
        job = reg.get(job_id)
        if job is None:
            known = ", ".join(str(i) for i in reg.jobs) or "none"
            raise UserError(f"no GaussianEM job {job_id} (jobs of this session: {known})")
        if not job.active:
            raise UserError(f"GaussianEM job {job_id} is not running (it is {job.state})")
        jobs = [job]
    stopped = []
    for job in jobs:
        if job.stop():
            stopped.append(job.id)
            what = ("the engine saves " + os.path.join(job.outdir, 'checkpoint.pt') + " and exits"
                    if getattr(job, "kind", "train") == "train" else "the engine exits")
            session.logger.info(f"GaussianEM job {job.id}: stopping; {what}")
    return stopped


gaussianem_stop_desc = CmdDesc(optional=[("job_id", PositiveIntArg)],
                               synopsis="stop a GaussianEM training job")


# ---------------------------------------------------------------------------- open, show

def gaussianem_open(session, outdir, model=None, device="cpu", map=None):  # noqa: A002
    """Open a training result: its map (deformed consensus or rendered from the
    Gaussians, ``map``), latents and atomic model; start the Latent Explorer in the GUI."""
    res = _state().open_result(session, outdir, model=model, device=device, map_kind=map)
    if session.ui.is_gui and res.finished:      # an unfinished run has no latents to explore
        from .tool import show_explorer
        try:
            show_explorer(session, res)
        except UserError as e:          # the maps and commands still work
            session.logger.warning(f"GaussianEM Latent Explorer not shown: {e}")
    return res


gaussianem_open_desc = CmdDesc(
    required=[("outdir", OpenFolderNameArg)],
    keyword=[("model", StructureOrFileArg), ("device", EnumOf(["cpu", "cuda"])), ("map", EnumOf(MAP_KINDS))],
    synopsis="open a trained GaussianEM model")


# LATENT_PARTS: which principal components, of all of z or of the conformational /
# compositional part. The keyword is latentPart (``part``, its first name, is still taken
# by show and trajectory, but abbreviates ``particle``/``particles``, so it is not offered
# elsewhere).


def _latent_part(part, latent_part) -> str:
    """The latent part asked for with ``latentPart`` (or its older name ``part``)."""
    if part is not None and latent_part is not None and part != latent_part:
        raise UserError(f"latentPart {latent_part} and part {part} disagree: give latentPart only")
    return latent_part or part or "all"


def _describe(z) -> str:
    return ", ".join(f"{v:.3g}" for v in np.asarray(z).reshape(-1))


def gaussianem_show(session, z=None, particle=None, pc=None, value=None, cluster=None, k=None, part=None,
                    latent_part=None, map=None):  # noqa: A002
    """Move the current result's map and model to a latent (the map's kind: ``map``, this
    call only); returns the latent."""
    from .session_result import pc_label
    res = _state().require_result(session)
    part = _latent_part(part, latent_part)
    if (pc is None) != (value is None):
        raise UserError("pc and value go together: e.g. 'gaussianem show pc 1 value 2' "
                        "(2 standard deviations along principal component 1)")
    if k is not None and cluster is None:
        raise UserError("k (the number of k-means clusters) goes with cluster")
    latent = res.show(z=z, particle=particle, pc=None if pc is None else (pc, value),
                      cluster=cluster, k=k, part=part, kind=map)
    if z is not None:
        what = "latent"
    elif particle is not None:
        what = f"particle {particle}"
    elif pc is not None:
        what = f"{pc_label(pc, part)} at {value:g} sd"
    elif cluster is not None:
        what = f"k-means cluster {cluster} (k={k or res.k}) centre"
    else:
        what = f"the medoid particle {res.medoid}"
    kind = "" if map is None or map == res.map_kind else f" ({map} map)"
    session.logger.info(f"GaussianEM: showing {what}{kind}, z = ({_describe(latent)})")
    if pc is not None:
        warning = res.pc_value_warning(pc, value, part)
    elif z is not None:
        from .latent_ranges import check_latent
        warning = check_latent(res, latent)
    else:
        warning = None
    if warning:
        session.logger.warning(warning)
    return latent


gaussianem_show_desc = CmdDesc(
    keyword=[("z", FloatsArg), ("particle", NonNegativeIntArg), ("pc", PositiveIntArg), ("value", FloatArg),
             ("cluster", IntArg), ("k", PositiveIntArg), ("latent_part", EnumOf(LATENT_PARTS)),
             ("part", EnumOf(LATENT_PARTS)), ("map", EnumOf(MAP_KINDS))],
    synopsis="show the map of a point in latent space")


def gaussianem_trajectory(session, pc=None, steps=10, range=None, part=None,  # noqa: A002
                          latent_part=None, map=None, from_particle=None, to_particle=None,  # noqa: A002
                          from_cluster=None, to_cluster=None, k=None):
    """Maps (a map series) and an atomic model (one coordinate set per step) along a
    principal component, from range[0] to range[1] standard deviations (default: the
    particles' 5th to 95th percentiles along it), or on the line between two particles or
    k-means centres (``fromParticle``/``fromCluster`` to ``toParticle``/``toCluster``)."""
    from .latent_paths import latent_path
    res = _state().require_result(session)
    path = latent_path(res, pc=pc, steps=steps, range_sd=range, part=_latent_part(part, latent_part),
                       from_particle=from_particle, to_particle=to_particle, from_cluster=from_cluster,
                       to_cluster=to_cluster, k=k)
    series, copy = res.trajectory(path=path, kind=map)
    msg = (f"GaussianEM {path.name} trajectory, {path.description}, {res.kind_for(map)} maps "
           f"#{series.id_string} (vseries play #{series.id_string})")
    if copy is not None:
        msg += f", model #{copy.id_string} (coordset #{copy.id_string})"
    session.logger.info(msg)
    if path.warning:
        session.logger.warning(path.warning)
    return series, copy


gaussianem_trajectory_desc = CmdDesc(
    keyword=[*PATH_KEYWORDS, ("part", EnumOf(LATENT_PARTS))],
    synopsis="play maps along a path through latent space")


def gaussianem_markers(session, color_by="displacement", z=None, particle=None):
    """The Gaussians of the current state (or of a latent) as markers."""
    res = _state().require_result(session)
    ms = res.markers(color_by=color_by, z=z, particle=particle)
    lo, hi = res.marker_range
    a, b = res.marker_scale
    if color_by == "displacement":
        how = (f"coloured by displacement, {lo:.3g} to {hi:.3g} A here, on a fixed scale for all states "
               f"from {a:.3g} to {b:.3g} A (dark blue to yellow; the largest displacement along the "
               "principal components' trajectories)")
    else:
        how = (f"coloured by amplitude change, log2 of the amplitude factor {lo:.3g} to {hi:.3g} here, "
               f"shown clipped to {a:g} to {b:+g} (half to double: blue-white-red)")
    session.logger.info(f"GaussianEM: {ms.num_atoms} Gaussians as markers #{ms.id_string}, {how}; "
                        "colour key shown (closed with the markers)")
    return ms


gaussianem_markers_desc = CmdDesc(
    keyword=[("color_by", EnumOf(["displacement", "amplitude"])), ("z", FloatsArg),
             ("particle", NonNegativeIntArg)],
    synopsis="show the Gaussians of a model as markers")


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
    res = _state().require_result(session)
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
             ("particles", OpenFileNameArg), ("pc_range", Float3Arg), ("latent_part", EnumOf(LATENT_PARTS)),
             ("replace", BoolArg), ("box", ListOf(FloatArg, 4, 4)), ("polygon", FloatsArg), ("plot", EnumOf(["pca", "umap"])),
             ("outliers", EnumOf(["only", "exclude"])), ("low_signal", EnumOf(["only", "exclude"]))],
    required_arguments=["save"],
    synopsis="save a subset of particles picked in latent space")


# Command name -> (function, CmdDesc). Every name here must also be in bundle_info.xml.
_COMMANDS = {
    "gaussianem train": (gaussianem_train, gaussianem_train_desc),
    "gaussianem open": (gaussianem_open, gaussianem_open_desc),
    "gaussianem show": (gaussianem_show, gaussianem_show_desc),
    "gaussianem trajectory": (gaussianem_trajectory, gaussianem_trajectory_desc),
    "gaussianem markers": (gaussianem_markers, gaussianem_markers_desc),
    "gaussianem subset": (gaussianem_subset, gaussianem_subset_desc),
    "gaussianem analyze": (gaussianem_analyze, gaussianem_analyze_desc),
    "gaussianem movie": (gaussianem_movie, gaussianem_movie_desc),
    "gaussianem reconstruct": (gaussianem_reconstruct, gaussianem_reconstruct_desc),
    "gaussianem fitdomains": (gaussianem_fitdomains, gaussianem_fitdomains_desc),
    "gaussianem jobs": (gaussianem_jobs, gaussianem_jobs_desc),
    "gaussianem stop": (gaussianem_stop, gaussianem_stop_desc),
    "gaussianem version": (gaussianem_version, gaussianem_version_desc),
}


def register_command(command_name, logger):
    """Register one command; called lazily by the bundle API on its first use."""
    try:
        function, desc = _COMMANDS[command_name]
    except KeyError:
        logger.warning(f"{command_name!r} is listed in bundle_info.xml "
                       "but not implemented in this version of ChimeraX-GaussianEM")
        return
    from .session_result import user_errors
    register(command_name, desc, user_errors(function), logger=logger)
