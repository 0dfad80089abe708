"""Rigid domains of an atomic model, found from how the decoder moves it.

A hinge or a domain closure is several parts of a protein moving as rigid bodies. The
decoded displacement field shows where the parts are, but it carries only part of the
motion's amplitude (docs/validation.md, "Displaced models"); fitting the parts as rigid
bodies to the particles (:mod:`gaussianem.analysis.domain_fit`) brings the rest. This
module finds the parts, in the spirit of DynDom (Hayward & Berendsen 1998):

1. every residue's displacement (mean of its atoms') at ``S`` states, e.g. the k-means
   centres of the particles' latents, relative to the state the model stands for;
2. for ``K`` domains, residues are first grouped several ways (k-means on their
   displacements over all states with two seeds, and each of the ``K - 1`` domains found
   so far split in two; :func:`gaussianem.model.rigid_groups.candidates`: with one
   k-means start, a small moving part beside a large one was merged with the core), then
   each group gets, per state, the rigid motion (Kabsch) that best explains its residues'
   displacements, and each residue moves to the group whose rigid
   motions explain it best, until nothing changes (a residue near a hinge axis hardly moves,
   so k-means on displacements alone puts it on the wrong side; its fit to the rotation
   does not);
3. the same again with every run of fewer than ``min_segment`` consecutive residues of a
   chain given to the neighbouring run that explains it best (domains are made of
   sequence segments, as DynDom smooths them), and the start that leaves the least is kept;
4. ``K`` grows from 1 while one more domain leaves under ``accept`` (0.6) of the
   residual of ``K``; a domain of fewer than ``min_domain`` residues may be split off on the
   way (a small loose part, such as the demo protein's 18-residue chain moved in place of
   its absence, used to end the search there) and is given back at the end to the domains
   that explain its residues best.

On the robustness matrix's hinge (1a28, 30 degrees, SNR 0.1) this puts 99.6% of the
residues on the right side (k-means on one state's displacements: 92.8%); on its
normal-mode cell it finds the two chains, which the mode moves against each other; where
two domains move at once (two_hinges) the core, chain A's moving third (667 of its 675
moving atoms) and chain B.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gaussianem.errors import InputError
from gaussianem.io.models import AtomicModel
from gaussianem.model.rigid_groups import best_split, relabel as _relabel, residuals as _residuals

MAX_DOMAINS = 4
MIN_SEGMENT = 10            # residues: shorter runs join a neighbouring domain
MIN_DOMAIN = 20             # residues: DynDom's smallest domain
ACCEPT = 0.6                # one more domain must leave under this fraction of the residual


@dataclass
class Domains:
    """Rigid domains of a model: ``residue_labels`` (R,) and ``atom_labels`` (M,) in
    0..n-1 (file order of the model's residues and atoms); ``residual[k - 1]``: the mean
    squared displacement (A^2) that ``k`` domains' rigid motions leave unexplained, for
    each ``k`` tried (the last may be one more than ``n``, refused); ``motion``: the mean
    squared displacement itself."""

    residue_labels: np.ndarray
    atom_labels: np.ndarray
    residual: list[float] = field(default_factory=list)
    motion: float = 0.0

    @property
    def n(self) -> int:
        return int(self.residue_labels.max()) + 1 if len(self.residue_labels) else 0

    def sizes(self) -> list[int]:
        return np.bincount(self.residue_labels, minlength=self.n).tolist()

    def summary(self) -> dict:
        return {"domains": self.n, "residues": self.sizes(),
                "residual_A2": [round(float(r), 4) for r in self.residual], "motion_A2": round(float(self.motion), 4)}


def residue_displacements(model: AtomicModel, displacements: np.ndarray) -> np.ndarray:
    """(S, R, 3) mean displacement of each residue's atoms, from atoms' (S, M, 3)."""
    d = np.asarray(displacements, dtype=np.float64)
    d = d[None] if d.ndim == 2 else d
    if d.shape[1:] != (len(model), 3):
        raise InputError(f"displacements of shape {d.shape[1:]} for a model of {len(model)} atoms")
    r = model.n_residues()
    cnt = np.maximum(np.bincount(model.res_index, minlength=r), 1)
    return np.stack([np.stack([np.bincount(model.res_index, s[:, a], minlength=r) for a in range(3)], 1)
                     for s in d]) / cnt[None, :, None]


def _runs(labels: np.ndarray, chains: np.ndarray | None = None):
    """(starts, ends) of the runs of equal labels (within ``chains``, when given)."""
    cut = labels[1:] != labels[:-1]
    if chains is not None:
        cut = cut | (chains[1:] != chains[:-1])
    starts = np.r_[0, np.flatnonzero(cut) + 1]
    return starts, np.r_[starts[1:], len(labels)]


def _merge_short_runs(labels: np.ndarray, err: np.ndarray, chains: np.ndarray, min_segment: int) -> np.ndarray:
    """Runs shorter than ``min_segment`` residues within a chain, shortest first, given to
    the neighbouring run whose domain explains them best."""
    labels = labels.copy()
    for chain in np.unique(chains):
        idx = np.flatnonzero(chains == chain)
        while True:
            lab = labels[idx]
            starts, ends = _runs(lab)
            if len(starts) < 2:
                break
            i = int(np.argmin(ends - starts))
            if ends[i] - starts[i] >= min_segment:
                break
            a, b = starts[i], ends[i]
            nb = ([lab[a - 1]] if a > 0 else []) + ([lab[b]] if b < len(lab) else [])
            labels[idx[a:b]] = nb[int(np.argmin([err[idx[a:b], j].sum() for j in nb]))]
    return labels


def _assign(centres, disp, labels, k, chains=None, min_segment=0, iterations=30) -> np.ndarray:
    """Residues moved to the domain whose rigid motions explain them best until stable."""
    for _ in range(iterations):
        err = _residuals(centres, disp, labels, k)
        new = np.argmin(err, 1)
        if min_segment:
            new = _merge_short_runs(new, err, chains, min_segment)
        if (new == labels).all():
            break
        labels = new
    return labels


def _absorb_small(centres, disp, labels: np.ndarray, min_domain: int) -> np.ndarray:
    """Domains of fewer than ``min_domain`` residues given, residue by residue, to the
    other domain whose rigid motions explain each best."""
    sizes = np.bincount(labels)
    small = sizes < min_domain
    if not small.any() or small.all():
        return labels
    keep = np.flatnonzero(~small)
    lab = _relabel(np.where(small[labels], keep[0], labels))
    err = _residuals(centres, disp, lab, int(lab.max()) + 1)
    moved = small[labels]
    lab[moved] = np.argmin(err[moved], 1)
    return _relabel(lab)


def segment_ladder(model: AtomicModel, displacements: np.ndarray, max_domains: int = MAX_DOMAINS,
                   min_segment: int = MIN_SEGMENT, min_domain: int = MIN_DOMAIN, seed: int = 0) -> list[Domains]:
    """The model's rigid domains for each count ``k`` from 1 to ``max_domains`` (fewer where
    no further split is possible), each the best split of the last (see the module
    docstring), whatever its residual; entry ``k - 1`` may have fewer than ``k`` domains
    where a part under ``min_domain`` residues went back to the others. :func:`segment`
    takes the counts the decoded motion accepts;
    :func:`gaussianem.analysis.domain_fit.domain_count` lets the images judge the finer
    ones (a moving part whose decoded motion is too small to tell it apart)."""
    if max_domains < 1:
        raise InputError(f"max_domains must be at least 1, got {max_domains}")
    disp = residue_displacements(model, displacements)
    centres = model.residue_centres()
    n = len(centres)
    chains = np.array([""] * n, dtype=object)
    chains[model.res_index] = model.chain_ids
    motion = float((disp ** 2).sum(-1).mean())
    best = np.zeros(n, dtype=int)
    residual = [float(_residuals(centres, disp, best, 1).mean() / len(disp))]
    feat = disp.transpose(1, 0, 2).reshape(n, -1)
    ladder = [Domains(best, best[model.res_index], list(residual), motion)]
    for k in range(2, int(max_domains) + 1):
        if n < k * 3 or residual[-1] <= 1e-4 * motion:
            break                              # (the last: nothing left for another domain to explain)
        def refine(start, k=k):                 # rigid fits, then sequence runs of min_segment
            lab = _assign(centres, disp, _relabel(start), k)
            return _relabel(_assign(centres, disp, lab, k, chains.astype(str), min_segment))
        found, now = best_split(centres, disp, feat, best, k, seed, refine)      # the best of several starts
        if found is None:
            break
        residual.append(now)
        best = found
        # a part under min_domain residues may be split off while the search goes on (a loose
        # part explains its own motion, and the parts that matter are then split next); in the
        # end it goes back to the domains that explain its residues best
        lab = _absorb_small(centres, disp, best, min_domain)
        ladder.append(Domains(lab, lab[model.res_index], list(residual), motion))
    return ladder


def segment(model: AtomicModel, displacements: np.ndarray, max_domains: int = MAX_DOMAINS,
            min_segment: int = MIN_SEGMENT, min_domain: int = MIN_DOMAIN, accept: float = ACCEPT,
            seed: int = 0) -> Domains:
    """Rigid domains of ``model`` from its atoms' displacements (S, M, 3) at S states (see
    the module docstring): the largest count of :func:`segment_ladder` each of whose
    splits left under ``accept`` of the residual before it."""
    ladder = segment_ladder(model, displacements, max_domains, min_segment, min_domain, seed)
    res = ladder[-1].residual
    k = 1
    while k < len(res) and res[k] < accept * res[k - 1]:
        k += 1
    chosen = ladder[k - 1]
    return Domains(chosen.residue_labels, chosen.atom_labels, res[:k + 1], chosen.motion)
