"""Cutting the neighbour graph where rigid domains meet (``--cut-graph N``).

The distance term holds every edge of the Gaussians' neighbour graph at its length. When
a domain turns against the rest, the edges across the interface must stretch, and the
squared term resists exactly them: on a 30-degree hinge it let about a fifth of the
motion arrive (docs/validation.md, "The whole motion"); with the edges across the true
boundary removed, the same training carried 0.57 of it, and 0.73 where two domains move
at once. A weaker term everywhere carries more too, but lets the decoder tear the
structure to fit junk particles.

So ``N`` times in a stage, at evenly spaced epoch ends (:func:`gaussianem.train.rebase.due`),
training asks the decoder where its rigid domains are: ``PARTICLES`` particles are
encoded, their latents grouped into ``STATES`` (k-means), each group's mean latent decoded,
and the Gaussians split into groups that move rigidly across those states
(:func:`gaussianem.model.rigid_groups.segment_points`: neighbours' errors counted, each
group at least 5% of the Gaussians, one more group only where it leaves under 0.7 of the
residual). The distance and alignment terms then hold only the edges within a domain
(:meth:`gaussianem.train.step.NeighbourGraph.cut`). A later pass adds its boundaries to
those found before (the decoder's domains appear one by one: on a hinge with an absent
subunit, first the subunit, the hinge's own domain from about three quarters of the
training). Where the decoded motion is still too small to tell domains apart (under
``MIN_MOTION`` RMS) or no split is accepted, the graph stays as it was. The labels travel
in the checkpoint, so a resumed run keeps its cut. Three passes by default since session
21, with a consensus round and no spacing term (docs/validation.md, "The whole motion,
session 21"); alone they carried twice as much of a hinge at SNR 0.1 but cost motion at
SNR 0.03 ("The whole motion, session 13").
"""

from __future__ import annotations

import numpy as np
import torch

from gaussianem.model.encoding import encode_particles
from gaussianem.model.rigid_groups import relabel, segment_points
from gaussianem.train.rebase import due

PARTICLES = 512      # particles encoded to find the states
STATES = 8           # latent groups whose decoded motions are compared
MIN_MOTION = 0.2     # Angstrom: RMS decoded motion about the states' mean below which nothing is cut (a cut at
                     # 0.16 A, early in training, cost a normal mode at SNR 0.03 its motion read-out 0.89 -> 0.81)
DOMAIN_MOTION = 0.5  # Angstrom: RMS decoded motion from which --domain-motion takes a pass's domains
CHUNK = 128


@torch.no_grad()
def decoded_states(model, images, phys, image_std: float, seed: int) -> np.ndarray:
    """(STATES, N, 3) displacements of the base Gaussians at the mean latents of
    ``STATES`` k-means groups of ``PARTICLES`` particles' latents, less their mean."""
    from scipy.cluster.vq import kmeans2
    dev = model.centres.device
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(images), size=min(PARTICLES, len(images)), replace=False))
    was_training = model.training
    model.eval()
    zs = []
    for a in range(0, len(rows), CHUNK):
        r = rows[a:a + CHUNK]
        raw = images.__getitems__(r)["image"].to(dev)
        zs.append(encode_particles(model, raw, torch.from_numpy(r).to(dev), phys, image_std).float())
    z = torch.cat(zs).cpu().numpy().astype(np.float64)
    k = min(STATES, len(z))
    centres, lab = kmeans2(z, k, minit="++", seed=seed)
    used = np.unique(lab)
    d = model.decode(torch.from_numpy(centres[used]).float().to(dev))["displacement"].float().cpu().numpy()
    model.train(was_training)
    return d - d.mean(0, keepdims=True)


def find_domains(centres: np.ndarray, states: np.ndarray, edges: np.ndarray, seed: int = 0) -> dict:
    """The rigid domains of the Gaussians ``centres`` (N, 3) moved by ``states`` (S, N, 3):
    ``labels`` (N,) or None when nothing is cut, and what was seen."""
    motion = float(np.sqrt((states ** 2).sum(-1).mean()))
    if motion < MIN_MOTION:
        return {"labels": None, "motion_rms": motion, "domains": 1, "reason": "the decoded motion is too small to tell domains apart"}
    labels, residual = segment_points(centres, states, edges, seed=seed)
    n = int(labels.max()) + 1
    return {"labels": labels if n > 1 else None, "motion_rms": motion, "domains": n,
            "sizes": np.bincount(labels).tolist(), "residual_A2": [round(r, 4) for r in residual]}


def cut(trainer, labels) -> None:
    """``trainer.graph`` cut at ``labels`` (None: whole), remembered for checkpoints."""
    trainer.graph_labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    trainer.graph = trainer.graph.cut(trainer.graph_labels)


def move_domains(trainer, found: dict) -> bool:
    """With ``--domain-motion``, the domains of this pass (not the union of every boundary
    found so far: an early pass on a small motion splits a moving domain into pieces) move
    rigidly from here on, when the decoded motion is at least ``DOMAIN_MOTION`` RMS (the
    model's labels travel in its weights)."""
    m = trainer.model
    if found["labels"] is None or found["motion_rms"] < DOMAIN_MOTION:
        return False
    m.domain_field.assign(found["labels"], m.centres.detach(), m.mass_weights().detach())
    return True


def after_epoch(trainer, done: int) -> None:
    """The pass due after the ``done``-th epoch (1-based, of the run) of a
    :class:`~gaussianem.train.loop.Trainer`, if any: domains found, graph cut, logged.
    Every process computes the same cut (same particles, same seed)."""
    cfg = trainer.cfg
    if not due(cfg.cut_graph, cfg.epochs - cfg.first_epoch, done - cfg.first_epoch):
        return
    m = trainer.model
    states = decoded_states(m, trainer.images, trainer.phys, trainer.image_std, cfg.seed + done)
    g = trainer.graph
    found = find_domains(m.centres.detach().cpu().double().numpy(), states, g.edges.cpu().numpy(), cfg.seed)
    labels = found["labels"]
    report = {k: v for k, v in found.items() if k != "labels"}
    if labels is not None:                   # with every boundary found so far
        if trainer.graph_labels is not None:
            labels = relabel(trainer.graph_labels * (int(labels.max()) + 1) + labels)
        cut(trainer, labels)
    if cfg.domain_motion:
        report["rigid_domains"] = move_domains(trainer, found)
    held, total = len(trainer.graph.strained), len(g.edges)
    if trainer.dd.main:
        trainer.run_dir.append_log({"kind": "graph_cut", "epoch": done, "edges_held": held, "edges": total, **report})
    if found["labels"] is None:
        now = "whole" if trainer.graph_labels is None else f"as it was ({total - held} of {total} edges not held)"
        trainer.progress.message(f"no new domain boundary after epoch {done}: "
                                 f"{found.get('reason', 'no rigid domains told apart')} "
                                 f"({found['motion_rms']:.2f} A RMS decoded); the neighbour graph stays {now}")
    else:
        trainer.progress.message(f"neighbour graph cut after epoch {done} at the boundaries of {found['domains']} "
                                 f"rigid domains ({'/'.join(map(str, found['sizes']))} Gaussians): with those "
                                 f"found before, {total - held} of {total} edges no longer held")
