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


def one_domain_note(domains) -> str | None:
    """Why the engine found a single rigid domain (None when it found more), from what
    :func:`gaussianem.analysis.domains.segment` records: the motion, and the residual each
    number of domains tried leaves (a second one is kept only if it leaves under
    ``ACCEPT`` of one domain's; parts under ``MIN_DOMAIN`` residues are given back at the end)."""
    if domains.n != 1:
        return None
    from gaussianem.analysis.domains import ACCEPT, MIN_DOMAIN
    r = domains.residual
    if domains.motion <= 1e-6:
        why = "the decoder hardly moves the model at the particles' states"
    elif len(r) < 2:
        why = f"the model has too few residues ({len(domains.residue_labels)}) for two domains of {MIN_DOMAIN} or more"
    elif not r[1] < ACCEPT * r[0]:
        why = (f"two rigid parts explain the decoded motion hardly better than one (mean squared displacement left "
               f"{r[0]:.3g} -> {r[1]:.3g} A^2; a second domain must leave under {ACCEPT:.0%}): the model moves "
               "as one rigid body")
    else:
        why = (f"two rigid parts would explain the decoded motion ({r[0]:.3g} -> {r[1]:.3g} A^2 left unexplained) "
               f"but one of them has fewer than {MIN_DOMAIN} residues: a small chain or loop that moves on its own "
               "(e.g. a part the conformational latent moves to stand in for its absence), given back to the rest; "
               "no larger part moves on its own")
    return f"GaussianEM: only one rigid domain was found: {why}. The whole model was fitted as one rigid body"


def gaussianem_fitdomains(session, particles=PARTICLES, steps=STEPS, sort="images"):
    """Fit the live model's rigid domains to the particles of the state shown; returns the copy."""
    from .session_state import require_result
    res = require_result(session)
    chosen = (f"the {particles} particles of the state shown, chosen by their images" if sort == "images"
              else f"the {particles} particles nearest the state shown in latent space")
    session.logger.info(f"GaussianEM: fitting rigid domains to {chosen} ({steps} steps; a few minutes on two CPU "
                        "threads at box 64, seconds on a GPU)")
    copy, domains, fit = res.fit_domains(particles, steps, sort)
    sizes = ", ".join(str(s) for s in domains.sizes())
    turns = ", ".join(f"{r:.1f}" for r in fit.rotation_deg)
    session.logger.info(f"GaussianEM: model #{copy.id_string}, {domains.n} rigid domain(s) of {sizes} residues "
                        f"(coloured), fitted to {fit.particles} particles ({fit.selection}): score "
                        f"{fit.score_start:.4g} -> {fit.score:.4g}, turned {turns} degrees beyond the displaced model")
    note = one_domain_note(domains)
    if note:
        session.logger.warning(note)
    return copy


gaussianem_fitdomains_desc = CmdDesc(
    keyword=[("particles", PositiveIntArg), ("steps", PositiveIntArg), ("sort", EnumOf(("images", "latent")))],
    synopsis="fit the atomic model's rigid domains to the particles of the state shown")
