"""RELION particle .star files (3.0, and 3.1 / 4 / 5 with an optics table).

Reading (:func:`read_star`):

* RELION 3.1+ files have ``data_optics`` (one row per optics group: ``rlnOpticsGroup``,
  ``rlnImagePixelSize``, ``rlnVoltage``, ``rlnSphericalAberration``,
  ``rlnAmplitudeContrast``, ``rlnImageSize``) and ``data_particles``; origins are
  ``rlnOriginXAngst/YAngst`` in Angstrom.
* RELION 3.0 files have a single table; every value is per particle, origins are
  ``rlnOriginX/Y`` in pixels and the pixel size is ``rlnImagePixelSize`` or
  ``rlnDetectorPixelSize * 1e4 / rlnMagnification``. Particles get optics groups
  1, 2, ... by their unique (pixel size, voltage, Cs, amplitude contrast).
* An optics value missing from ``data_optics`` is taken from the particle table when it
  is there. Origins in pixels (``rlnOriginX/Y``) are accepted in any version and
  converted with the particle's pixel size. Missing origins mean zero (RELION's own
  default for these labels); missing ``rlnPhaseShift`` and ``rlnCtfBfactor`` mean zero,
  a missing ``rlnCtfScalefactor`` one, a missing ``rlnAmplitudeContrast`` RELION's default
  0.1 (with a warning). A negative ``rlnCtfBfactor`` (Warp's dose
  weighting) is used as 0, with a warning (:func:`~gaussianem.io.particle_data.ctf_envelope`).
  Everything else the engine needs (angles, defoci, voltage, Cs, pixel size, image
  names) must be present: a missing column raises
  :class:`~gaussianem.errors.ParticleFileError` naming the file and the column.
* ``rlnImageName`` is ``N@stack.mrcs`` with a 1-based ``N``; relative stack paths are
  found as described in :func:`gaussianem.io.particle_data.resolve_stack_paths`. A bare
  file name (no ``N@``) follows RELION's rule: it names a single-image file, and naming
  a file that holds several images so is an error, except when the file holds exactly
  as many images as there are rows naming it (all bare): those rows are then its images
  in row order, with a warning.
* Rotations are ``poses.euler_to_matrix(rlnAngleRot, rlnAngleTilt, rlnAnglePsi)``.
* With ``check_images`` the stacks' MRC headers are read: box, image count, and pixel
  size (the metadata's is used; a header that disagrees is reported in a warning).

Writing (:mod:`gaussianem.io.relion_write`): :func:`write_star` writes
RELION 3.1 format; :func:`write_star_rows` copies selected rows of the original file.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import starfile

from gaussianem.errors import ParticleFileError
from gaussianem.io.mrc import read_header
from gaussianem.io.particle_data import (ParticleData, ctf_envelope, group_optics, particle_box,
                                         resolve_stack_paths, warn)
from gaussianem.physics import poses
from gaussianem.physics.ctf import CTFParams

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
DEFAULT_AMPLITUDE_CONTRAST = 0.1      # what RELION takes when rlnAmplitudeContrast is absent


def _as_table(block) -> pd.DataFrame:
    """starfile returns a dict for a data block written without ``loop_``."""
    if isinstance(block, pd.DataFrame):
        return block
    return pd.DataFrame([dict(block)])


def _read_blocks(path: str) -> tuple:
    """(optics table or None, particle table, particle block name)."""
    if not os.path.isfile(path):
        raise ParticleFileError(f"{path}: STAR file not found")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as e:  # noqa: BLE001 (starfile/pandas raise many kinds)
        raise ParticleFileError(f"{path}: not a readable STAR file ({e})") from None
    if not blocks:
        raise ParticleFileError(f"{path}: no data blocks found; expected a RELION particle table")
    tables = {name: _as_table(b) for name, b in blocks.items()}
    if "particles" in tables:
        pname = "particles"
    else:
        named = [n for n, t in tables.items() if n != "optics" and "rlnImageName" in t.columns]
        if not named:
            raise ParticleFileError(
                f"{path}: no particle table: expected a data_particles block (RELION 3.1+) or "
                f"a table with an rlnImageName column (RELION 3.0); found blocks "
                f"{', '.join('data_' + n for n in tables)}")
        if len(named) > 1:
            raise ParticleFileError(f"{path}: several tables with rlnImageName "
                                    f"({', '.join('data_' + n for n in named)}); expected one")
        pname = named[0]
    optics = tables.get("optics")
    return optics, tables[pname].reset_index(drop=True), pname


def _numbers(values: pd.Series, path: str, block: str, column: str) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ParticleFileError(f"{path}: data_{block} column {column}, row {bad[0] + 1}: "
                                f"{values.iloc[bad[0]]!r} is not a number")
    return v


class _Columns:
    """Per-particle values from the particle table or (by optics group) the optics table."""

    def __init__(self, path, particles, pname, optics):
        self.path, self.p, self.pname, self.optics = path, particles, pname, optics
        self.row_of_particle = None
        if optics is not None:
            if "rlnOpticsGroup" not in optics.columns:
                raise ParticleFileError(f"{path}: data_optics has no rlnOpticsGroup column")
            if "rlnOpticsGroup" not in particles.columns:
                raise ParticleFileError(f"{path}: data_{pname} has no rlnOpticsGroup column, "
                                        "which is needed with a data_optics table")
            groups = _numbers(optics["rlnOpticsGroup"], path, "optics", "rlnOpticsGroup")
            pg = _numbers(particles["rlnOpticsGroup"], path, pname, "rlnOpticsGroup")
            row = {int(g): i for i, g in enumerate(groups)}
            self.row_of_particle = np.array([row.get(int(g), -1) for g in pg], dtype=np.int64)
            missing = np.flatnonzero(self.row_of_particle < 0)
            if missing.size:
                raise ParticleFileError(
                    f"{path}: data_{pname} row {missing[0] + 1} is in optics group "
                    f"{int(pg[missing[0]])}, which data_optics does not define (groups: "
                    f"{', '.join(str(int(g)) for g in groups)})")
            self.group = pg.astype(np.int64)

    def has(self, column) -> bool:
        return column in self.p.columns or (self.optics is not None and column in self.optics.columns)

    def get(self, column, what: str = "", default=None) -> np.ndarray:
        """Values of ``column`` per particle; ``default`` (a number) if absent, else an error."""
        if self.optics is not None and column in self.optics.columns:
            vals = _numbers(self.optics[column], self.path, "optics", column)
            return vals[self.row_of_particle]
        if column in self.p.columns:
            return _numbers(self.p[column], self.path, self.pname, column)
        if default is not None:
            return np.full(len(self.p), float(default))
        where = f"data_optics or data_{self.pname}" if self.optics is not None else f"data_{self.pname}"
        raise ParticleFileError(f"{self.path}: missing column {column} in {where}"
                                + (f"; expected {what}" if what else ""))


def _parse_image_names(path: str, particles: pd.DataFrame, pname: str) -> tuple:
    if "rlnImageName" not in particles.columns:
        raise ParticleFileError(f"{path}: missing column rlnImageName in data_{pname}; expected "
                                "image references like 000001@Extract/job001/stack.mrcs")
    names = particles["rlnImageName"].astype(str).str.strip()
    has_at = names.str.contains("@", regex=False)
    split = names.str.split("@", n=1)
    files = np.where(has_at, split.str[-1], names).astype(object)
    numbers = pd.to_numeric(split.str[0].where(has_at, "1"), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers) | (numbers < 1) | (numbers != np.round(numbers)))
    if bad.size:
        raise ParticleFileError(f"{path}: data_{pname} column rlnImageName, row {bad[0] + 1}: "
                                f"{names.iloc[bad[0]]!r}; expected N@stack with N a 1-based index")
    empty = np.flatnonzero(np.array([not f for f in files]))
    if empty.size:
        raise ParticleFileError(f"{path}: data_{pname} column rlnImageName, row {empty[0] + 1}: "
                                "no stack file named")
    return files, numbers.astype(np.int64) - 1, ~has_at.to_numpy(dtype=bool)


def _bare_names(path: str, pname: str, stacks: np.ndarray, indices: np.ndarray, bare: np.ndarray,
                check_images: bool) -> np.ndarray:
    """Image indices for rows whose rlnImageName has no ``N@`` (RELION: a single-image file).

    A file named so must hold one image; if it holds exactly as many images as there are
    rows naming it (all bare), those rows are its images in row order (with a warning).
    Without ``check_images`` only files named by several bare rows are looked at.
    """
    if not bare.any():
        return indices
    indices = indices.copy()
    bare_rows = np.flatnonzero(bare)
    uniq, inverse, counts = np.unique(stacks[bare].astype(str), return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    in_order = []
    for k, (stack, count) in enumerate(zip(uniq, counts)):
        if count == 1 and not check_images:
            continue
        nz = read_header(stack).nz
        if nz == 1:
            continue
        rows = bare_rows[inverse == k]
        named_with_at = np.flatnonzero(~bare & (stacks == stack))
        if count == nz and not named_with_at.size:
            indices[rows] = np.arange(nz)
            in_order.append((stack, nz))
            continue
        also = (f", and row {named_with_at[0] + 1} names it with an image number"
                if named_with_at.size else f"; {count} row(s) name it so")
        raise ParticleFileError(
            f"{path}: data_{pname} column rlnImageName, row {rows[0] + 1}: {stack} is named "
            f"without an image number, which RELION reads as a file holding one image, but it "
            f"holds {nz} images{also}; expected N@{os.path.basename(stack)} names (1-based N)")
    if in_order:
        stack, nz = in_order[0]
        warn(f"{path}: {len(in_order)} file(s) named in rlnImageName without image numbers hold "
             f"several images, one per row naming them (e.g. {stack}: {nz} images, {nz} rows); "
             "read as their images in row order. RELION reads a name without N@ as a "
             "single-image file: write N@stack names to be explicit.")
    return indices


def _images(path: str, particles: pd.DataFrame, pname: str, cols: "_Columns", datadir,
            check_images: bool, apix=None) -> tuple:
    """(absolute stack paths, 0-based indices, box) of the particle table's images."""
    expected_box = None
    if cols.has("rlnImageSize"):
        sizes = cols.get("rlnImageSize")
        if np.unique(sizes).size > 1:
            values = ", ".join(str(int(v)) for v in np.unique(sizes))
            raise ParticleFileError(
                f"{path}: column rlnImageSize has different values ({values}) for different "
                "optics groups; all particles must share one box size")
        expected_box = int(sizes[0])
    files, indices, bare = _parse_image_names(path, particles, pname)
    stacks = resolve_stack_paths(files, path, datadir, what="rlnImageName stack")
    indices = _bare_names(path, pname, stacks, indices, bare, check_images)
    box = particle_box(stacks, indices, path, expected_box, check_images, "rlnImageSize column", apix)
    return stacks, indices, box


