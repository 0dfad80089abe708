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
  default for these labels); missing ``rlnPhaseShift`` and ``rlnCtfBfactor`` mean zero.
  Everything else the engine needs (angles, defoci, voltage, Cs, amplitude contrast,
  pixel size, image names) must be present: a missing column raises
  :class:`~gaussianem.errors.ParticleFileError` naming the file and the column.
* ``rlnImageName`` is ``N@stack.mrcs`` with a 1-based ``N`` (or a bare file name meaning
  its only image); relative stack paths are found as described in
  :func:`gaussianem.io.particle_data.resolve_stack_paths`.
* Rotations are ``poses.euler_to_matrix(rlnAngleRot, rlnAngleTilt, rlnAnglePsi)``.

Writing: :func:`write_star` writes RELION 3.1 format (optics groups renumbered 1..G in
the order of the data's group numbers); :func:`write_subset` copies selected rows of the
original file with all their columns (and its optics table) unchanged.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import starfile

from gaussianem.errors import InputError, ParticleFileError
from gaussianem.io.atomic import atomic_output
from gaussianem.io.particle_data import ParticleData, particle_box, group_optics, resolve_stack_paths, stack_name_for
from gaussianem.physics import poses
from gaussianem.physics.ctf import CTFParams

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")


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
    return files, numbers.astype(np.int64) - 1


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

    if cols.has("rlnImagePixelSize"):
        apix = cols.get("rlnImagePixelSize")
    elif cols.has("rlnDetectorPixelSize") and cols.has("rlnMagnification"):
        apix = cols.get("rlnDetectorPixelSize") * 1e4 / cols.get("rlnMagnification")
    else:
        where = "data_optics" if optics is not None else f"data_{pname}"
        raise ParticleFileError(f"{path}: pixel size missing: expected column rlnImagePixelSize "
                                f"(or rlnDetectorPixelSize and rlnMagnification) in {where}")
    bad = np.flatnonzero(apix <= 0)
    if bad.size:
        raise ParticleFileError(f"{path}: pixel size of particle row {bad[0] + 1} is {apix[bad[0]]}; "
                                "expected a positive value in Angstrom")

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

    ctf = CTFParams(
        defocus_u=cols.get("rlnDefocusU", "defocus in Angstrom"),
        defocus_v=cols.get("rlnDefocusV", "defocus in Angstrom"),
        defocus_angle=cols.get("rlnDefocusAngle", "the astigmatism angle in degrees"),
        voltage=cols.get("rlnVoltage", "the acceleration voltage in kV"),
        cs=cols.get("rlnSphericalAberration", "the spherical aberration in mm"),
        amp_contrast=cols.get("rlnAmplitudeContrast", "the amplitude contrast fraction"),
        phase_shift=cols.get("rlnPhaseShift", default=0.0),
        bfactor=cols.get("rlnCtfBfactor", default=0.0),
    )

    if optics is not None:
        group = cols.group
    else:
        group = group_optics(apix, ctf.voltage, ctf.cs, ctf.amp_contrast)

    expected_box = None
    if cols.has("rlnImageSize"):
        sizes = cols.get("rlnImageSize")
        if np.unique(sizes).size > 1:
            values = ", ".join(str(int(v)) for v in np.unique(sizes))
            raise ParticleFileError(
                f"{path}: column rlnImageSize has different values ({values}) for different "
                "optics groups; all particles must share one box size")
        expected_box = int(sizes[0])

    files, indices = _parse_image_names(path, particles, pname)
    stacks = resolve_stack_paths(files, path, datadir, what="rlnImageName stack")
    box = particle_box(stacks, indices, path, expected_box, check_images, "rlnImageSize column")

    table = particles
    table.attrs = {"format": "star", "block": pname,
                   "optics": None if optics is None else optics.to_dict(orient="list")}
    return ParticleData(
        image_paths=stacks, image_indices=indices,
        rotations=poses.euler_to_matrix(rot, tilt, psi), shifts=shifts, ctf=ctf,
        apix=apix.astype(np.float64), box=int(box), optics_group=group.astype(np.int64),
        source=path, table=table)


def write_star(path, data: ParticleData, image_names=None) -> None:
    """Write ``data`` as a RELION 3.1 particle .star file (atomically).

    ``image_names`` (N strings like ``000001@stack.mrcs``) replaces the names made from
    ``data.image_paths`` / ``image_indices`` (relative to the .star file's folder when the
    stacks are inside it, else absolute). Voltage, Cs, amplitude contrast and pixel size
    must be constant within each optics group.
    """
    path = os.path.abspath(os.fspath(path))
    n = len(data)
    groups = np.unique(data.optics_group)
    number = np.searchsorted(groups, data.optics_group) + 1  # 1..G
    per_group = {"rlnVoltage": data.ctf.voltage, "rlnSphericalAberration": data.ctf.cs,
                 "rlnAmplitudeContrast": data.ctf.amp_contrast, "rlnImagePixelSize": data.apix}
    optics = {"rlnOpticsGroupName": [], "rlnOpticsGroup": []}
    optics.update({k: [] for k in per_group})
    for g_index, g in enumerate(groups):
        sel = data.optics_group == g
        optics["rlnOpticsGroupName"].append(f"opticsGroup{g_index + 1}")
        optics["rlnOpticsGroup"].append(g_index + 1)
        for column, values in per_group.items():
            v = np.asarray(values, dtype=np.float64)[sel]
            if not np.allclose(v, v[0], rtol=1e-6, atol=1e-9):
                raise InputError(f"cannot write {path}: {column} varies within optics group "
                                 f"{int(g)} ({v.min():g} to {v.max():g}); RELION 3.1 stores it "
                                 "once per optics group")
            optics[column].append(float(v[0]))
    optics["rlnImageSize"] = [int(data.box)] * len(groups)
    optics["rlnImageDimensionality"] = [2] * len(groups)

    if image_names is None:
        folder = os.path.dirname(path)
        uniq, inverse = np.unique(data.image_paths.astype(str), return_inverse=True)
        rel = np.array([stack_name_for(p, folder) for p in uniq], dtype=object)[inverse.reshape(-1)]
        image_names = [f"{i + 1:06d}@{r}" for i, r in zip(data.image_indices, rel)]
    elif len(image_names) != n:
        raise InputError(f"image_names has {len(image_names)} entries for {n} particles")
    eulers = poses.matrix_to_euler(data.rotations)
    particles = pd.DataFrame({
        "rlnImageName": list(image_names),
        "rlnAngleRot": eulers[:, 0], "rlnAngleTilt": eulers[:, 1], "rlnAnglePsi": eulers[:, 2],
        "rlnOriginXAngst": data.shifts[:, 0], "rlnOriginYAngst": data.shifts[:, 1],
        "rlnDefocusU": data.ctf.defocus_u, "rlnDefocusV": data.ctf.defocus_v,
        "rlnDefocusAngle": data.ctf.defocus_angle, "rlnPhaseShift": data.ctf.phase_shift,
        "rlnCtfBfactor": data.ctf.bfactor, "rlnOpticsGroup": number.astype(np.int64),
    })
    with atomic_output(path) as tmp:
        starfile.write({"optics": pd.DataFrame(optics), "particles": particles}, tmp)


def write_star_rows(src: ParticleData, idx, path) -> None:
    """Write the rows ``idx`` of the .star file ``src`` was read from to ``path``, with
    every original column (and the original optics table) unchanged, image names
    included: RELION resolves them from the project directory, so write the subset inside
    the same project."""
    path = os.fspath(path)
    idx = np.asarray(idx)
    rows = src.table.iloc[idx].copy()
    rows.attrs = {}
    optics = src.table.attrs.get("optics")
    block = src.table.attrs.get("block", "particles")
    with atomic_output(path) as tmp:
        if optics is None:
            starfile.write({block: rows}, tmp)
        else:
            starfile.write({"optics": pd.DataFrame(optics), block: rows}, tmp)
