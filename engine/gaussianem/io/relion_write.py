"""Writing RELION particle .star files: :func:`write_star` writes RELION 3.1 format from a
:class:`~gaussianem.io.particle_data.ParticleData` (optics groups renumbered 1..G in the
order of the data's group numbers); :func:`write_star_rows` copies selected rows of the
original file with all their columns (and its optics table) unchanged. Both take
``image_names`` (:func:`image_names_for` makes names that resolve from a given folder, e.g.
a RELION project) and ``columns`` (set or added, e.g. ``rlnClassNumber``). Reading is in
:mod:`gaussianem.io.relion`.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import starfile

from gaussianem.errors import InputError
from gaussianem.io.atomic import atomic_output
from gaussianem.io.particle_data import ParticleData, stack_name_for
from gaussianem.physics import poses


def image_names_for(data: ParticleData, folder) -> list:
    """``rlnImageName`` values (``000001@stack.mrcs``) for ``data``'s images, the stacks
    named relative to ``folder`` when inside it, else by absolute path."""
    folder = os.path.abspath(os.fspath(folder))
    uniq, inverse = np.unique(data.image_paths.astype(str), return_inverse=True)
    rel = np.array([stack_name_for(p, folder) for p in uniq], dtype=object)[inverse.reshape(-1)]
    return [f"{i + 1:06d}@{r}" for i, r in zip(data.image_indices, rel)]


def _set_columns(table: pd.DataFrame, columns, path) -> None:
    """Set (in place, keeping an existing column's position) or append ``columns``."""
    for name, values in (columns or {}).items():
        values = np.asarray(values)
        if len(values) != len(table):
            raise InputError(f"cannot write {path}: column {name} has {len(values)} values for "
                             f"{len(table)} particles")
        table[name] = values


def write_star(path, data: ParticleData, image_names=None, columns=None) -> None:
    """Write ``data`` as a RELION 3.1 particle .star file (atomically).

    ``image_names`` (N strings like ``000001@stack.mrcs``) replaces the names made from
    ``data.image_paths`` / ``image_indices`` (:func:`image_names_for` the .star file's
    folder). ``columns`` (``{label: N values}``) are added to the particle table.
    Voltage, Cs, amplitude contrast and pixel size must be constant within each optics
    group.
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
        image_names = image_names_for(data, os.path.dirname(path))
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
    scale = np.asarray(data.ctf.scale, dtype=np.float64)
    if np.any(scale != 1.0):
        particles.insert(len(particles.columns) - 1, "rlnCtfScalefactor", scale)
    _set_columns(particles, columns, path)
    with atomic_output(path) as tmp:
        starfile.write({"optics": pd.DataFrame(optics), "particles": particles}, tmp)


def write_star_rows(src: ParticleData, idx, path, image_names=None, columns=None) -> None:
    """Write the rows ``idx`` of the .star file ``src`` was read from to ``path``, with
    every original column (and the original optics table) unchanged. Image names are
    copied as they are (RELION resolves them from the project directory, so write the
    subset inside the same project) unless ``image_names`` (one per row written) replaces
    them; ``columns`` (``{label: one value per row written}``) are set or added."""
    path = os.fspath(path)
    idx = np.asarray(idx)
    rows = src.table.iloc[idx].copy()
    rows.attrs = {}
    if image_names is not None:
        _set_columns(rows, {"rlnImageName": list(image_names)}, path)
    _set_columns(rows, columns, path)
    optics = src.table.attrs.get("optics")
    block = src.table.attrs.get("block", "particles")
    with atomic_output(path) as tmp:
        if optics is None:
            starfile.write({block: rows}, tmp)
        else:
            starfile.write({"optics": pd.DataFrame(optics), block: rows}, tmp)
