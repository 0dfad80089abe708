"""The realistic simulator's motions: elastic-network normal modes and hinges.

``benchmarks/realistic.py``'s helpers (re-exported there): an anisotropic network model on
the CA atoms (Hessian, softest non-trivial modes, the rigid-body basis they are orthogonal
to), all-atom mode fields, a hinge's moving part and axis, and :class:`Motion`, the model's
coordinates at motion coordinates (t1, t2) for a ``RealisticSpec`` (see realistic.py's
docstring for the conventions).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (os.path.join(ROOT, "engine"), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from realistic_structures import parse_selection  # noqa: E402

if TYPE_CHECKING:
    from realistic import RealisticSpec


def ca_indices(model) -> np.ndarray:
    """Atom index of each residue's CA, for residues that have one (residue order)."""
    ca = np.flatnonzero(model.atom_names == "CA")
    _, first = np.unique(model.res_index[ca], return_index=True)
    return ca[first]


def anm_hessian(xyz, cutoff: float = 15.0, gamma: float = 1.0) -> np.ndarray:
    """(3N, 3N) ANM Hessian of points ``xyz`` (N, 3): a spring of constant ``gamma``
    between every pair closer than ``cutoff``."""
    from scipy.spatial import cKDTree
    n = len(xyz)
    pairs = cKDTree(xyz).query_pairs(cutoff, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d = xyz[j] - xyz[i]
    blocks = -gamma * d[:, :, None] * d[:, None, :] / (d * d).sum(1)[:, None, None]   # (P, 3, 3)
    h = np.zeros((n, 3, n, 3))
    np.add.at(h, (i, slice(None), j), blocks.transpose(0, 1, 2))
    h = h.reshape(3 * n, 3 * n)
    h = h + h.T
    diag = np.zeros((n, 3, 3))
    np.add.at(diag, i, -blocks)
    np.add.at(diag, j, -blocks)
    h = h.reshape(n, 3, n, 3)
    h[np.arange(n), :, np.arange(n), :] = diag
    return h.reshape(3 * n, 3 * n)


def anm_modes(xyz, n_modes: int = 2, cutoff: float = 15.0):
    """The ``n_modes`` softest non-trivial ANM modes of points ``xyz``: (eigenvalues (k,),
    modes (k, N, 3) of unit norm). Raises if the network has more than six zero modes
    (parts not connected within ``cutoff``)."""
    from scipy.linalg import eigh
    h = anm_hessian(np.asarray(xyz, np.float64), cutoff)
    w, v = eigh(h, subset_by_index=[0, 6 + n_modes - 1])
    scale = max(float(np.abs(w).max()), 1e-12)
    if w[6] < 1e-6 * scale:
        raise ValueError(f"the elastic network (cutoff {cutoff} A) has more than six zero modes: "
                         "parts of the structure are not connected; raise anm_cutoff")
    return w[6:], v[:, 6:].T.reshape(n_modes, -1, 3)


def rigid_body_basis(xyz) -> np.ndarray:
    """(6, 3N) orthonormal basis of rigid-body motions (3 translations, 3 rotations) of ``xyz``."""
    x = np.asarray(xyz, np.float64) - np.mean(xyz, 0)
    n = len(x)
    rows = []
    for a in range(3):
        t = np.zeros((n, 3))
        t[:, a] = 1
        rows.append(t.ravel())
    for a in range(3):
        e = np.eye(3)[a]
        rows.append(np.cross(e, x).ravel())
    q, _ = np.linalg.qr(np.array(rows).T)
    return q.T


def mode_fields(model, modes=(0,), cutoff: float = 15.0):
    """All-atom displacement fields (k, M, 3) of the given ANM modes, each of RMS 1 A over
    the atoms, and the modes' eigenvalues. Atoms follow their residue's CA (residues
    without one, the nearest CA)."""
    from scipy.spatial import cKDTree
    ca = ca_indices(model)
    if len(ca) < 4:
        raise ValueError("normal modes need at least 4 CA atoms")
    w, vec = anm_modes(model.coords[ca], max(modes) + 1, cutoff)
    res_to_ca = np.full(model.n_residues(), -1)
    res_to_ca[model.res_index[ca]] = np.arange(len(ca))
    owner = res_to_ca[model.res_index]
    lost = owner < 0
    if lost.any():
        owner[lost] = cKDTree(model.coords[ca]).query(model.coords[lost])[1]
    fields = []
    for m in modes:
        f = vec[m][owner]
        fields.append(f / np.sqrt((f * f).sum(1).mean()))
    return np.stack(fields), w[list(modes)]


def hinge_geometry(model, selection: str | None):
    """(mask, axis_point, axis_dir) of a hinge: ``structure.default_hinge`` or the part
    ``selection`` turning about an axis through its interface with the rest (the mean of its
    atoms within 6 A of the rest), perpendicular to the rest -> part direction."""
    from scipy.spatial import cKDTree
    from gaussianem.sim.geometry import default_hinge
    if not selection:
        return default_hinge(model)
    mask = parse_selection(model, selection)
    if mask.all():
        raise ValueError(f"the hinge selection {selection!r} is the whole model")
    rest, part = model.coords[~mask], model.coords[mask]
    d, _ = cKDTree(rest).query(part)
    near = part[d < 6.0] if (d < 6.0).any() else part[[np.argmin(d)]]
    point = near.mean(0)
    v = part.mean(0) - rest.mean(0)
    w = part.mean(0) - point
    axis = np.cross(w, v)
    if np.linalg.norm(axis) < 1e-3 * max(np.linalg.norm(v) * np.linalg.norm(w), 1e-12):
        axis = np.cross(v, np.eye(3)[np.argmin(np.abs(v))])
    return mask, point, axis / np.linalg.norm(axis)


class Motion:
    """Coordinates of the model at motion coordinates (t1, t2) in [0, 1]."""

    def __init__(self, model, spec: RealisticSpec):
        self.model, self.spec = model, spec
        self.kind = spec.motion
        self.eigenvalues = []
        if self.kind in ("hinge", "two_hinges"):
            self.mask, self.point, self.axis = hinge_geometry(model, spec.hinge)
        if self.kind == "two_hinges":
            # a second part turning about its own interface at the same time (two domains
            # closing onto a core, as a kinase's lid and NMP domains do)
            self.mask2, self.point2, self.axis2 = hinge_geometry(model, spec.hinge2 or model.chains()[-1])
            self.mask2 &= ~self.mask
            if not self.mask2.any():
                raise ValueError("two_hinges: the second moving part lies inside the first")
        elif self.kind != "hinge":
            use = spec.modes[:1] if self.kind == "mode" else spec.modes[:2]
            if len(use) < (1 if self.kind == "mode" else 2):
                raise ValueError("two_modes needs two entries in modes")
            self.fields, w = mode_fields(model, tuple(use), spec.anm_cutoff)
            self.eigenvalues = [float(x) for x in w]

    @property
    def two(self) -> bool:
        return self.kind == "two_modes"

    def phases(self, t):
        """(u1, u2): where each hinge is in its own turn at motion ``t``: both ``t``, or with
        ``hinge_stagger`` s the first turning over [0, 1 - s] and the second over [s, 1]."""
        s = float(getattr(self.spec, "hinge_stagger", 0.0) or 0.0) if self.kind == "two_hinges" else 0.0
        t = np.asarray(t, dtype=np.float64)
        return np.clip(t / (1 - s), 0, 1), np.clip((t - s) / (1 - s), 0, 1)

    def coords(self, t1: float, t2: float = 0.5) -> np.ndarray:
        from gaussianem.sim.geometry import hinge_rotation
        x0 = self.model.coords
        if self.kind in ("hinge", "two_hinges"):
            u1, u2 = (float(u) for u in self.phases(t1))
            xyz = hinge_rotation(x0, self.mask, self.point, self.axis, (u1 - 0.5) * self.spec.hinge_angle)
            if self.kind == "two_hinges":
                xyz = hinge_rotation(xyz, self.mask2, self.point2, self.axis2, (u2 - 0.5) * self.spec.hinge2_angle)
            return xyz
        a = self.spec.rmsd_range
        xyz = x0 + (t1 - 0.5) * a * self.fields[0]
        if self.two:
            xyz = xyz + (t2 - 0.5) * a * self.fields[1]
        return xyz
