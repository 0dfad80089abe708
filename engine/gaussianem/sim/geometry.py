"""Geometry for simulated heterogeneity: rotations, the default hinge and the default
absent part of an atomic model, and atoms to a density map."""

from __future__ import annotations

import numpy as np

from gaussianem.errors import InputError
from gaussianem.io.models import AtomicModel, MOLMAP_SIGMA_FACTOR


def _chain_residues(model: AtomicModel, chain: str) -> np.ndarray:
    return np.unique(model.res_index[model.chain_ids == chain])


def default_hinge(model: AtomicModel):
    """The moving part and axis of a default hinge motion: ``(mask, axis_point, axis_dir)``.

    The moving part is the C-terminal third (by residue count, at least one residue) of
    the first chain. The axis passes through the mean of the residue centres of the last
    fixed residue and the first two moving ones, perpendicular both to ``v`` (rest-of-model
    centroid -> moving centroid) and to ``w`` (axis point -> moving centroid), directed
    as ``w x v`` so that a positive angle swings the moving part away from the rest
    (opening). If ``v`` and ``w`` are parallel, the axis is ``v`` crossed with the
    coordinate axis least aligned with it.
    """
    res = _chain_residues(model, model.chains()[0])
    if len(res) < 2 and len(model.chains()) < 2:
        raise InputError("a hinge needs at least two residues")
    n_move = min(max(1, int(round(len(res) / 3))), len(res) - 1) if len(res) > 1 else 1
    moving_res = res[len(res) - n_move:]
    mask = np.isin(model.res_index, moving_res)
    b = len(res) - n_move
    boundary = res[max(b - 1, 0):b + 2]
    axis_point = model.residue_centres()[boundary].mean(axis=0)
    moving_c = model.coords[mask].mean(axis=0)
    v = moving_c - model.coords[~mask].mean(axis=0)
    w = moving_c - axis_point
    axis = np.cross(w, v)
    if np.linalg.norm(axis) < 1e-3 * max(np.linalg.norm(v) * np.linalg.norm(w), 1e-12):
        e = np.eye(3)[np.argmin(np.abs(v) / max(np.linalg.norm(v), 1e-12))]
        axis = np.cross(v, e)
    return mask, axis_point, axis / np.linalg.norm(axis)


def default_removal(model: AtomicModel) -> np.ndarray:
    """(M,) bool mask of a part to delete for compositional heterogeneity.

    With several chains: the whole last chain. With one chain: its N-terminal 15% of
    residues (at least one), since the C-terminal end is :func:`default_hinge`'s moving
    part and the two should not overlap.
    """
    chains = model.chains()
    if len(chains) > 1:
        return model.chain_ids == chains[-1]
    res = _chain_residues(model, chains[0])
    n = min(max(1, int(round(0.15 * len(res)))), max(len(res) - 1, 1))
    return np.isin(model.res_index, res[:n])


def hinge_rotation(model_or_coords, mask, axis_point, axis_dir, angle_deg) -> np.ndarray:
    """(M, 3) coordinates with the ``mask`` atoms rotated rigidly by ``angle_deg`` about
    the line through ``axis_point`` along ``axis_dir`` (right-hand rule); the rest unchanged."""
    xyz = model_or_coords.coords if isinstance(model_or_coords, AtomicModel) else model_or_coords
    xyz = np.array(xyz, dtype=np.float64, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(xyz),):
        raise InputError(f"mask of shape {mask.shape} for {len(xyz)} atoms")
    p = np.asarray(axis_point, dtype=np.float64)
    rot = rotation_matrix(axis_dir, angle_deg)
    xyz[mask] = (xyz[mask] - p) @ rot.T + p
    return xyz