def _pixel_size(path: str, cols: "_Columns", optics, pname: str, required: bool = True):
    if cols.has("rlnImagePixelSize"):
        apix = cols.get("rlnImagePixelSize")
    elif cols.has("rlnDetectorPixelSize") and cols.has("rlnMagnification"):
        apix = cols.get("rlnDetectorPixelSize") * 1e4 / cols.get("rlnMagnification")
    elif not required:
        return None
    else:
        where = "data_optics" if optics is not None else f"data_{pname}"
        raise ParticleFileError(f"{path}: pixel size missing: expected column rlnImagePixelSize "
                                f"(or rlnDetectorPixelSize and rlnMagnification) in {where}")
    bad = np.flatnonzero(apix <= 0)
    if bad.size:
        raise ParticleFileError(f"{path}: pixel size of particle row {bad[0] + 1} is {apix[bad[0]]}; "
                                "expected a positive value in Angstrom")
    return apix


def _amplitude_contrast(path: str, cols: "_Columns") -> np.ndarray:
    """``rlnAmplitudeContrast``, or RELION's own default 0.1 (with a warning) when the file
    has no such column (RELION 3.0 files from some programs, e.g. Warp's)."""
    if cols.has("rlnAmplitudeContrast"):
        return cols.get("rlnAmplitudeContrast")
    warn(f"{path}: no rlnAmplitudeContrast column; using RELION's default amplitude contrast of "
         f"{DEFAULT_AMPLITUDE_CONTRAST} (add the column if the data need another value)")
    return np.full(len(cols.p), DEFAULT_AMPLITUDE_CONTRAST)


