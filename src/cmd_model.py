"""The ``gaussianem fitdomains`` command (registered with the others from cmd.py's table):

    gaussianem fitdomains [particles N] [steps N] [sort images|latent]

A copy of the atomic model at the state shown, its rigid domains (found from the decoded
displacements) fitted as rigid bodies to the ``particles`` particles of that state (the
engine's ``gaussianem generate --fit-domains``, :meth:`.live_model.LiveModel.fit_domains`),
coloured by domain. ``sort images`` (default) chooses the particles by their place on the
domains' path, as their images match it; ``sort latent`` takes those nearest the state's
latent. The live model keeps following the slider; the copy stays.
"""

from __future__ import annotations

from chimerax.core.commands import CmdDesc, EnumOf, PositiveIntArg

PARTICLES = 200
STEPS = 80


def gaussianem_fitdomains(session, particles=PARTICLES, steps=STEPS, sort="images"):
    """Fit the live model's rigid domains to the particles of the state shown; returns the copy."""
    from .session_state import require_result
    res = require_result(session)
    chosen = "chosen by their images" if sort == "images" else "nearest"
    session.logger.info(f"GaussianEM: fitting rigid domains to the {particles} particles {chosen} the state shown "
                        f"({steps} steps; a few minutes on two CPU threads at box 64, seconds on a GPU)")
    copy, domains, fit = res.fit_domains(particles, steps, sort)
    sizes = ", ".join(str(s) for s in domains.sizes())
    turns = ", ".join(f"{r:.1f}" for r in fit.rotation_deg)
    session.logger.info(f"GaussianEM: model #{copy.id_string}, {domains.n} rigid domain(s) of {sizes} residues "
                        f"(coloured), fitted to {fit.particles} particles ({fit.selection}): score {fit.score_start:.4g} -> "
                        f"{fit.score:.4g}, turned {turns} degrees beyond the displaced model")
    return copy


gaussianem_fitdomains_desc = CmdDesc(
    keyword=[("particles", PositiveIntArg), ("steps", PositiveIntArg), ("sort", EnumOf(("images", "latent")))],
    synopsis="fit the atomic model's rigid domains to the particles of the state shown")
