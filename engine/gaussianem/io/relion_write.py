"""Writing RELION particle .star files: :func:`write_star` writes RELION 3.1 format from a
:class:`~gaussianem.io.particle_data.ParticleData` (optics groups renumbered 1..G in the
order of the data's group numbers); :func:`write_star_rows` copies selected rows of the
original file with all their columns (and its optics table) unchanged. Reading is in
:mod:`gaussianem.io.relion`, which also exports these two.
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
    scale = np.asarray(data.ctf.scale, dtype=np.float64)
    if np.any(scale != 1.0):
        particles.insert(len(particles.columns) - 1, "rlnCtfScalefactor", scale)
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