def model_density(model: AtomicModel, box, apix: float, resolution: float | None = None,
                  origin=None, cutoff_sigmas: float = 4.0, weights=None,
                  chunk_values: int = 1 << 23) -> np.ndarray:
    """A molmap-like density map (z, y, x) float32 of the model.

    ``model`` is an AtomicModel or an (M, 3) coordinate array (then every point weighs
    1 unless ``weights`` says otherwise). Every atom is an isotropic Gaussian of standard
    deviation ``0.225 * resolution`` (default resolution ``2 * apix``) carrying its
    electron count (``weights`` if given), summed on a ``box`` grid (an int for a cube,
    or (nz, ny, nx)). Voxel (i, j, k) has its centre at ``origin + (k, j, i) * apix``;
    ``origin`` (x, y, z) defaults to ``-(box // 2) * apix`` per axis, so (0, 0, 0) is
    the centre of voxel ``box // 2``.
    Units are electrons per cubic Angstrom: each atom's Gaussian is normalised on the
    grid (per axis, out to ``cutoff_sigmas``), so the map sums to the electron count of
    the atoms inside the box, ``density.sum() * apix**3``.

    Each atom touches only its (2h+1)^3 neighbourhood, built as a product of three 1D
    profiles and accumulated with ``np.bincount`` in chunks of ``chunk_values``.
    """
    shape = (int(box),) * 3 if np.ndim(box) == 0 else tuple(int(n) for n in box)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"box must be a positive int or (nz, ny, nx), got {box!r}")
    apix = float(apix)
    resolution = 2.0 * apix if resolution is None else float(resolution)
    if not (apix > 0 and resolution > 0):
        raise InputError("apix and resolution must be positive")
    sigma = MOLMAP_SIGMA_FACTOR * resolution
    n_xyz = np.array(shape[::-1])                       # (nx, ny, nz)
    origin = -(n_xyz // 2) * apix if origin is None else np.asarray(origin, dtype=np.float64)
    is_model = isinstance(model, AtomicModel)
    xyz = model.coords if is_model else np.asarray(model, np.float64).reshape(-1, 3)
    w = weights if weights is not None else model.atomic_numbers() if is_model else 1.0
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), (len(xyz),))
    if not np.all(np.isfinite(xyz)):
        raise InputError("model coordinates are not all finite")

    half = int(np.ceil(cutoff_sigmas * sigma / apix))
    offs = np.arange(-half, half + 1)
    u = (xyz - origin) / apix                           # (M, 3) voxel units, x y z
    idx = np.rint(u).astype(np.int64)[:, :, None] + offs    # (M, 3, K)
    prof = np.exp(-0.5 * ((idx - u[:, :, None]) * (apix / sigma)) ** 2)
    prof /= prof.sum(axis=2, keepdims=True)
    inside = (idx >= 0) & (idx < n_xyz[None, :, None])
    prof = np.where(inside, prof, 0.0)
    idx = np.clip(idx, 0, (n_xyz - 1)[None, :, None])

    nx, ny, nz = n_xyz
    k = len(offs)
    out = np.zeros(nz * ny * nx, dtype=np.float64)
    step = max(1, chunk_values // k ** 3)
    for s in range(0, len(xyz), step):
        px, py, pz = (prof[s:s + step, a] for a in range(3))
        ix, iy, iz = (idx[s:s + step, a] for a in range(3))
        flat = (iz[:, :, None, None] * ny + iy[:, None, :, None]) * nx + ix[:, None, None, :]
        val = (w[s:s + step, None, None, None] * pz[:, :, None, None]
               * py[:, None, :, None] * px[:, None, None, :])
        out += np.bincount(flat.ravel(), val.ravel(), minlength=out.size)
    return (out / apix ** 3).reshape(nz, ny, nx).astype(np.float32)


def rotation_matrix(axis_dir, angle_deg) -> np.ndarray:
    """3x3 right-handed rotation by ``angle_deg`` about the direction ``axis_dir``."""
    u = np.asarray(axis_dir, dtype=np.float64)
    n = np.linalg.norm(u)
    if not n > 0:
        raise InputError("rotation axis direction has zero length")
    u = u / n
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)