def read_star_images(path, datadir=None, *, check_images: bool = True) -> tuple:
    """Only the images of a particle .star file: ``(stack paths, 0-based indices, box,
    pixel sizes or None)``, for metadata kept elsewhere (cryoDRGN's pose.pkl / ctf.pkl)."""
    path = os.path.abspath(os.fspath(path))
    optics, particles, pname = _read_blocks(path)
    if len(particles) == 0:
        raise ParticleFileError(f"{path}: data_{pname} has no particles")
    cols = _Columns(path, particles, pname, optics)
    apix = _pixel_size(path, cols, optics, pname, required=False)
    stacks, indices, box = _images(path, particles, pname, cols, datadir, check_images, apix)
    return stacks, indices, box, apix


def read_star(path, datadir=None, *, check_images: bool = True) -> ParticleData:
    """Read a RELION particle .star file (3.0 or 3.1+) into a :class:`ParticleData`.

    ``datadir``: where relative stack paths are found (see module docstring).
    ``check_images``: read each stack's MRC header to check that the images exist and
    share one square box; without it the box comes from ``rlnImageSize``.
    """
    path = os.path.abspath(os.fspath(path))
    optics, particles, pname = _read_blocks(path)
    if len(particles) == 0:
        raise ParticleFileError(f"{path}: data_{pname} has no particles")
    cols = _Columns(path, particles, pname, optics)

    missing = [c for c in ANGLE_COLUMNS if c not in particles.columns]
    if missing:
        raise ParticleFileError(f"{path}: missing column {missing[0]} in data_{pname}; expected "
                                "particle orientations (rlnAngleRot, rlnAngleTilt, rlnAnglePsi), "
                                "e.g. from a 3D refinement's _data.star")
    rot, tilt, psi = (_numbers(particles[c], path, pname, c) for c in ANGLE_COLUMNS)

    apix = _pixel_size(path, cols, optics, pname)

    shifts = np.zeros((len(particles), 2))
    for k, axis in enumerate("XY"):
        if f"rlnOrigin{axis}Angst" in particles.columns:
            shifts[:, k] = cols.get(f"rlnOrigin{axis}Angst")
        elif f"rlnOrigin{axis}" in particles.columns:
            shifts[:, k] = cols.get(f"rlnOrigin{axis}") * apix
    has_origin = [any(f"rlnOrigin{a}{u}" in particles.columns for u in ("", "Angst")) for a in "XY"]
    if has_origin[0] != has_origin[1]:
        present, absent = ("X", "Y") if has_origin[0] else ("Y", "X")
        raise ParticleFileError(f"{path}: data_{pname} has an rlnOrigin{present} column but no "
                                f"rlnOrigin{absent}Angst (or rlnOrigin{absent}); expected both")

    bfactor, scale = ctf_envelope(cols.get("rlnCtfBfactor", default=0.0),
                                  cols.get("rlnCtfScalefactor", default=1.0), path,
                                  "rlnCtfBfactor", "rlnCtfScalefactor")
    ctf = CTFParams(
        defocus_u=cols.get("rlnDefocusU", "defocus in Angstrom"),
        defocus_v=cols.get("rlnDefocusV", "defocus in Angstrom"),
        defocus_angle=cols.get("rlnDefocusAngle", "the astigmatism angle in degrees"),
        voltage=cols.get("rlnVoltage", "the acceleration voltage in kV"),
        cs=cols.get("rlnSphericalAberration", "the spherical aberration in mm"),
        amp_contrast=_amplitude_contrast(path, cols),
        phase_shift=cols.get("rlnPhaseShift", default=0.0),
        bfactor=bfactor, scale=scale,
    )

    if optics is not None:
        group = cols.group
    else:
        group = group_optics(apix, ctf.voltage, ctf.cs, ctf.amp_contrast)

    stacks, indices, box = _images(path, particles, pname, cols, datadir, check_images, apix)

    table = particles
    table.attrs = {"format": "star", "block": pname,
                   "optics": None if optics is None else optics.to_dict(orient="list")}
    return ParticleData(
        image_paths=stacks, image_indices=indices,
        rotations=poses.euler_to_matrix(rot, tilt, psi), shifts=shifts, ctf=ctf,
        apix=apix.astype(np.float64), box=int(box), optics_group=group.astype(np.int64),
        source=path, table=table)
