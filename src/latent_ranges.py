"""Is a latent where the particles are? Warnings for states beyond the data, errors for
absurd ones.

A latent asked for by value (``show z``), by a value along a principal component (``show
pc K value V``) or by the ends of a trajectory's ``range`` is measured in sd along the
particles' principal components (of all of z, or of the part asked for). Beyond the
particles' 0.5th-99.5th percentiles (:data:`PARTICLE_PERCENTILES`) the map is an
extrapolation no particle supports: shown, with a warning naming the particles' range.
Beyond :data:`ABSURD_SD` sd (or not a finite number) it is refused: the decoder was never
trained anywhere near there, and such a value is a typo (``1e6`` for ``1``), not a state.
"""

from __future__ import annotations

import numpy as np
from chimerax.core.errors import UserError

from gaussianem.analysis.vocabulary import pc_label

PARTICLE_PERCENTILES = (0.5, 99.5)     # beyond these, a warning
ABSURD_SD = 1000.0                     # beyond this many sd from the particles' mean, an error


def _range_text(lo: float, hi: float) -> str:
    return (f"{lo:.2f} to {hi:.2f} sd (their {PARTICLE_PERCENTILES[0]:g}th to {PARTICLE_PERCENTILES[1]:g}th "
            "percentiles)")


def check_pc_value(gres, pc: int, value: float, part: str = "all", what: str | None = None) -> str | None:
    """None when ``value`` sd along PC ``pc`` of ``part`` lies within the particles' range,
    else a warning naming that range; a UserError when it is absurd (:data:`ABSURD_SD`)."""
    name = pc_label(pc, part)
    what = what or f"{value:g} sd along {name}"
    if not np.isfinite(value):
        raise UserError(f"GaussianEM: {what} is not a number")
    if abs(value) > ABSURD_SD:
        lo, hi = gres.pc_range(pc, part, q=PARTICLE_PERCENTILES)
        raise UserError(f"GaussianEM: {what} is refused: values beyond {ABSURD_SD:g} sd are no state of this "
                        f"model (the particles lie from {_range_text(lo, hi)})")
    lo, hi = gres.pc_range(pc, part, q=PARTICLE_PERCENTILES)
    if lo <= value <= hi:
        return None
    return (f"GaussianEM: {what} is outside the particles' range there, {_range_text(lo, hi)}: the map is an "
            "extrapolation no particle supports")


def check_range(gres, pc: int, range_sd, part: str = "all") -> str | None:
    """:func:`check_pc_value` for both ends of a trajectory's ``range`` (one warning)."""
    name = pc_label(pc, part)
    outside = [v for v in range_sd if check_pc_value(gres, pc, float(v), part,
                                                    what=f"range end {v:g} sd along {name}") is not None]
    if not outside:
        return None
    lo, hi = gres.pc_range(pc, part, q=PARTICLE_PERCENTILES)
    ends = " and ".join(f"{v:g}" for v in outside)
    return (f"GaussianEM: the trajectory's range {range_sd[0]:g} to {range_sd[1]:g} sd along {name} goes past the "
            f"particles' range there ({ends} outside {_range_text(lo, hi)}): the maps beyond it are "
            "extrapolations no particle supports")


def check_latent(gres, z) -> str | None:
    """For a latent given by its values: None when it lies within the particles' range
    along every principal component of z, else a warning naming the components it leaves;
    a UserError when a value is not finite or it lies beyond :data:`ABSURD_SD` sd (for a
    run without particle latents yet: beyond that many prior sd, i.e. latent units)."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(z)):
        raise UserError(f"GaussianEM: the latent ({', '.join(f'{v:g}' for v in z)}) has values that are not numbers")
    if not gres.finished:
        if np.abs(z).max(initial=0.0) > ABSURD_SD:
            raise UserError(f"GaussianEM: latent values beyond {ABSURD_SD:g} are refused (the model's latents lie "
                            "within a few units of 0)")
        return None
    p = gres.result.pca("all")
    sd = np.where(p.sd > 0, p.sd, 1.0)
    scores = (z - p.mean) @ p.components.T / sd                  # sd along each principal component
    worst = int(np.argmax(np.abs(scores)))
    if abs(scores[worst]) > ABSURD_SD:
        lo, hi = gres.pc_range(worst + 1, "all", q=PARTICLE_PERCENTILES)
        raise UserError(f"GaussianEM: this latent is refused: it lies {scores[worst]:.3g} sd along PC{worst + 1} "
                        f"from the particles' mean, beyond {ABSURD_SD:g} sd (the particles lie from "
                        f"{_range_text(lo, hi)})")
    outside = []
    for k, s in enumerate(scores, start=1):
        lo, hi = gres.pc_range(k, "all", q=PARTICLE_PERCENTILES)
        if not lo <= s <= hi:
            outside.append(f"{s:.3g} sd along PC{k} (particles: {lo:.2f} to {hi:.2f})")
    if not outside:
        return None
    return (f"GaussianEM: this latent is outside the particles' range ({'; '.join(outside)}; their "
            f"{PARTICLE_PERCENTILES[0]:g}th to {PARTICLE_PERCENTILES[1]:g}th percentiles): the map is an "
            "extrapolation no particle supports")
