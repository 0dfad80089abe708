"""The commands that open a result and move through its latent space:

    gaussianem open OUTDIR [model FILE|#MODEL] [device cpu|cuda] [map gaussians|deformed]
    gaussianem show [z V1,V2,...] [particle I] [pc K value V [latentPart all|conf|comp]] [cluster C [k K]]
        [map gaussians|deformed]
    gaussianem trajectory [pc K] [steps N] [range A,B] [latentPart all|conf|comp] [map gaussians|deformed]
    gaussianem trajectory (fromParticle I | fromCluster A) (toParticle J | toCluster B) [k K] [steps N]
    gaussianem markers [colorBy displacement|amplitude] [z V1,...|particle I]
    gaussianem fitdomains [particles N] [steps N] [sort images|latent]

``fitdomains``: a copy of the atomic model at the state shown, its rigid domains (found
from the decoded displacements) fitted as rigid bodies to the ``particles`` particles of
that state (the engine's ``gaussianem generate --fit-domains``,
:meth:`..live_model.LiveModel.fit_domains`), coloured by domain. ``sort images`` (default)
chooses the particles by their place on the domains' path, as their images match it;
``sort latent`` takes those nearest the state's latent. The live model keeps following the
slider; the copy stays.
"""

from __future__ import annotations

import numpy as np
from chimerax.core.commands import (CmdDesc, EnumOf, FloatArg, FloatsArg, IntArg, NonNegativeIntArg,
                                    OpenFolderNameArg, PositiveIntArg)
from chimerax.core.errors import UserError

from gaussianem.analysis.vocabulary import pc_label

from ..session_state import require_result
from .args import PATH_KEYWORDS, LatentPartArg, MapKindArg, StructureOrFileArg
from .args import latent_part as latent_part_of


def gaussianem_open(session, outdir, model=None, device="cpu", map=None):  # noqa: A002
    """Open a training result: its map (deformed consensus or rendered from the
    Gaussians, ``map``), latents and atomic model; start the Latent Explorer in the GUI."""
    from ..opening import open_result
    res = open_result(session, outdir, model=model, device=device, map_kind=map)
    if session.ui.is_gui and res.finished:      # an unfinished run has no latents to explore
        from ..explorer.tool import show_explorer
        try:
            show_explorer(session, res)
        except UserError as e:          # the maps and commands still work
            session.logger.warning(f"GaussianEM Latent Explorer not shown: {e}")
    return res


gaussianem_open_desc = CmdDesc(
    required=[("outdir", OpenFolderNameArg)],
    keyword=[("model", StructureOrFileArg), ("device", EnumOf(["cpu", "cuda"])), ("map", MapKindArg)],
    synopsis="open a trained GaussianEM model")


def _describe(z) -> str:
    return ", ".join(f"{v:.3g}" for v in np.asarray(z).reshape(-1))


def gaussianem_show(session, z=None, particle=None, pc=None, value=None, cluster=None, k=None, part=None,
                    latent_part=None, map=None):  # noqa: A002
    """Move the current result's map and model to a latent (the map's kind: ``map``, this
    call only); returns the latent."""
    res = require_result(session)
    part = latent_part_of(part, latent_part)
    if (pc is None) != (value is None):
        raise UserError("pc and value go together: e.g. 'gaussianem show pc 1 value 2' "
                        "(2 standard deviations along principal component 1)")
    if k is not None and cluster is None:
        raise UserError("k (the number of k-means clusters) goes with cluster")
    latent = res.show(z=z, particle=particle, pc=None if pc is None else (pc, value),
                      cluster=cluster, k=k, part=part, kind=map)
    if z is not None:
        what = "latent"
    elif particle is not None:
        what = f"particle {particle}"
    elif pc is not None:
        what = f"{pc_label(pc, part)} at {value:g} sd"
    elif cluster is not None:
        what = f"k-means cluster {cluster} (k={k or res.k}) centre"
    else:
        what = f"the medoid particle {res.medoid}"
    kind = "" if map is None or map == res.map_kind else f" ({map} map)"
    session.logger.info(f"GaussianEM: showing {what}{kind}, z = ({_describe(latent)})")
    if pc is not None:
        warning = res.pc_value_warning(pc, value, part)
    elif z is not None:
        from ..latent_ranges import check_latent
        warning = check_latent(res, latent)
    else:
        warning = None
    if warning:
        session.logger.warning(warning)
    return latent


gaussianem_show_desc = CmdDesc(
    keyword=[("z", FloatsArg), ("particle", NonNegativeIntArg), ("pc", PositiveIntArg), ("value", FloatArg),
             ("cluster", IntArg), ("k", PositiveIntArg), ("latent_part", LatentPartArg),
             ("part", LatentPartArg), ("map", MapKindArg)],
    synopsis="show the map of a point in latent space")


