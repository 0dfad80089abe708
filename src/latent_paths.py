"""Paths through latent space, for trajectories and movies: along a principal component,
or on the straight line between two particles or two k-means centres.

:func:`latent_path` turns the options of ``gaussianem trajectory`` and ``gaussianem
movie`` into a :class:`LatentPath`: its latents (``Result.trajectory``, the engine's,
as ``gaussianem analyze --between`` uses), a name for each step's map and a title for the
series. The latents of particles and k-means centres are the engine's (the result's
``particle_z``; k-means centres snapped to particles, shared with ``gaussianem analyze``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from chimerax.core.errors import UserError

from gaussianem.analysis.vocabulary import pc_label

from .latent_ranges import check_range


@dataclass
class LatentPath:
    z: np.ndarray            # (steps, zdim) float32
    labels: list[str]        # one map name per step
    name: str                # the path's title: "conf PC1", "particle 3 to particle 9"
    description: str         # for the log, after the title: "10 steps from -1.2 to 1.5 sd"
    warning: str | None = None   # a range that goes past the particles' (latent_ranges.check_range)


def pc_path(gres, pc: int = 1, steps: int = 10, range_sd=None, part: str = "all") -> LatentPath:
    """Along principal component ``pc`` of ``part``, from ``range_sd[0]`` to ``range_sd[1]``
    sd (default: the particles' 5th to 95th percentiles along it)."""
    given = range_sd is not None
    range_sd = tuple(range_sd) if given else gres.pc_range(pc, part)
    warning = check_range(gres, pc, range_sd, part) if given else None   # refuses absurd ends
    zs = gres.result.trajectory(pc=int(pc), steps=int(steps), range_sd=range_sd, part=part)
    values = np.linspace(range_sd[0], range_sd[1], int(steps))
    name = pc_label(pc, part)
    where = "" if given else " (the particles' 5th to 95th percentiles)"
    return LatentPath(np.asarray(zs, np.float32), [f"{name} {v:+.2f} sd" for v in values], name,
                      f"{steps} steps from {range_sd[0]:.3g} to {range_sd[1]:.3g} sd{where}", warning)


def _end(gres, particle, cluster, k, which: str):
    """(latent, name) of one end of a path: a particle or a k-means centre."""
    if particle is not None and cluster is not None:
        raise UserError(f"give {which}Particle or {which}Cluster, not both")
    if particle is not None:
        return gres.latent(particle=particle), f"particle {particle}"
    km = gres.kmeans(k)
    return gres.latent(cluster=cluster, k=k), f"cluster {cluster} (k={km.k})"


def latent_path(gres, *, pc=None, steps: int = 10, range_sd=None, part: str = "all", from_particle=None,
                to_particle=None, from_cluster=None, to_cluster=None, k=None) -> LatentPath:
    """The path the options name: between two ends (``from_particle`` or ``from_cluster``,
    and ``to_particle`` or ``to_cluster``; k-means with ``k`` clusters), else along
    principal component ``pc`` (default 1). Checks that the options go together."""
    gres.require_latents()
    if steps < 2:
        raise UserError(f"a trajectory needs at least 2 steps, got {steps}")
    starts = from_particle is not None or from_cluster is not None
    ends = to_particle is not None or to_cluster is not None
    if not (starts or ends):
        if k is not None:
            raise UserError("k (the number of k-means clusters) goes with fromCluster / toCluster")
        return pc_path(gres, 1 if pc is None else pc, steps, range_sd, part)
    if starts != ends:
        raise UserError("a path between two states needs both ends: fromParticle or fromCluster, and "
                        "toParticle or toCluster (e.g. 'fromParticle 12 toParticle 873')")
    if pc is not None or range_sd is not None or part != "all":
        raise UserError("pc, range and latentPart choose a path along a principal component: give them, "
                        "or the two ends (fromParticle/fromCluster, toParticle/toCluster), not both")
    if k is not None and from_cluster is None and to_cluster is None:
        raise UserError("k (the number of k-means clusters) goes with fromCluster / toCluster")
    a, a_name = _end(gres, from_particle, from_cluster, k, "from")
    b, b_name = _end(gres, to_particle, to_cluster, k, "to")
    zs = gres.result.trajectory(steps=int(steps), start=a, end=b)
    name = f"{a_name} to {b_name}"
    t = np.linspace(0.0, 1.0, int(steps))
    return LatentPath(np.asarray(zs, np.float32), [f"{name} {v:.2f}" for v in t], name,
                      f"{steps} steps on the straight line between their latents")
