"""Opening a training result in the session: :func:`open_result` (``gaussianem open``).

The run folder is read with the engine's one loader
(:func:`gaussianem.analysis.result.load_result`) and shown: a map on the consensus map's
grid at the medoid particle's state (the consensus for an unfinished run), the fitted
atomic model moved with it, the first view; the result becomes the session's current one
(:mod:`.session_state`), and its health is logged.
"""

from __future__ import annotations

import os

from chimerax.core.errors import UserError

from gaussianem.errors import GaussianEMError
from gaussianem.io.rundir import RunDir

from .run_state import unfinished_message
from .session_result import GaussianEMResult, resolve_map_kind
from .session_state import session_state


def open_result(session, path, model=None, device: str = "cpu", map_kind: str | None = None) -> GaussianEMResult:
    """Open a GaussianEM training result and make it the session's current result.

    ``model``: an AtomicStructure already open, or a .pdb/.cif path; by default the model
    the result was trained with, if its file still exists. ``map_kind``: "deformed" or
    "gaussians" (:func:`resolve_map_kind`; default deformed when the consensus map file is
    there). A finished run shows its medoid particle's state. Returns the
    :class:`GaussianEMResult`.
    """
    from gaussianem.analysis.result import load_result
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(path):
        raise UserError(f"no such GaussianEM result folder: {path}")
    run = RunDir(path)
    if run.exists() and not os.path.exists(run.config):      # coarse to fine, in its coarse stage
        raise UserError(unfinished_message(run, session))
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"device {device} was asked for but no CUDA device is available")
    try:
        result = load_result(path, device=device)
    except (OSError, RuntimeError, KeyError) as e:
        raise UserError(f"cannot read the GaussianEM result in {path}: {e}") from None
    kind, note = resolve_map_kind(result, map_kind)
    gres = GaussianEMResult(session, result, map_kind=kind)
    if gres.finished:            # the medoid's map first, so the map opens at a state particles have
        gres.set_volume_data(gres.generate(result.particle_z(gres.medoid)).volume)
    else:
        gres.show_consensus()
    try:
        structure, opened, is_default = _structure_for(session, gres, model)
    except UserError:
        session.models.close([gres.volume])
        raise
    if structure is not None:
        try:
            gres.attach_structure(structure)
        except (UserError, GaussianEMError) as e:
            if not is_default:
                session.models.close([gres.volume] + ([structure] if opened else []))
                raise
            session.logger.warning(f"the training model is not moved with the map: {e}")
    if gres.finished:
        gres.show(particle=gres.medoid)                  # and the atomic model moved with it
    from .view import first_view
    first_view(gres)                                     # transparent map, cartoon, across the motion
    session_state(session, create=True).result = gres
    mc = result.model_config
    latent = (f"{mc.zdim} ({mc.zdim_conf} conformational + {mc.zdim_comp} compositional)"
              if mc.split else f"{mc.zdim}")
    particles = (f"epoch {result.epoch}, {result.n_particles} particles" if gres.finished
                 else f"unfinished run ({result.run.epochs_done()} epochs trained)")
    what = "deformed consensus" if kind == "deformed" else "rendered from the Gaussians"
    msg = (f"Opened GaussianEM result {path}: {particles}, latent size {latent}, {len(result.base)} "
           f"Gaussians; map #{gres.volume.id_string} ({what})")
    if gres.structure is not None:
        msg += f", atomic model #{gres.structure.id_string}"
    if gres.finished:
        msg += f"; showing the medoid particle {gres.medoid}"
    session.logger.info(msg)
    if note:
        session.logger.info(note)
    if gres.finished:
        _log_health(session, result)
    else:
        session.logger.warning(f"{unfinished_message(result.run, session)}. Until then only 'gaussianem show z ...' "
                               "and 'gaussianem markers' work.")
    return gres


def _log_health(session, result) -> None:
    """The run's health (health.json): a warning in the log unless it is healthy."""
    h = result.health
    if h is None:
        session.logger.info("GaussianEM: this run has no health report (trained before health checks existed)")
    elif h["status"] == "healthy":
        session.logger.info(f"GaussianEM run health: {h['summary']}")
    else:
        session.logger.warning(f"GaussianEM run health: {h['summary']} (details in {result.outdir}/health.json)")


def _structure_for(session, gres: GaussianEMResult, model):
    """(structure, opened here, is the training model) for ``model``: an AtomicStructure,
    a file to open, or None for the model the result was trained with."""
    from chimerax.atomic import AtomicStructure
    if isinstance(model, AtomicStructure):
        return model, False, False
    default = model is None
    path = gres.result.default_model_path() if default else os.path.abspath(os.fspath(model))
    if path is None:
        return None, False, default
    if not os.path.exists(path):
        raise UserError(f"no such atomic model file: {path}")
    from chimerax.core.commands import quote_path_if_necessary as q
    from chimerax.core.commands import run
    models = run(session, f"open {q(path)}", log=False)
    structures = [m for m in (models or []) if isinstance(m, AtomicStructure)]
    others = [m for m in (models or []) if m not in structures[:1]]
    if others:
        session.models.close(others)
    if not structures:
        raise UserError(f"{path} holds no atomic structure")
    return structures[0], True, default
