"""A new training run's inputs, checked before a job starts.

An open consensus map and atomic model are saved into the run folder
(:data:`CONSENSUS_INPUT`, :data:`MODEL_INPUT`, the model in the map's frame), through a
staging folder so that a refused run leaves nothing behind (:func:`write_inputs`). The
model must lie in the map's frame (:func:`check_model_in_map`), and a resumed run must
have epochs left to train (:func:`check_resume`).
"""

from __future__ import annotations

import os

import numpy as np
from chimerax.core.commands import quote_path_if_necessary as quote
from chimerax.core.errors import UserError


def default_outdir(particles: str) -> str:
    """A new folder beside the particle file: ``gaussianem``, else ``gaussianem_2``, ..."""
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


def save_structure(session, structure, path: str, relative_to=None) -> str:
    """Save an open atomic model as PDB (in the consensus map's frame when given)."""
    from chimerax.core.commands import run
    cmd = f"save {quote(path)} models #{structure.id_string}"
    if relative_to is not None:
        cmd += f" relModel #{relative_to.id_string}"
    run(session, cmd, log=False)
    return path


CONSENSUS_INPUT = "consensus_input.mrc"   # an open consensus map, saved into OUTDIR
MODEL_INPUT = "model_input.pdb"           # an open atomic model, saved into OUTDIR in the map's frame


def write_inputs(session, outdir, consensus, consensus_path, model, model_path) -> None:
    """Save an open consensus map and atomic model for a new run, at ``consensus_path``
    and ``model_path`` in OUTDIR, after checking that the model lies in the map's frame
    (:func:`check_model_in_map`). They are saved to a staging folder first and moved
    into OUTDIR (made here) only once checked, so a refused run leaves nothing behind."""
    import shutil
    import tempfile

    from chimerax.atomic import AtomicStructure
    from chimerax.map import Volume
    with tempfile.TemporaryDirectory(prefix="gaussianem-inputs-") as stage:
        staged = {}
        if isinstance(consensus, Volume):
            staged[consensus_path] = save_volume_mrc(consensus, os.path.join(stage, CONSENSUS_INPUT))
        if isinstance(model, AtomicStructure):
            staged[model_path] = save_structure(session, model, os.path.join(stage, MODEL_INPUT),
                                                 consensus if isinstance(consensus, Volume) else None)
        if model_path is not None:
            name = (f"the atomic model #{model.id_string} ({model.name})" if isinstance(model, AtomicStructure)
                    else f"the atomic model {model_path}")
            check_model_in_map(staged.get(model_path, model_path), staged.get(consensus_path, consensus_path),
                               name=name)
        os.makedirs(outdir, exist_ok=True)
        for dest, source in staged.items():
            shutil.move(source, dest)


def check_model_in_map(model_file: str, consensus_file: str, name: str) -> None:
    """Refuse an atomic model that does not lie in the consensus map's frame, before a
    job starts: most of its residues must lie inside the map's box, the rule training
    itself applies when it places Gaussians on the model
    (:func:`gaussianem.model.gaussians.init_from_atoms`, which raises the engine's error
    naming the model and the share of residues inside)."""
    from gaussianem.io.models import read_model
    from gaussianem.io.mrc import read_map
    from gaussianem.model.gaussians import init_from_atoms
    from gaussianem.physics.grid import Grid
    vol, apix, origin = read_map(consensus_file)
    init_from_atoms(read_model(model_file), Grid(vol.shape[0], apix, origin), vol, name=name)


def check_resume(run, epochs: int | None = None) -> str | None:
    """Before resuming ``run`` (a :class:`~gaussianem.io.rundir.RunDir`) to ``epochs`` in
    all (None: the epochs it was asked for): refuse (UserError) when it has finished and
    already trained that many, since resuming would train nothing. Returns a note to log
    when the run has trained them but not finished (resuming then only writes its
    latents), else None."""
    done, asked = run.epochs_done(), run.epochs_asked()
    target = epochs or asked
    if not target or done < target:
        return None
    if epochs is None:
        already = f"all {target} epochs it was asked for"
    else:
        already = f"{done} epochs, {'as many as' if done == target else 'more than'} the {epochs} asked for"
    if run.finished():
        raise UserError(f"the GaussianEM run in {run.path} has already trained {already}: resuming it would "
                        f"train nothing. To train longer, give more epochs in all (e.g. 'epochs {done + 10}'); "
                        f"to look at it, 'gaussianem open {quote(run.path)}'")
    return (f"the run in {run.path} has already trained {already}: resuming trains no more epochs, it only "
            "writes the particles' latents")
