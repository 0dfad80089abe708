"""Particle orientations and shifts in RELION's and cryoSPARC's conventions.

Conventions (used everywhere in the engine):

* A rotation ``A`` (3x3) is RELION's ``Euler_angles2matrix(rot, tilt, psi)``: the ZYZ
  matrix ``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` with RELION's signs. It maps a point ``r``
  of the reference volume (x, y, z in Angstrom, origin at the box centre) into the
  particle's frame; the image is the projection along z of the rotated volume, so a
  point ``r`` lands at image position ``(A @ r)[:2]``. Equivalently (Fourier slice), the
  2D transform at frequency ``(kx, ky)`` is the 3D transform at ``A.T @ (kx, ky, 0)``.
* A shift is RELION's origin ``(rlnOriginXAngst, rlnOriginYAngst)`` in Angstrom. The
  particle's centre lies at ``-origin`` from the image centre (RELION recentres with
  ``rlnCoordinateX - rlnOriginX``), so ``image(x) = projection(x + origin)`` and in Fourier
  space ``image(k) = projection(k) * exp(+2 pi i k . origin)``.
* cryoSPARC stores ``alignments3D/pose`` as a rotation vector (axis * angle, radians)
  whose Rodrigues matrix is the transpose of RELION's ``A``, and ``alignments3D/shift``
  in pixels with RELION's origin sign.
"""

from __future__ import annotations

import numpy as np


def euler_to_matrix(rot, tilt, psi) -> np.ndarray:
    """RELION ZYZ Euler angles (degrees) -> rotation matrices ``A`` of shape (..., 3, 3)."""
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot, tilt, psi))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(np.broadcast(a, b, g).shape + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(m) -> np.ndarray:
    """Rotation matrices ``A`` (..., 3, 3) -> RELION (rot, tilt, psi) in degrees, shape (..., 3)."""
    m = np.asarray(m, dtype=np.float64)
    cb = np.clip(m[..., 2, 2], -1.0, 1.0)
    tilt = np.arccos(cb)
    sb = np.sin(tilt)
    gimbal = sb < 1e-6
    rot = np.where(gimbal, 0.0, np.arctan2(m[..., 2, 1], m[..., 2, 0]))
    psi = np.where(gimbal, 0.0, np.arctan2(m[..., 1, 2], -m[..., 0, 2]))
    # Gimbal lock (tilt 0 or 180): all of the in-plane rotation goes into psi.
    psi_lock = np.where(cb > 0, np.arctan2(-m[..., 1, 0], m[..., 0, 0]),
                        np.arctan2(m[..., 1, 0], -m[..., 0, 0]))
    psi = np.where(gimbal, psi_lock, psi)
    return np.rad2deg(np.stack([rot, tilt, psi], axis=-1))


def rotvec_to_matrix(v) -> np.ndarray:
    """Rodrigues: rotation vectors (..., 3) (axis * angle in radians) -> (..., 3, 3)."""
    v = np.asarray(v, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = v / np.where(theta < 1e-12, 1.0, theta)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    k = np.zeros(v.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2] = -z, y
    k[..., 1, 0], k[..., 1, 2] = z, -x
    k[..., 2, 0], k[..., 2, 1] = -y, x
    t = theta[..., None]
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def cryosparc_pose_to_matrix(pose) -> np.ndarray:
    """cryoSPARC ``alignments3D/pose`` rotation vectors -> RELION matrices ``A``."""
    return np.swapaxes(rotvec_to_matrix(pose), -1, -2)


def matrix_to_cryosparc_pose(m) -> np.ndarray:
    """RELION matrices ``A`` -> cryoSPARC rotation vectors (inverse of the above)."""
    r = np.swapaxes(np.asarray(m, dtype=np.float64), -1, -2)
    cos_t = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(cos_t)
    w = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                  r[..., 1, 0] - r[..., 0, 1]], axis=-1)
    s = np.sin(theta)[..., None]
    small = np.abs(s) < 1e-8
    out = np.where(small, w / 2, w / np.where(small, 1.0, 2 * s) * theta[..., None])
    # theta near pi: recover the axis from the symmetric part.
    near_pi = (theta > np.pi - 1e-4)
    if np.any(near_pi):
        sym = (r[near_pi] + np.eye(3)) / 2
        idx = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), axis=-1)
        axis = sym[np.arange(len(idx)), idx] / np.sqrt(np.maximum(
            sym[np.arange(len(idx)), idx, idx], 1e-12))[..., None]
        out[near_pi] = axis * theta[near_pi][..., None]
    return out


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed random rotation matrices (n, 3, 3) from random unit quaternions."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)
