"""An ideal test protein built in code: the two-domain helical bundle of the simulator,
the demo, the validation and the tests.

:func:`build_test_model` gives chain A (two domains of alpha helices stacked along z,
joined by a hinge) and, optionally, chain B (one helix beside domain A): poly-alanine
backbone + CB atoms in ideal geometry (Engh & Huber bonds and angles, the
Pauling-Corey-Branson helix), centred on its centre of mass. :func:`helix_parameters`
measures a backbone's helical turn, rise and radius (what its test checks).
"""

from __future__ import annotations

import numpy as np

from gaussianem.errors import InputError
from gaussianem.io.models import AtomicModel, gemmi_structure
from gaussianem.sim.geometry import rotation_matrix

# Backbone geometry (Engh & Huber) and the Pauling-Corey-Branson alpha helix.
_BOND = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329, "C-O": 1.231}
_ANGLE = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7, "CA-C-O": 120.5}
_PHI, _PSI, _OMEGA = -57.8, -47.0, 180.0
_HELIX_SPACING = 10.0          # Angstrom between neighbouring helix axes
_DOMAIN_GAP = 4.0              # Angstrom along the bundle axis between the domains' atoms
_LOOP_GAP = 4                  # residue numbers skipped between helices (unmodelled loops)


def _place(a, b, c, bond, angle, torsion):
    """Position of atom d with |cd| = bond, angle bcd and torsion abcd in degrees (NeRF)."""
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    ang, tor = np.deg2rad(angle), np.deg2rad(torsion)
    return c + bond * (-np.cos(ang) * bc + np.sin(ang) * np.cos(tor) * m
                       + np.sin(ang) * np.sin(tor) * n)


