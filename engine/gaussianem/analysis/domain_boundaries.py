"""Domain boundaries moved along the sequence to where the images of a moved state put them.

The domains found from the decoded displacements (:mod:`gaussianem.analysis.domains`) can
put a boundary well inside a moving part: the decoder's neighbour-graph terms smooth the
field across the interface, so residues near it move like neither side. On one hinge run
(SNR 0.1) the boundary sat 22 residues inside the moving domain, and the fitted models
missed by up to 3 A. The particles of a state far from the model's own see the difference:
with each domain kept at its fitted rigid motion, the mean matched filter over those
particles peaks within one residue of the true boundary (at 166 for 167 on that run; the
found boundary, 189, scored lower, as did every place between).

:func:`refine_boundaries` takes every place in a chain where the domain changes and tries
moving it up to ``MAX_SHIFT`` residues either way (every ``STEP``-th, then each residue
around the best), never past the next boundary and leaving every run ``MIN_RUN``
residues; each domain keeps its rigid motion from the model to the moved state. A run
left under ``MIN_SEGMENT`` residues between two others then joins the neighbour the images
prefer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gaussianem.analysis.domains import MIN_SEGMENT, Domains, _runs
from gaussianem.model.rigid_groups import kabsch
from gaussianem.analysis.result import Result
from gaussianem.analysis.state_particles import StateParticles

MAX_SHIFT = 40          # residues a boundary may move either way
STEP = 2                # coarse step of the search (then every residue around the best)
MIN_RUN = 5             # residues each run keeps


def residue_chains(model) -> np.ndarray:
    """(R,) the chain of each residue (file order)."""
    chains = np.empty(model.n_residues(), dtype=object)
    chains[model.res_index] = model.chain_ids
    return chains.astype(str)


def boundaries(labels: np.ndarray, chains: np.ndarray) -> list[int]:
    """Residue positions ``i`` where the domain changes between ``i`` and ``i + 1`` in a chain."""
    return [int(i) for i in np.flatnonzero((labels[:-1] != labels[1:]) & (chains[:-1] == chains[1:]))]


def moved_coords(model, atom_labels: np.ndarray, transforms) -> np.ndarray:
    """Atoms (M, 3) with each domain ``k`` (``atom_labels == k``) moved by ``transforms[k]``,
    (R, p, q): x -> R (x - p) + q."""
    x0 = np.asarray(model.coords, dtype=np.float64)
    out = x0.copy()
    for k, (r, p, q) in enumerate(transforms):
        g = atom_labels == k
        out[g] = (x0[g] - p) @ r.T + q
    return out


@dataclass
class Boundaries:
    """``domains`` with their boundaries moved; ``coords`` (M, 3) the moved state with
    them (each domain at its rigid motion); ``moves`` per boundary: the residue it was
    after and is after now (0-based, file order) and the scores there; ``judged``: the
    finer splits the images were asked about
    (:func:`~gaussianem.analysis.domain_fit.domain_count`)."""

    domains: Domains
    coords: np.ndarray
    moves: list[dict]
    judged: list[dict] = field(default_factory=list)

    def moved(self) -> int:
        """Residues that changed domain."""
        return int(sum(abs(m["now_after"] - m["after"]) for m in self.moves))


def refine_boundaries(result: Result, model, domains: Domains, moved: np.ndarray, state: StateParticles,
                      max_shift: int = MAX_SHIFT) -> Boundaries:
    """``domains`` with each in-chain boundary at the place that best matches ``state``'s
    particles, each domain moved by its rigid motion from the model to ``moved`` (M, 3),
    the model fitted to those particles."""
    x0 = np.asarray(model.coords, dtype=np.float64)
    transforms = [kabsch(x0[domains.atom_labels == k], np.asarray(moved, dtype=np.float64)[domains.atom_labels == k])
                  for k in range(domains.n)]
    chains = residue_chains(model)
    labels = domains.residue_labels.copy()

    def score(lab: np.ndarray) -> float:
        x = result.grid.to_engine(moved_coords(model, lab[model.res_index], transforms))
        with torch.no_grad():
            return state.score(torch.from_numpy(x.astype(np.float32)).to(state.device))

    moves = []
    for i in boundaries(labels, chains):
        a, b = labels[i], labels[i + 1]
        lo = i
        while lo > 0 and labels[lo - 1] == a and chains[lo - 1] == chains[i]:
            lo -= 1
        hi = i + 1
        while hi + 1 < len(labels) and labels[hi + 1] == b and chains[hi + 1] == chains[i]:
            hi += 1
        first, last = max(lo + MIN_RUN - 1, i - max_shift), min(hi - MIN_RUN, i + max_shift)
        if first > last:
            continue
        tried = {}

        def trial(j: int) -> float:
            if j not in tried:
                lab = labels.copy()
                lab[lo:j + 1], lab[j + 1:hi + 1] = a, b
                tried[j] = score(lab)
            return tried[j]
        for j in list(range(first, last + 1, STEP)) + [i]:
            trial(j)
        best = max(tried, key=tried.get)
        for j in range(max(first, best - STEP + 1), min(last, best + STEP - 1) + 1):
            trial(j)
        best = max(tried, key=lambda j: (tried[j], j == i))      # ties keep the found boundary
        labels[lo:best + 1], labels[best + 1:hi + 1] = a, b
        moves.append({"after": i, "now_after": int(best), "score_found": round(tried[i], 5),
                      "score": round(tried[best], 5)})
    labels = _absorb_islands(labels, chains, score)
    out = Domains(labels, labels[model.res_index], domains.residual, domains.motion)
    return Boundaries(out, moved_coords(model, out.atom_labels, transforms), moves)


def _absorb_islands(labels: np.ndarray, chains: np.ndarray, score) -> np.ndarray:
    """Runs of fewer than ``MIN_SEGMENT`` residues left between two others of a chain (two
    boundaries moved towards each other) given, shortest first, to the neighbouring run
    whose domain ``score`` (the images) prefers: a few residues left behind inside a
    moving domain hold it back in the fit (on one two-domain run, six residues of a
    moving part left with the core put the fitted part 3.7 A off its path)."""
    labels = labels.copy()
    while True:
        runs = [(b - a, a, b) for a, b in zip(*_runs(labels, chains))
                if b - a < MIN_SEGMENT and a > 0 and b < len(labels) and chains[a - 1] == chains[a] == chains[b]
                and labels[a - 1] != labels[a] != labels[b]]
        if not runs:
            return labels
        _, a, b = min(runs)
        tried = []
        for nb in {int(labels[a - 1]), int(labels[b])}:
            lab = labels.copy()
            lab[a:b] = nb
            tried.append((score(lab), lab))
        labels = max(tried, key=lambda x: x[0])[1]

