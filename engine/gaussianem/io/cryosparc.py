"""cryoSPARC particle .cs files (NumPy record arrays saved with ``np.save``).

Fields read, and their conversion to the engine's (RELION) conventions:

=========================  ================================================================
``alignments3D/pose``      rotation vector (radians); ``A = poses.cryosparc_pose_to_matrix``
                           (the transpose of its Rodrigues matrix)
``alignments3D/shift``     pixels, RELION's origin sign; times ``alignments3D/psize_A`` (or
                           ``blob/psize_A`` when that is absent, with a warning) gives the
                           origin in Angstrom. ``alignments3D/psize_A`` is the pixel size the
                           job aligned at: for a refinement run at a smaller box ``d`` (as
                           heterogeneous refinement's "Refinement box size") it is
                           ``blob/psize_A * D / d``; cryoDRGN's ``parse_pose_csparc
                           --hetrefine`` instead doubles the shifts, right only when D = 2 d
``ctf/df1_A, df2_A``       defocus U, V (Angstrom)
``ctf/df_angle_rad``       astigmatism angle, radians -> degrees
``ctf/accel_kv, cs_mm, amp_contrast``  voltage, Cs, amplitude contrast
``ctf/phase_shift_rad``    radians -> degrees (0 when absent)
``ctf/bfactor``            A^2 (0 when absent; negative values: 0, with a warning)
``ctf/scale``              the CTF's scale factor (1 when absent; values <= 0: 1, with a warning)
``blob/path, blob/idx``    stack (bytes; a leading ``>`` is dropped) and 0-based index
``blob/psize_A``           pixel size (Angstrom)
``blob/shape``             (ny, nx) image size
``ctf/exp_group_id``       exposure group, used with the optics values to form groups
=========================  ================================================================

A cryoSPARC job often splits these between its particle file and a *passthrough* file;
``read_cs(..., passthrough=...)`` fills the fields missing from the first from the second,
matching rows on ``uid``. ``blob/sign`` (image contrast) is not applied: use
``ParticleImages(invert=...)``.

Writing: :func:`write_cs` converts a :class:`ParticleData` to the fields cryoSPARC's own
refinements write (:mod:`gaussianem.io.cryosparc_write`); :func:`write_cs_rows` copies
rows of the source .cs file, adding any of those fields it lacks.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from gaussianem.errors import InputError, ParticleFileError
from gaussianem.io.cryosparc_write import complete_records, cs_records, save_cs, set_labels, with_fields
from gaussianem.io.particle_data import (ParticleData, ctf_envelope, group_optics, particle_box,
                                         resolve_stack_paths, warn)
from gaussianem.physics import poses
from gaussianem.physics.ctf import CTFParams


def _load(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ParticleFileError(f"{path}: cryoSPARC file not found")
    try:
        rec = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise ParticleFileError(f"{path}: not a readable cryoSPARC .cs file ({e}); expected a "
                                "NumPy record array as cryoSPARC exports it") from None
    if not isinstance(rec, np.ndarray) or rec.dtype.names is None or rec.ndim != 1:
        raise ParticleFileError(f"{path}: not a cryoSPARC .cs file: expected a 1D NumPy "
                                "record array with named fields")
    return rec


def merge_passthrough(main: np.ndarray, extra: np.ndarray, main_path: str,
                      extra_path: str) -> np.ndarray:
    """``main`` with the fields it lacks copied from ``extra`` (rows matched on ``uid``)."""
    for rec, p in ((main, main_path), (extra, extra_path)):
        if "uid" not in rec.dtype.names:
            raise ParticleFileError(f"{p}: missing field 'uid', needed to match particles with "
                                    "the passthrough file")
    new = [n for n in extra.dtype.names if n not in main.dtype.names]
    if not new:
        return main
    order = np.argsort(extra["uid"], kind="stable")
    sorted_uid = extra["uid"][order]
    pos = np.clip(np.searchsorted(sorted_uid, main["uid"]), 0, len(sorted_uid) - 1)
    found = sorted_uid[pos] == main["uid"] if len(sorted_uid) else np.zeros(len(main), bool)
    if not np.all(found):
        row = int(np.flatnonzero(~found)[0])
        raise ParticleFileError(f"{main_path}: row {row + 1} (uid {int(main['uid'][row])}) has "
                                f"no matching uid in passthrough file {extra_path}")
    return with_fields(main, extra[order[pos]], new)


def _records(path: str, passthrough) -> np.ndarray:
    rec = _load(path)
    if passthrough is not None:
        pt = os.path.abspath(os.fspath(passthrough))
        rec = merge_passthrough(rec, _load(pt), path, pt)
    return rec


def _images(rec: np.ndarray, path: str, where: str, datadir, check_images: bool, apix=None) -> tuple:
    """(absolute stack paths, 0-based indices, box) from ``blob/path``, ``blob/idx`` and
    ``blob/shape``."""
    names, n = rec.dtype.names, len(rec)
    for f in ("blob/path", "blob/idx"):
        if f not in names:
            raise ParticleFileError(f"{where}: missing field {f!r}; expected the particle "
                                    "image stack path and 0-based index")
    raw_paths, inverse = np.unique(rec["blob/path"], return_inverse=True)
    decoded = np.array([(p.decode("utf-8") if isinstance(p, bytes) else str(p)).lstrip(">")
                        for p in raw_paths], dtype=object)
    stacks = resolve_stack_paths(decoded, path, datadir, what="blob/path stack")[inverse.reshape(-1)]
    indices = np.asarray(rec["blob/idx"], dtype=np.int64)
    if np.any(indices < 0):
        row = int(np.flatnonzero(indices < 0)[0])
        raise ParticleFileError(f"{path}: field 'blob/idx', row {row + 1}: negative index")

    expected_box = None
    if "blob/shape" in names:
        shape = np.asarray(rec["blob/shape"], dtype=np.int64).reshape(n, -1)
        nonsquare = np.flatnonzero(shape[:, 0] != shape[:, -1])
        if nonsquare.size:
            r = nonsquare[0]
            raise ParticleFileError(f"{path}: field 'blob/shape', row {r + 1}: images are "
                                    f"{tuple(shape[r])}; expected square images")
        sizes = np.unique(shape[:, 0])
        if sizes.size > 1:
            raise ParticleFileError(f"{path}: field 'blob/shape' has several box sizes "
                                    f"({', '.join(map(str, sizes))}); all particles must share one")
        expected_box = int(sizes[0])
    box = particle_box(stacks, indices, path, expected_box, check_images, "'blob/shape' field", apix)
    return stacks, indices, box


def read_cs_images(path, datadir=None, passthrough=None, *, check_images: bool = True) -> tuple:
    """Only the images of a particle .cs file: ``(stack paths, 0-based indices, box, pixel
    sizes or None)``, for metadata kept elsewhere (cryoDRGN's pose.pkl / ctf.pkl)."""
    path = os.path.abspath(os.fspath(path))
    rec = _records(path, passthrough)
    if len(rec) == 0:
        raise ParticleFileError(f"{path}: no particles")
    where = path if passthrough is None else f"{path} (or passthrough {passthrough})"
    apix = np.asarray(rec["blob/psize_A"], np.float64) if "blob/psize_A" in rec.dtype.names else None
    stacks, indices, box = _images(rec, path, where, datadir, check_images, apix)
    return stacks, indices, box, apix


def _ctf_scale(field, path: str, n: int) -> np.ndarray:
    """``ctf/scale`` (RELION's ``rlnCtfScalefactor``), 1 when absent; values that are not
    positive (a field left unset) are taken as 1, with a warning."""
    scale = field("ctf/scale", "", default=1.0)
    unset = ~(scale > 0)
    if unset.any():
        warn(f"{path}: field 'ctf/scale' is 0 or negative for {int(unset.sum())} of {n} particles; "
             "taken as 1 (no scaling of their CTF)")
        scale = np.where(unset, 1.0, scale)
    return scale


def read_cs(path, datadir=None, passthrough=None, *, check_images: bool = True) -> ParticleData:
    """Read a cryoSPARC particle .cs file into a :class:`ParticleData`.

    ``datadir``: where relative ``blob/path`` stacks are found (default: the .cs file's
    folder and its parents, e.g. the cryoSPARC project folder). ``passthrough``: a .cs
    file supplying missing fields. ``check_images``: read each stack's MRC header to check
    the images exist and match ``blob/shape``.
    """
    path = os.path.abspath(os.fspath(path))
    rec = _records(path, passthrough)
    names = rec.dtype.names
    n = len(rec)
    if n == 0:
        raise ParticleFileError(f"{path}: no particles")
    where = path if passthrough is None else f"{path} (or passthrough {passthrough})"

    def field(name, what, default=None):
        if name in names:
            v = np.asarray(rec[name], dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(v.reshape(n, -1)).all(axis=1))
            if bad.size:
                raise ParticleFileError(f"{path}: field {name!r}, row {bad[0] + 1}: value "
                                        f"{rec[name][bad[0]]} is not finite")
            return v
        if default is not None:
            return np.full(n, float(default))
        hint = ""
        if name.startswith("alignments3D") and any(x.startswith("alignments_class_") for x in names):
            hint = " (the file has per-class alignments, alignments_class_K/...; use a file " \
                   "from a refinement with a single alignments3D)"
        elif name.startswith("alignments3D") and any(x.startswith("alignments2D/") for x in names):
            hint = " (the file has only alignments2D: it comes from 2D classification, whose " \
                   "poses are in-plane only; the particles of a 3D job, i.e. homogeneous, " \
                   "non-uniform or heterogeneous refinement or 3D classification, carry 3D poses " \
                   "in alignments3D)"
        raise ParticleFileError(f"{where}: missing field {name!r}; expected {what}{hint}")

    pose = field("alignments3D/pose", "particle orientations (rotation vectors, radians)")
    shift_px = field("alignments3D/shift", "particle shifts in pixels")
    apix = field("blob/psize_A", "the particle pixel size in Angstrom")
    bad = np.flatnonzero(apix <= 0)
    if bad.size:
        raise ParticleFileError(f"{path}: field 'blob/psize_A', row {bad[0] + 1}: pixel size "
                                f"{apix[bad[0]]}; expected a positive value in Angstrom")
    shift_apix = apix
    if "alignments3D/psize_A" in names:
        a = field("alignments3D/psize_A", "")
        shift_apix = np.where(a > 0, a, apix)
    else:
        warn(f"{path}: no field 'alignments3D/psize_A'; the shifts in 'alignments3D/shift' are "
             f"taken to be in pixels of 'blob/psize_A' ({apix[0]:g} A). A refinement run at a "
             "smaller box (e.g. a heterogeneous refinement's 'Refinement box size') writes them in "
             "its own larger pixels: they are then too small by the box ratio.")
    if pose.shape != (n, 3) or shift_px.shape != (n, 2):
        raise ParticleFileError(f"{path}: fields 'alignments3D/pose' and 'alignments3D/shift' "
                                f"have shapes {pose.shape[1:]} and {shift_px.shape[1:]}; "
                                "expected (3,) and (2,)")

    bfactor, scale = ctf_envelope(field("ctf/bfactor", "", default=0.0), _ctf_scale(field, path, n), path,
                                  "field 'ctf/bfactor'", "field 'ctf/scale'")
    ctf = CTFParams(
        defocus_u=field("ctf/df1_A", "defocus U in Angstrom"),
        defocus_v=field("ctf/df2_A", "defocus V in Angstrom"),
        defocus_angle=np.rad2deg(field("ctf/df_angle_rad", "the astigmatism angle in radians")),
        voltage=field("ctf/accel_kv", "the acceleration voltage in kV"),
        cs=field("ctf/cs_mm", "the spherical aberration in mm"),
        amp_contrast=field("ctf/amp_contrast", "the amplitude contrast fraction"),
        phase_shift=np.rad2deg(field("ctf/phase_shift_rad", "", default=0.0)),
        bfactor=bfactor, scale=scale,
    )
    optics_cols = [apix, ctf.voltage, ctf.cs, ctf.amp_contrast]
    if "ctf/exp_group_id" in names:
        optics_cols.insert(0, field("ctf/exp_group_id", ""))
    group = group_optics(*optics_cols)

    stacks, indices, box = _images(rec, path, where, datadir, check_images, apix)

    table = pd.DataFrame({"cs_row": np.arange(n, dtype=np.int64)})
    if "uid" in names:  # kept for export; a file without uids gets new ones there
        table.insert(0, "uid", np.asarray(rec["uid"], dtype=np.uint64))
    table.attrs = {"format": "cs",
                   "passthrough": None if passthrough is None else os.path.abspath(os.fspath(passthrough))}
    return ParticleData(
        image_paths=stacks, image_indices=indices,
        rotations=poses.cryosparc_pose_to_matrix(pose),
        shifts=shift_px * shift_apix[:, None], ctf=ctf, apix=apix, box=int(box),
        optics_group=group, source=path, table=table)


def write_cs(path, data: ParticleData, sign: float = 1.0, labels=None) -> None:
    """Write ``data`` as a cryoSPARC particle .cs file (atomically), with the fields
    cryoSPARC's own refinements write (:func:`cryosparc_write.cs_records`).

    Stack paths are relative to the .cs file's folder when the stacks are inside it, else
    absolute. ``uid`` comes from the source (a .cs file's, or pyem's ``ucsfUid``), else new
    random 64-bit uids. ``sign`` is ``blob/sign`` (-1 for images with dark protein, +1
    for light); ``labels`` (one 0-based class per particle) fill ``alignments3D/class``.
    """
    path = os.path.abspath(os.fspath(path))
    save_cs(path, cs_records(data, os.path.dirname(path), sign=sign, labels=labels))


def write_cs_rows(src: ParticleData, idx, path, sign: float = 1.0, labels=None) -> None:
    """Write the rows ``idx`` of a .cs-sourced ``src`` as they are in the source file, with
    the passthrough fields merged in (so the result stands alone) and any field of
    :func:`write_cs`'s layout the source lacks added (``blob/sign`` from ``sign``).
    ``labels`` (one 0-based class per written row) replace ``alignments3D/class``."""
    if src.table is None or src.table.attrs.get("format") != "cs":
        raise InputError("write_cs_rows needs ParticleData read from a .cs file")
    path = os.path.abspath(os.fspath(path))
    idx = np.asarray(idx)
    rec = _records(src.source, src.table.attrs.get("passthrough"))
    rows = src.table["cs_row"].to_numpy()[idx]
    rec = complete_records(rec[rows], cs_records(src.subset(idx), os.path.dirname(path), sign=sign))
    if labels is not None:
        rec = set_labels(rec, labels)
    save_cs(path, rec)