def _kabsch(a, b):
    """Rotation R and translation t with b ~ a @ R.T + t."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, cb - ca @ r.T


def helix_parameters(backbone: np.ndarray):
    """Screw parameters of a regular helix from its (n, 3, 3) N/CA/C backbone:
    (turn per residue in degrees, rise in Angstrom, CA radius, axis point, axis direction),
    the direction pointing from N- to C-terminus (a right-handed helix has positive turn)."""
    r, t = _kabsch(backbone[0], backbone[1])
    turn = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
    u = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    u /= np.linalg.norm(u)
    rise = float(t @ u)
    p = np.linalg.lstsq(np.eye(3) - r, t - rise * u, rcond=None)[0]
    if rise < 0:
        turn, rise, u = -turn, -rise, -u
    radial = backbone[:, 1] - p
    radial -= np.outer(radial @ u, u)
    return turn, rise, float(np.linalg.norm(radial, axis=1).mean()), p, u


def _ideal_helix(n: int) -> np.ndarray:
    """(n, 5, 3) N, CA, C, O, CB of an ideal alpha helix: axis along +z through the
    origin, N- to C-terminus upwards, CA atoms centred on z = 0."""
    a = np.deg2rad(_ANGLE["N-CA-C"])
    n_ = np.zeros(3)
    ca = np.array([_BOND["N-CA"], 0.0, 0.0])
    c = ca + _BOND["CA-C"] * np.array([-np.cos(a), np.sin(a), 0.0])
    bb = [(n_, ca, c)]
    for _ in range(1, max(n, 2)):
        n2 = _place(n_, ca, c, _BOND["C-N"], _ANGLE["CA-C-N"], _PSI)
        ca2 = _place(ca, c, n2, _BOND["N-CA"], _ANGLE["C-N-CA"], _OMEGA)
        c2 = _place(c, n2, ca2, _BOND["CA-C"], _ANGLE["N-CA-C"], _PHI)
        n_, ca, c = n2, ca2, c2
        bb.append((n_, ca, c))
    bb = np.array(bb)
    o = np.array([_place(r[0], r[1], r[2], _BOND["C-O"], _ANGLE["CA-C-O"], _PSI + 180.0)
                  for r in bb])
    # Ideal L-amino-acid CB from N, CA, C (the standard "virtual CB" construction).
    b_, c_ = bb[:, 1] - bb[:, 0], bb[:, 2] - bb[:, 1]
    cb = (-0.58273431 * np.cross(b_, c_) + 0.56802827 * b_ - 0.54067466 * c_ + bb[:, 1])
    atoms = np.concatenate([bb, o[:, None], cb[:, None]], axis=1)[:n]
    _, _, _, p, u = helix_parameters(bb)
    z = np.array([0.0, 0.0, 1.0])
    rot = rotation_matrix(np.cross(u, z), np.degrees(np.arccos(np.clip(u @ z, -1, 1)))) \
        if np.linalg.norm(np.cross(u, z)) > 1e-9 else np.eye(3)
    atoms = (atoms - p) @ rot.T
    atoms[..., 2] -= atoms[:, 1, 2].mean()
    return atoms


def _bundle_radius(n: int) -> float:
    """Radius of the circle on which n helix axes sit _HELIX_SPACING apart."""
    return 0.0 if n == 1 else _HELIX_SPACING / (2 * np.sin(np.pi / n))


def build_test_model(n_helices_per_domain: int = 3, helix_length: int = 18, seed: int = 0,
                     two_chains: bool = True) -> AtomicModel:
    """An ideal poly-alanine two-domain helical bundle, centred at its centre of mass.

    Chain A: domain A, ``n`` antiparallel helices of ``helix_length`` residues around the
    z axis, followed by domain B, ``n`` helices of ``ceil(helix_length / 2)`` residues
    stacked above it along +z (so domain B is the C-terminal third of chain A and hinges
    on domain A). Its first helix starts above domain A's last one. With ``two_chains``,
    chain B is one more helix of ``helix_length`` packed against the side of domain A.

    Helices are ideal alpha helices (phi -57.8, psi -47, omega 180 with Engh & Huber bond
    geometry: 3.64 residues per turn, 1.54 A rise, CA radius 2.29 A) with N, CA, C, O
    and CB atoms, neighbouring axes 10 A apart. Loops are not modelled: residue numbers
    skip 4 between helices, as in a model with missing loops. ``seed`` sets each helix's
    rotation about its own axis and the B-factors (20-40, two decimals).
    With the defaults: 81 + 18 residues, 495 atoms, about 54 A across.
    """
    n = int(n_helices_per_domain)
    length_a, length_b = int(helix_length), int(np.ceil(helix_length / 2))
    if n < 1 or length_a < 2:
        raise InputError("need at least one helix per domain and two residues per helix")
    rng = np.random.default_rng(seed)
    templates = {length_a: _ideal_helix(length_a), length_b: _ideal_helix(length_b)}
    radius = _bundle_radius(n)

    def place(length, angle, z_centre, up, xy_radius=radius):
        h = templates[length].copy()
        h = h @ rotation_matrix((0, 0, 1), rng.uniform(0, 360)).T
        if not up:
            h = h @ np.diag([1.0, -1.0, -1.0])
        h[..., 0] += xy_radius * np.cos(angle)
        h[..., 1] += xy_radius * np.sin(angle)
        h[..., 2] += z_centre
        return h

    helices = []                                     # (chain, first residue number, atoms)
    angles = 2 * np.pi * np.arange(n) / n
    resnum = 1
    for k in range(n):                               # domain A: its last helix points up
        helices.append(("A", resnum, place(length_a, angles[k], 0.0, (n - 1 - k) % 2 == 0)))
        resnum += length_a + _LOOP_GAP
    reach = {k: np.abs(t[..., 2]).max() for k, t in templates.items()}
    z_b = reach[length_a] + _DOMAIN_GAP + reach[length_b]
    for k in range(n):                               # domain B starts above A's last helix
        helices.append(("A", resnum, place(length_b, angles[n - 1] + angles[k], z_b, k % 2 == 0)))
        resnum += length_b + _LOOP_GAP
    if two_chains:                                   # between A's helices 0 and 1, outside
        half = np.pi / max(n, 2) if n > 1 else 0.0
        r_b = radius * np.cos(half) + np.sqrt(_HELIX_SPACING ** 2 - (radius * np.sin(half)) ** 2)
        helices.append(("B", 1, place(length_a, half, 0.0, False, xy_radius=r_b)))

    names = np.array(["N", "CA", "C", "O", "CB"])
    elements = np.array(["N", "C", "C", "O", "C"])
    cols = {k: [] for k in ("coords", "elements", "atom_names", "res_names", "chain_ids",
                            "res_seq", "res_index", "b_factors", "occupancies")}
    r = 0
    for chain, first, atoms in helices:
        for i, res_atoms in enumerate(atoms):
            cols["coords"].append(res_atoms)
            cols["elements"].append(elements)
            cols["atom_names"].append(names)
            cols["res_names"].append(np.full(5, "ALA"))
            cols["chain_ids"].append(np.full(5, chain))
            cols["res_seq"].append(np.full(5, first + i))
            cols["res_index"].append(np.full(5, r))
            cols["b_factors"].append(np.full(5, np.round(rng.uniform(20, 40), 2)))
            cols["occupancies"].append(np.ones(5))
            r += 1
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    model = AtomicModel(**arrays)
    m = model.masses()
    model.coords -= (m[:, None] * model.coords).sum(axis=0) / m.sum()
    model._structure = gemmi_structure(model)
    return model
