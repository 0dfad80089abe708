"""cryoSPARC particle records as cryoSPARC's own jobs write them, built from a
:class:`~gaussianem.io.particle_data.ParticleData` (writing is in
:mod:`gaussianem.io.cryosparc`: ``write_cs``, ``write_cs_rows``).

The fields are the three result slots a refined particle set carries, with cryoSPARC's
names, dtypes and shapes (as in cryosparc-tools' test data set of extracted particles and
a refinement's ``particles.cs``): ``blob`` (6 fields), ``ctf`` (17) and ``alignments3D``
(18), after ``uid``. Values the engine does not have are what cryoSPARC writes for
particles it imported: ``ctf/type`` ``imported``, ``ctf/scale_const`` 0, beam tilt,
trefoil, tetrafoil, anisotropic magnification and ``ctf/shift_A`` zero,
``blob/import_sig`` 0, the refinement statistics (``alignments3D/error`` ...) 0, with
``alpha`` 1 and a certain class 0 (``class_posterior`` 1, ``class_ess`` 1).

* ``uid``: random 64-bit integers (as cryosparc-tools' ``generate_uids``), or the source's:
  a ``.cs`` file's ``uid`` or the ``ucsfUid`` column pyem's ``csparc2star`` writes.
* ``blob/sign``: the images' contrast, -1 for dark protein (cryoSPARC's extracted
  particles), +1 for light protein (RELION's extraction with inverted contrast).
* ``ctf/exp_group_id``: the optics groups numbered from 0 (pyem adds 1 for
  ``rlnOpticsGroup``).
* ``alignments3D/split``: the half set, ``rlnRandomSubset - 1`` when a .star source has
  1s and 2s there, else the parity of the uid (random, balanced).
* ``alignments3D/class``: k-means labels when given (0-based, as cryoSPARC numbers its
  classes; pyem adds 1 for ``rlnClassNumber``), with ``class_posterior`` 1.
"""

from __future__ import annotations

import os

import numpy as np

from gaussianem.io.atomic import atomic_output
from gaussianem.io.particle_data import ParticleData, stack_name_for, warn
from gaussianem.physics import poses

BLOB_FIELDS = [("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"),
               ("blob/sign", "<f4"), ("blob/import_sig", "<u8")]          # after blob/path
CTF_FIELDS = [("ctf/type", "S8"), ("ctf/exp_group_id", "<u4"), ("ctf/accel_kv", "<f4"),
              ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"),
              ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4"),
              ("ctf/scale", "<f4"), ("ctf/scale_const", "<f4"), ("ctf/shift_A", "<f4", (2,)),
              ("ctf/tilt_A", "<f4", (2,)), ("ctf/trefoil_A", "<f4", (2,)), ("ctf/tetra_A", "<f4", (4,)),
              ("ctf/anisomag", "<f4", (4,)), ("ctf/bfactor", "<f4")]
ALIGNMENT_FIELDS = [("alignments3D/split", "<u4"), ("alignments3D/shift", "<f4", (2,)),
                    ("alignments3D/pose", "<f4", (3,)), ("alignments3D/psize_A", "<f4")] + [
    (f"alignments3D/{name}", "<f4") for name in (
        "error", "error_min", "resid_pow", "slice_pow", "image_pow", "cross_cor", "alpha",
        "alpha_min", "weight", "pose_ess", "shift_ess", "class_posterior")] + [
    ("alignments3D/class", "<u4"), ("alignments3D/class_ess", "<f4")]

# RELION columns for what the records above cannot carry from a .star file.
_ABERRATIONS = ("rlnBeamTiltX", "rlnBeamTiltY", "rlnOddZernike", "rlnEvenZernike")
_MAGMAT = {"rlnMagMat00": 1.0, "rlnMagMat01": 0.0, "rlnMagMat10": 0.0, "rlnMagMat11": 1.0}


def particle_dtype(path_width: int) -> np.dtype:
    """The dtype of the records :func:`cs_records` builds (``blob/path`` of ``S{width}``)."""
    return np.dtype([("uid", "<u8"), ("blob/path", f"S{max(1, int(path_width))}")]
                    + BLOB_FIELDS + CTF_FIELDS + ALIGNMENT_FIELDS)


def new_uids(n: int, rng=None) -> np.ndarray:
    """``n`` distinct random uint64 uids over the full 64-bit range."""
    rng = np.random.default_rng() if rng is None else rng
    uid = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    while np.unique(uid).size < n:  # a collision: about n^2 / 2^65, redraw the repeats
        _, first = np.unique(uid, return_index=True)
        again = np.setdiff1d(np.arange(n), first)
        uid[again] = rng.integers(0, 2**64, size=again.size, dtype=np.uint64, endpoint=False)
    return uid


def source_uids(data: ParticleData):
    """The uids of the particles' source file (``uid`` of a .cs, pyem's ``ucsfUid`` of a
    .star), or None."""
    table = data.table
    if table is None:
        return None
    for column in ("uid", "ucsfUid"):
        if column in table.columns:
            values = table[column].to_numpy()
            if np.issubdtype(values.dtype, np.integer) and np.unique(values).size == len(values):
                return values.astype(np.uint64)
    return None


def _half_sets(data: ParticleData, uid: np.ndarray) -> np.ndarray:
    table = data.table
    if table is not None and "rlnRandomSubset" in table.columns:
        subset = table["rlnRandomSubset"].to_numpy()
        if np.issubdtype(subset.dtype, np.number) and set(np.unique(subset)) <= {1, 2}:
            return (subset - 1).astype(np.uint32)
    return (uid & np.uint64(1)).astype(np.uint32)


