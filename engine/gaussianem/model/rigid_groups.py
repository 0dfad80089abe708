"""Rigid groups of points, found from how the points move: the part of DynDom (Hayward &
Berendsen 1998) that needs no sequence.

Given points ``x`` (N, 3) and their displacements at ``S`` states (S, N, 3), the points
are split into groups each moved, state by state, by one rigid motion (Kabsch): a group's
residual is what its per-state rigid motions leave unexplained. :func:`segment_points`
grows the number of groups from 1 while one more leaves under ``accept`` (0.7) of the residual,
each point going to the group that explains it best, its neighbours' errors counted with
its own (a point near a hinge axis hardly moves, so its own error barely tells the sides
apart; neighbours keep the groups contiguous in space).

Used on atomic models' residues (:mod:`gaussianem.analysis.domains`, with chains and
sequence runs) and on the Gaussians in training (:mod:`gaussianem.train.graph_cut`: the
neighbour graph is cut where rigid domains meet).
"""

from __future__ import annotations

import numpy as np


def kabsch(p: np.ndarray, q: np.ndarray):
    """(R, centre of p, centre of q): the rotation taking points ``p`` onto ``q`` (n, 3)
    about their centres, least squares."""
    pc, qc = p.mean(0), q.mean(0)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T, pc, qc


def residuals(centres: np.ndarray, disp: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N, k) squared error of each point's displacements over the states under each
    group's per-state rigid motion (inf for groups of fewer than 3 points)."""
    err = np.zeros((len(centres), k))
    for j in range(k):
        sel = labels == j
        if sel.sum() < 3:
            err[:, j] = np.inf
            continue
        for s in disp:
            r, pc, qc = kabsch(centres[sel], centres[sel] + s[sel])
            err[:, j] += (((centres - pc) @ r.T + qc - centres - s) ** 2).sum(-1)
    return err


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels 0..n-1 in order of first appearance (empty groups dropped)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inv]


def _smoothed(err: np.ndarray, edges: np.ndarray | None) -> np.ndarray:
    """Each point's errors plus its neighbours' (graph ``edges`` (E, 2))."""
    if edges is None or not len(edges):
        return err
    out = err.copy()
    finite = np.where(np.isfinite(err), err, 1e30)
    np.add.at(out, edges[:, 0], finite[edges[:, 1]])
    np.add.at(out, edges[:, 1], finite[edges[:, 0]])
    return out


def assign(centres, disp, labels, k, edges=None, iterations=30) -> np.ndarray:
    """Points moved to the group whose rigid motions explain them (and their neighbours)
    best, until nothing changes."""
    for _ in range(iterations):
        new = np.argmin(_smoothed(residuals(centres, disp, labels, k), edges), 1)
        if (new == labels).all():
            break
        labels = new
    return labels


def candidates(feat: np.ndarray, best: np.ndarray, k: int, seed: int):
    """Starting labels for ``k`` groups: k-means on all displacements (two seeds), and each
    of the ``k - 1`` groups of ``best`` split in two by k-means on its own."""
    from scipy.cluster.vq import kmeans2
    for s in (seed, seed + 1):
        yield kmeans2(feat, k, minit="++", seed=s)[1]
    for j in range(k - 1):
        sel = np.flatnonzero(best == j)
        if len(sel) >= 6:
            lab = best.copy()
            lab[sel[kmeans2(feat[sel], 2, minit="++", seed=seed)[1] == 1]] = k - 1
            yield lab


def best_split(centres: np.ndarray, disp: np.ndarray, feat: np.ndarray, best: np.ndarray, k: int, seed: int,
               refine, admissible=None):
    """(labels, residual): of the :func:`candidates` for ``k`` groups, each made into
    labels by ``refine(start)``, the one with ``k`` groups (and ``admissible(labels)``)
    whose per-state rigid motions leave the least mean squared residual; (None, inf) if
    none has."""
    n = len(centres)
    found, now = None, np.inf
    for start in candidates(feat, best, k, seed):
        lab = refine(start)
        if int(lab.max()) + 1 < k or (admissible is not None and not admissible(lab)):
            continue
        err = residuals(centres, disp, lab, k)
        r = float(err[np.arange(n), lab].mean() / len(disp))
        if r < now:
            found, now = lab, r
    return found, now


def segment_points(centres: np.ndarray, disp: np.ndarray, edges: np.ndarray | None = None,
                   max_groups: int = 4, accept: float = 0.7, min_fraction: float = 0.05,
                   seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """(labels (N,), residual per number of groups tried): rigid groups of ``centres``
    (N, 3) from their displacements ``disp`` (S, N, 3). For each count the best of several
    starts is kept (:func:`candidates`, refined by :func:`assign`); a group must hold at
    least ``min_fraction`` of the points; the search stops at the first count that is
    refused (no start giving groups that large, or the residual not under ``accept`` of
    the last)."""
    centres = np.asarray(centres, dtype=np.float64)
    disp = np.asarray(disp, dtype=np.float64)
    n = len(centres)
    best = np.zeros(n, dtype=int)
    residual = [float(residuals(centres, disp, best, 1).mean() / len(disp))]
    motion = float((disp ** 2).sum(-1).mean())
    feat = disp.transpose(1, 0, 2).reshape(n, -1)
    for k in range(2, int(max_groups) + 1):
        if n < k * 3 or residual[-1] <= 1e-4 * motion:
            break
        found, now = best_split(centres, disp, feat, best, k, seed,
                                lambda start: relabel(assign(centres, disp, relabel(start), k, edges)),
                                lambda lab: np.bincount(lab).min() >= min_fraction * n)
        if found is None:
            break
        residual.append(now)
        if not now < accept * residual[-2]:
            break
        best = found
    return best, residual
