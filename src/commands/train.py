"""The commands that train and follow the session's engine jobs:

    gaussianem train PARTICLES consensus MAP|#MAP [model FILE|#MODEL] [outdir PATH]
        [epochs N] [zdim N] [zdimConf N] [zdimComp N] [batchSize N] [downsample N]
        [fineGaussians N] [device auto|cpu|cuda] [wait true|false] [resume true|false]
        [submit slurm [partition P] [gpus N] [time T] [account A]]
    gaussianem jobs
    gaussianem stop [ID]
    gaussianem version

Training runs in the engine's own process (:mod:`..jobs`); its result opens when it is done.
"""

from __future__ import annotations

import os

from chimerax.core.commands import (BoolArg, CmdDesc, EnumOf, NonNegativeFloatArg, NonNegativeIntArg,
                                    OpenFileNameArg, OpenFolderNameArg, PositiveFloatArg, PositiveIntArg,
                                    SaveFileNameArg, StringArg)
from chimerax.core.commands import quote_path_if_necessary as quote
from chimerax.core.errors import UserError

from .args import DEVICES, MapOrFileArg, StructureOrFileArg

BUNDLE_DIST = "ChimeraX-GaussianEM"
ENGINE_DIST = "gaussianem"


def _dist_version(dist):
    """Version of an installed distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


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

def gaussianem_train(session, particles, consensus=None, model=None, outdir=None, wait=False, resume=False,
                     submit=None, partition=None, gpus=None, time=None, account=None, **options):
    """Train a model in a separate engine process; opens the result when done.

    ``consensus`` and ``model`` may be open models: they are saved into OUTDIR first
    (consensus_input.mrc, model_input.pdb, the model relative to the map). ``options``
    are training options by their engine names (:data:`TRAIN_OPTIONS`: ``epochs``,
    ``zdim_conf``, ...), handed to the engine through
    :func:`gaussianem.train.config.command_line`; with ``resume`` and no ``epochs`` the
    engine keeps the run's own. Returns the :class:`~..jobs.local.EngineJob`; with ``wait true``
    blocks until training ends and raises UserError with the engine's message if it failed.

    ``submit slurm`` (with ``partition``, ``gpus``, ``time``, ``account``) submits the
    training as a SLURM job (``gaussianem train ... --submit slurm``) and follows it through
    the run folder (:class:`~..jobs.slurm.ClusterJob`); ``gaussianem jobs`` shows it, ``gaussianem
    stop`` stops it (checkpoint, then CANCELLED), and the result opens when it is done.

    Checked before anything is written or started: the inputs exist, a new run's atomic
    model lies in the consensus map's frame (:func:`..jobs.inputs.check_model_in_map`), and a
    resumed run has epochs left to train (:func:`..jobs.inputs.check_resume`).
    """
    from chimerax.atomic import AtomicStructure
    from chimerax.map import Volume

    from gaussianem.io.rundir import RunDir
    from gaussianem.train.config import command_line

    from ..jobs.inputs import (CONSENSUS_INPUT, MODEL_INPUT, check_resume, default_outdir,
                               write_inputs)
    from ..jobs.registry import registry
    particles = os.path.abspath(os.path.expanduser(particles))
    if not os.path.isfile(particles):
        raise UserError(f"no such particle file: {particles}")
    if (options.get("zdim_conf") is None) != (options.get("zdim_comp") is None):
        raise UserError("zdimConf and zdimComp go together: give both for a split latent "
                        "(e.g. zdimConf 8 zdimComp 2), or neither")
    if outdir is None:
        if resume:
            raise UserError("resume true needs the outdir of the run to continue")
        outdir = default_outdir(particles)
    outdir = os.path.abspath(os.path.expanduser(outdir))
    run_dir = RunDir(outdir)
    if resume:                          # the engine's rules, in this command's words
        run_dir.require_resumable()
    else:
        run_dir.require_new(hint="add 'resume true' to continue it, or choose another outdir")
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
        write_inputs(session, outdir, consensus, consensus_path, model, model_path)
    if note:
        session.logger.info(f"GaussianEM: {note}")

    options.setdefault("device", "auto")
    args = ["train"] + command_line({"particles": particles, "consensus": consensus_path, "outdir": outdir,
                                     "model": model_path, **options})
    if resume:
        args.append("--resume")

    job = _make_job(session, reg.new_id(), args, outdir, _open_when_done(session, open_model), submit,
                    {"partition": partition, "gpus": gpus, "time": time, "account": account})
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


def _open_when_done(session, open_model):
    """What a finished training does: ``gaussianem open`` its run, with its atomic model."""
    def on_done(job):
        from chimerax.atomic import AtomicStructure
        from chimerax.core.commands import run
        cmd = f"gaussianem open {quote(job.outdir)}"
        if isinstance(open_model, AtomicStructure) and not open_model.deleted:
            cmd += f" model #{open_model.id_string}"
        elif isinstance(open_model, str):
            cmd += f" model {quote(open_model)}"
        run(session, cmd)
    return on_done


def _make_job(session, job_id, args, outdir, on_done, submit, slurm: dict):
    """The training job: a SLURM job with ``submit`` (and the ``slurm`` options), else a
    process here that reports its progress on stdout."""
    from ..jobs.local import TRAIN, EngineJob
    from ..jobs.slurm import ClusterJob
    if submit:
        args = args + ["--submit", submit]
        for name, value in slurm.items():
            if value is not None:
                args += ["--" + name, str(value)]
        return ClusterJob(job_id, args, outdir, logger=session.logger, on_done=on_done)
    if any(v is not None for v in slurm.values()):
        raise UserError("partition, gpus, time and account go with 'submit slurm'")
    return EngineJob(job_id, args + ["--progress", "json"], outdir, TRAIN, logger=session.logger, on_done=on_done,
                     status_every=0.0 if session.ui.is_gui else 10.0)


# the engine's training options offered as keywords (engine field name, ChimeraX type)
TRAIN_OPTIONS = (("epochs", PositiveIntArg), ("zdim", PositiveIntArg), ("zdim_conf", PositiveIntArg),
                 ("zdim_comp", PositiveIntArg), ("batch_size", PositiveIntArg), ("downsample", PositiveIntArg),
                 ("fine_gaussians", NonNegativeIntArg), ("device", EnumOf(DEVICES)), ("invert", BoolArg),
                 ("lr", PositiveFloatArg), ("datadir", OpenFolderNameArg), ("num_gaussians", PositiveIntArg),
                 ("skip_consensus_check", BoolArg), ("cut_graph", NonNegativeIntArg),
                 ("consensus_rounds", NonNegativeIntArg),
                 ("encoder_lowpass", NonNegativeFloatArg))
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
    from ..jobs.registry import registry
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
    from gaussianem.io.rundir import RunDir

    from ..jobs.registry import registry
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
            what = ("the engine saves " + RunDir(job.outdir).checkpoint + " and exits"
                    if getattr(job, "kind", "train") == "train" else "the engine exits")
            session.logger.info(f"GaussianEM job {job.id}: stopping; {what}")
    return stopped


gaussianem_stop_desc = CmdDesc(optional=[("job_id", PositiveIntArg)],
                               synopsis="stop a GaussianEM training job")
