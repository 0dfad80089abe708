"""Particle files by extension: :func:`load_particles` reads a RELION ``.star`` or a
cryoSPARC ``.cs`` file into a :class:`~gaussianem.io.particle_data.ParticleData`;
:func:`write_subset` writes a selection of its particles back (.star or .cs).

Every problem with an input file raises :class:`~gaussianem.errors.ParticleFileError`,
whose message names the file, the field or column (and row where it applies) and what
was expected.
"""

from __future__ import annotations

import os

import numpy as np

from gaussianem.errors import InputError, ParticleFileError
from gaussianem.io import cryosparc, relion
from gaussianem.io.particle_data import ParticleData


def load_particles(path, datadir=None, *, passthrough=None,
                   check_images: bool = True) -> ParticleData:
    """Read a RELION ``.star`` or cryoSPARC ``.cs`` particle file.

    ``datadir`` is where relative image paths are found (default: searched from the
    file's directory upwards). ``passthrough`` (``.cs`` only) is a cryoSPARC passthrough
    file that supplies fields missing from ``path``. With ``check_images`` (default) every
    stack's MRC header is read to check that it exists, holds the indexed images and has
    the expected square box.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".star":
        if passthrough is not None:
            raise ParticleFileError(f"{path}: a passthrough file applies only to cryoSPARC .cs files")
        return relion.read_star(path, datadir=datadir, check_images=check_images)
    if ext == ".cs":
        return cryosparc.read_cs(path, datadir=datadir, passthrough=passthrough, check_images=check_images)
    raise ParticleFileError(f"{path}: unknown particle file type {ext!r}; expected a RELION "
                            ".star or a cryoSPARC .cs file")


def write_subset(src: ParticleData, idx, path) -> None:
    """Write the particles ``idx`` of ``src`` to ``path`` (.star or .cs), for export.

    When the output has the source's format, the selected rows of the original file are
    written with every original column unchanged (:func:`relion.write_star_rows`,
    :func:`cryosparc.write_cs_rows`); otherwise (or when ``src`` has no source table) the
    subset is written from its metadata (:func:`relion.write_star`, :func:`cryosparc.write_cs`).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".star", ".cs"):
        raise InputError(f"cannot write {path}: expected a .star or .cs file name")
    idx = np.asarray(idx)
    fmt = None if src.table is None else src.table.attrs.get("format")
    if ext == ".cs":
        if fmt == "cs":
            cryosparc.write_cs_rows(src, idx, path)
        else:
            cryosparc.write_cs(path, src.subset(idx))
    elif fmt == "star":
        relion.write_star_rows(src, idx, path)
    else:
        relion.write_star(path, src.subset(idx))