def gaussianem_trajectory(session, pc=None, steps=10, range=None, part=None,  # noqa: A002
                          latent_part=None, map=None, from_particle=None, to_particle=None,  # noqa: A002
                          from_cluster=None, to_cluster=None, k=None):
    """Maps (a map series) and an atomic model (one coordinate set per step) along a
    principal component, from range[0] to range[1] standard deviations (default: the
    particles' 5th to 95th percentiles along it), or on the line between two particles or
    k-means centres (``fromParticle``/``fromCluster`` to ``toParticle``/``toCluster``)."""
    from ..latent_paths import latent_path
    res = require_result(session)
    path = latent_path(res, pc=pc, steps=steps, range_sd=range, part=latent_part_of(part, latent_part),
                       from_particle=from_particle, to_particle=to_particle, from_cluster=from_cluster,
                       to_cluster=to_cluster, k=k)
    series, copy = res.trajectory(path=path, kind=map)
    msg = (f"GaussianEM {path.name} trajectory, {path.description}, {res.kind_for(map)} maps "
           f"#{series.id_string} (vseries play #{series.id_string})")
    if copy is not None:
        msg += f", model #{copy.id_string} (coordset #{copy.id_string})"
    session.logger.info(msg)
    if path.warning:
        session.logger.warning(path.warning)
    return series, copy


gaussianem_trajectory_desc = CmdDesc(
    keyword=[*PATH_KEYWORDS, ("part", LatentPartArg)],
    synopsis="play maps along a path through latent space")


def gaussianem_markers(session, color_by="displacement", z=None, particle=None):
    """The Gaussians of the current state (or of a latent) as markers."""
    res = require_result(session)
    ms = res.markers(color_by=color_by, z=z, particle=particle)
    lo, hi = res.marker_range
    a, b = res.marker_scale
    if color_by == "displacement":
        how = (f"coloured by displacement, {lo:.3g} to {hi:.3g} A here, on a fixed scale for all states "
               f"from {a:.3g} to {b:.3g} A (dark blue to yellow; the largest displacement along the "
               "principal components' trajectories)")
    else:
        how = (f"coloured by amplitude change, log2 of the amplitude factor {lo:.3g} to {hi:.3g} here, "
               f"shown clipped to {a:g} to {b:+g} (half to double: blue-white-red)")
    session.logger.info(f"GaussianEM: {ms.num_atoms} Gaussians as markers #{ms.id_string}, {how}; "
                        "colour key shown (closed with the markers)")
    return ms


gaussianem_markers_desc = CmdDesc(
    keyword=[("color_by", EnumOf(["displacement", "amplitude"])), ("z", FloatsArg),
             ("particle", NonNegativeIntArg)],
    synopsis="show the Gaussians of a model as markers")


# ---------------------------------------------------------------------------- fitdomains

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
    res = require_result(session)
    chosen = (f"the {particles} particles of the state shown, chosen by their images" if sort == "images"
              else f"the {particles} particles nearest the state shown in latent space")
    session.logger.info(f"GaussianEM: fitting rigid domains to {chosen} ({steps} steps; a few minutes on two CPU "
                        "threads at box 64, seconds on a GPU)")
    copy, domains, fit = res.fit_domains(particles, steps, sort)
    sizes = ", ".join(str(s) for s in domains.sizes())
    turns = ", ".join(f"{r:.1f}" for r in fit.rotation_deg)
    if fit.kept == "displaced":
        from gaussianem.analysis.domain_fit import HELD_OUT_MIN, HELD_OUT_T
        why = (f"under {2 * HELD_OUT_MIN} particles to check it" if fit.held_out is None else
               f"held-out gain t = {fit.held_out:.1f}, {HELD_OUT_T:g} needed")
        what = (fit.note if fit.note else f"the fit to {fit.particles} particles ({fit.selection}) did not match "
                f"the half it was not fitted to better than the displaced model ({why})")
        session.logger.warning(f"GaussianEM: model #{copy.id_string}, {domains.n} rigid domain(s) of {sizes} residues "
                               f"(coloured): {what}, so the copy is the displaced model")
    else:
        session.logger.info(f"GaussianEM: model #{copy.id_string}, {domains.n} rigid domain(s) of {sizes} residues "
                            f"(coloured), fitted to {fit.particles} particles ({fit.selection}): score "
                            f"{fit.score_start:.4g} -> {fit.score:.4g}, turned {turns} degrees beyond the displaced "
                            f"model (confirmed on held-out particles, t = {fit.held_out:.1f})")
    note = one_domain_note(domains)
    if note:
        session.logger.warning(note)
    return copy


gaussianem_fitdomains_desc = CmdDesc(
    keyword=[("particles", PositiveIntArg), ("steps", PositiveIntArg), ("sort", EnumOf(("images", "latent")))],
    synopsis="fit the atomic model's rigid domains to the particles of the state shown")
