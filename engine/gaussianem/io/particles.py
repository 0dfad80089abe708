"""Particle files by extension: :func:`load_particles` reads a RELION ``.star`` or a
cryoSPARC ``.cs`` file, or cryoDRGN's inputs (images with ``pose.pkl`` and ``ctf.pkl``),
into a :class:`~gaussianem.io.particle_data.ParticleData`; :func:`write_subset` writes a
selection of its particles back (.star or .cs).

Every problem with an input file raises :class:`~gaussianem.errors.ParticleFileError`,
whose message names the file, the field or column (and row where it applies) and what
was expected.
"""

from __future__ import annotations

import os

import numpy as np

from gaussianem.errors import InputError, ParticleFileError
from gaussianem.io import cryodrgn, cryosparc, relion, relion_write
from gaussianem.io.particle_data import ParticleData


def load_particles(path, datadir=None, *, passthrough=None, poses=None, ctf=None, ind=None,
                   check_images: bool = True) -> ParticleData:
    """Read a RELION ``.star`` or cryoSPARC ``.cs`` particle file, or cryoDRGN's inputs.

    ``datadir`` is where relative image paths are found (default: searched from the
    file's directory upwards). ``passthrough`` (``.cs`` only) is a cryoSPARC passthrough
    file that supplies fields missing from ``path``. With ``check_images`` (default) every
    stack's MRC header is read to check that it exists, holds the indexed images and has
    the expected square box.

    cryoDRGN: ``poses`` (``pose.pkl``, or a pair ``(rot.pkl, trans.pkl)``) and ``ctf``
    (``ctf.pkl``), with ``path`` the images (``.mrcs``, a ``.txt`` list of stacks, or a
    ``.star`` / ``.cs`` file of which only the image names are used) and ``ind`` (an
    ``ind.pkl`` or an index array) optionally selecting particles; see
    :func:`gaussianem.io.cryodrgn.read_cryodrgn`.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if poses is not None or ctf is not None or ind is not None:
        if passthrough is not None:
            raise ParticleFileError(f"{path}: a passthrough file applies only to cryoSPARC .cs "
                                    "files, not to cryoDRGN inputs (poses/ctf)")
        return cryodrgn.read_cryodrgn(path, poses, ctf, datadir=datadir, ind=ind,
                                      check_images=check_images)
    if ext == ".star":
        if passthrough is not None:
            raise ParticleFileError(f"{path}: a passthrough file applies only to cryoSPARC .cs files")
        return relion.read_star(path, datadir=datadir, check_images=check_images)
    if ext == ".cs":
        return cryosparc.read_cs(path, datadir=datadir, passthrough=passthrough, check_images=check_images)
    if ext in (".mrcs", ".mrc", ".txt"):
        raise ParticleFileError(f"{path}: images without metadata; give the poses and the CTF "
                                "(cryoDRGN's pose.pkl and ctf.pkl), or use a RELION .star or "
                                "cryoSPARC .cs particle file")
    raise ParticleFileError(f"{path}: unknown particle file type {ext!r}; expected a RELION "
                            ".star or a cryoSPARC .cs file (or images with cryoDRGN's pose.pkl "
                            "and ctf.pkl)")


def write_subset(src: ParticleData, idx, path, *, names_from=None, labels=None,
                 sign: float = 1.0) -> dict:
    """Write the particles ``idx`` of ``src`` to ``path`` (.star or .cs), for export.

    When the output has the source's format, the selected rows of the original file are
    written with every original column unchanged (:func:`relion_write.write_star_rows`,
    :func:`cryosparc.write_cs_rows`); otherwise (or when ``src`` has no source table) the
    subset is written from its metadata (:func:`relion_write.write_star`, :func:`cryosparc.write_cs`).

    ``names_from`` (.star only): a folder the image names must resolve from, e.g. the
    RELION project the file is written into; the names are then rewritten relative to it
    (absolute for stacks outside it). ``labels`` (one 0-based class per written particle):
    ``rlnClassNumber`` = label + 1 in a .star file, ``alignments3D/class`` = label in a .cs
    file. ``sign``: ``blob/sign`` of .cs records made here (-1 for images with dark
    protein). Returns ``{"absolute_names": n}``: with ``names_from``, how many images are
named by absolute path (their stacks lie outside the folder), else 0.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".star", ".cs"):
        raise InputError(f"cannot write {path}: expected a .star or .cs file name")
    idx = np.asarray(idx)
    if labels is not None and len(labels) != len(idx):
        raise InputError(f"cannot write {path}: {len(labels)} labels for {len(idx)} particles")
    fmt = None if src.table is None else src.table.attrs.get("format")
    if ext == ".cs":
        if names_from is not None:
            raise InputError(f"cannot write {path}: image names relative to a project are for .star files")
        if fmt == "cs":
            cryosparc.write_cs_rows(src, idx, path, sign=sign, labels=labels)
        else:
            cryosparc.write_cs(path, src.subset(idx), sign=sign, labels=labels)
        return {"absolute_names": 0}
    columns = None if labels is None else {"rlnClassNumber": np.asarray(labels, dtype=np.int64) + 1}
    names = None
    if names_from is not None:
        names = relion_write.image_names_for(src.subset(idx), names_from)
    if fmt == "star":
        relion_write.write_star_rows(src, idx, path, image_names=names, columns=columns)
    else:
        relion_write.write_star(path, src.subset(idx), image_names=names, columns=columns)
    if names is None:
        return {"absolute_names": 0}
    return {"absolute_names": sum(os.path.isabs(n.split("@", 1)[1]) for n in names)}