def _nonzero(values) -> bool:
    """Any value not zero (numbers, or RELION vectors written as ``[a,b,...]``)."""
    for v in values:
        parts = str(v).strip().strip("[]").replace(",", " ").split()
        try:
            if any(float(p) != 0 for p in parts):
                return True
        except ValueError:
            return True
    return False


def _warn_dropped(data: ParticleData) -> None:
    """Warn when a .star source holds optics the records do not carry (beam tilt, odd and
    even Zernike terms, anisotropic magnification): the engine does not model them."""
    table = data.table
    if table is None or table.attrs.get("format") != "star":
        return
    optics = table.attrs.get("optics") or {}

    def column(c):
        return table[c].tolist() if c in table.columns else optics.get(c, [])

    found = [c for c in _ABERRATIONS if _nonzero(column(c))]
    found += [c for c, ident in _MAGMAT.items() if _nonzero([float(v) - ident for v in column(c)])]
    if found:
        warn(f"{data.source}: {', '.join(found)} are not written to the .cs file (the engine does "
             "not model them); ctf/tilt_A, ctf/trefoil_A, ctf/tetra_A and ctf/anisomag are zero. "
             "Run cryoSPARC's Global CTF Refinement on the subset to estimate them again.")


def cs_records(data: ParticleData, folder: str, sign: float = 1.0, labels=None) -> np.ndarray:
    """Records for ``data`` in cryoSPARC's particle layout (see the module docstring).

    Stack paths are relative to ``folder`` when the stacks are inside it, else absolute.
    ``sign`` is ``blob/sign``; ``labels`` (one 0-based class per particle) fill
    ``alignments3D/class``.
    """
    n = len(data)
    uniq, inverse = np.unique(data.image_paths.astype(str), return_inverse=True)
    names = np.array([stack_name_for(p, folder).encode("utf-8") for p in uniq])[inverse.reshape(-1)]
    rec = np.zeros(n, dtype=particle_dtype(max(len(b) for b in names) if n else 1))
    uid = source_uids(data)
    rec["uid"] = new_uids(n) if uid is None else uid
    rec["blob/path"] = names
    rec["blob/idx"] = data.image_indices
    rec["blob/shape"] = data.box
    rec["blob/psize_A"] = data.apix
    rec["blob/sign"] = float(sign)
    rec["ctf/type"] = b"imported"
    groups = np.unique(data.optics_group)
    rec["ctf/exp_group_id"] = np.searchsorted(groups, data.optics_group)
    ctf = data.ctf
    rec["ctf/accel_kv"] = ctf.voltage
    rec["ctf/cs_mm"] = ctf.cs
    rec["ctf/amp_contrast"] = ctf.amp_contrast
    rec["ctf/df1_A"] = ctf.defocus_u
    rec["ctf/df2_A"] = ctf.defocus_v
    rec["ctf/df_angle_rad"] = np.deg2rad(ctf.defocus_angle)
    rec["ctf/phase_shift_rad"] = np.deg2rad(ctf.phase_shift)
    rec["ctf/scale"] = ctf.scale
    rec["ctf/bfactor"] = ctf.bfactor
    rec["alignments3D/split"] = _half_sets(data, rec["uid"])
    rec["alignments3D/shift"] = data.shifts / data.apix[:, None]
    rec["alignments3D/pose"] = poses.matrix_to_cryosparc_pose(data.rotations)
    rec["alignments3D/psize_A"] = data.apix
    rec["alignments3D/alpha"] = 1.0
    rec["alignments3D/class_posterior"] = 1.0
    rec["alignments3D/class_ess"] = 1.0
    if labels is not None:
        rec["alignments3D/class"] = np.asarray(labels)
    _warn_dropped(data)
    return rec


def complete_records(rec: np.ndarray, full: np.ndarray) -> np.ndarray:
    """``rec`` with the fields of ``full`` (same rows) that it lacks appended; its own
    fields, uid included, are kept as they are."""
    missing = [n for n in full.dtype.names if n not in rec.dtype.names]
    return with_fields(rec, full, missing) if missing else rec


def set_labels(rec: np.ndarray, labels) -> np.ndarray:
    """``alignments3D/class`` = ``labels`` (0-based) and ``class_posterior`` = 1, the fields
    added when missing (as cryoSPARC's heterogeneous refinement writes them)."""
    labels = np.asarray(labels)
    extra = np.zeros(len(rec), dtype=[("alignments3D/class_posterior", "<f4"), ("alignments3D/class", "<u4")])
    rec = complete_records(rec, extra)
    rec["alignments3D/class"] = labels
    rec["alignments3D/class_posterior"] = 1.0
    return rec


def save_cs(path, rec: np.ndarray) -> None:
    """``np.save`` to ``path`` (a .cs name kept as it is), atomically."""
    with atomic_output(os.fspath(path)) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, rec, allow_pickle=False)


def with_fields(rec: np.ndarray, other: np.ndarray, names) -> np.ndarray:
    """``rec`` with the fields ``names`` of ``other`` (same rows, same order) appended."""
    dtype = np.dtype([(n, rec.dtype.fields[n][0]) for n in rec.dtype.names]
                     + [(n, other.dtype.fields[n][0]) for n in names])
    out = np.empty(len(rec), dtype=dtype)
    for n in rec.dtype.names:
        out[n] = rec[n]
    for n in names:
        out[n] = other[n]
    return out
