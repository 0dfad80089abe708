"""Particle subsets written from a result (``gaussianem subset``), and where the bundle
may write: never over a file a run reads (its particles, consensus map, model, parent run,
or its own run folder's files), and over an existing file only when asked (``replace
true``; :func:`check_save_path`, which the movie's file obeys too).

The selection itself is the engine's
(:func:`gaussianem.analysis.selection.select_particles`), as ``gaussianem export`` makes it.
"""

from __future__ import annotations

import os

import numpy as np

from chimerax.core.errors import UserError

from gaussianem.io.rundir import RunDir


def run_files(result) -> list[tuple[str, str]]:
    """(path, what it is) of every file a result's run reads or is made of: its particle
    file, consensus map and atomic model (config.json's ``train``), and the run folder's
    own files and folders (config.json, checkpoint.pt, latents.npz, checkpoints/, ...)."""
    train = result.config.get("train", {})
    out = [(train[key], what) for key, what in (("particles", "the particle file"),
                                                ("consensus", "the consensus map"),
                                                ("model", "the atomic model"),
                                                ("init_from", "the run it was initialised from"))
           if isinstance(train.get(key), str) and train.get(key)]
    run = result.run
    names = sorted({v for k, v in vars(RunDir).items() if k.isupper() and isinstance(v, str)})
    out += [(run.file(name), f"the run folder's {name}") for name in names]
    return out


def _overwrites(path: str, other: str) -> bool:
    """Writing ``path`` would write over ``other``: the same file (also through a link),
    or an existing file inside the folder ``other``."""
    a, b = os.path.realpath(path), os.path.realpath(os.path.abspath(os.path.expanduser(other)))
    if a == b or (os.path.exists(a) and a.startswith(b.rstrip(os.sep) + os.sep)):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_save_path(result, path: str, replace: bool = False, also=()) -> None:
    """Refuse to write ``path`` when it is a file the run reads or is made of
    (:func:`run_files`, and the files in ``also``), or when it exists and not ``replace``."""
    files = run_files(result) + [(f, "the selection file") for f in also if f]
    for f, what in files:
        if _overwrites(path, os.fspath(f)):
            raise UserError(f"cannot save to {path}: it is {what} of the GaussianEM run in {result.outdir}, "
                            "which is never overwritten; choose another file name")
    if os.path.isdir(path):
        raise UserError(f"cannot save to {path}: it is a folder; give a file name (.star or .cs)")
    if os.path.exists(path) and not replace:
        raise UserError(f"{path} already exists: add 'replace true' to overwrite it, or choose another "
                        "file name")


def subset_indices(gres, cluster=None, k=None, particles=None, pc_range=None, part="all", region=None,
                   view="pca", outliers=None, low_signal=None) -> tuple:
    """(sorted particle indices, description) of ``gres`` (a GaussianEMResult) for exactly
    one selection (:func:`gaussianem.analysis.selection.select_particles`); ``part``: the
    principal components of a ``pc_range`` are of all of z, or of its ``conf`` / ``comp``
    part; ``region``: polygon corners (M, 2) on the latent plot ``view`` (pca or umap);
    ``outliers`` / ``low_signal`` ``"only"``: the motion outliers / the low-signal
    particles, ``"exclude"``: all the others."""
    from gaussianem.analysis.selection import select_particles
    gres.require_latents()
    km = gres.kmeans(k) if cluster is not None else None
    sel = select_particles(gres.result, clusters=cluster, kmeans=km, particles=particles, pc_range=pc_range,
                           part=part, region=region, view=view, outliers=outliers is not None,
                           low_signal=low_signal is not None)
    idx = np.asarray(sel.indices, dtype=np.int64)
    if "exclude" in (outliers, low_signal):
        return np.setdiff1d(np.arange(gres.result.n_particles), idx), "all but " + sel.what
    return idx, sel.what


def write_subset(gres, save, replace: bool = False, **selection) -> dict:
    """Write the particles of one selection (:func:`subset_indices`'s keywords) to ``save``
    (.star or .cs) with their original rows. An existing file is replaced only with
    ``replace``; a file the run reads never is (:func:`check_save_path`)."""
    from gaussianem.analysis.selection import export_subset
    save = os.path.abspath(os.path.expanduser(os.fspath(save)))
    check_save_path(gres.result, save, replace=replace, also=[selection.get("particles")])
    idx, what = subset_indices(gres, **selection)
    if idx.size == 0:
        raise UserError(f"no particles in {what}: nothing saved")
    out = export_subset(gres.result, idx, save)
    out["what"] = what
    return out

