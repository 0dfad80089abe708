"""Rigid domains of a displaced model fitted to the particles of its state.

The decoder finds which particles are in which state and which way the parts move, but a
displacement field learnt through a few hundred Gaussians carries only part of a large
domain motion (on the robustness matrix's 30-degree hinge, about half: docs/validation.md).
The particles themselves hold the rest. For a latent ``z``:

1. the model displaced to ``z`` (``Result.displace_model``) gives each rigid domain
   (:mod:`gaussianem.analysis.domains`) a starting rigid motion, the least-squares
   (Kabsch) one from the model to its displaced atoms;
2. the ``particles`` particles nearest ``z`` in latent space are read and normalised as
   training reads them;
3. each domain's rotation (a rotation vector about its displaced centre) and translation
   are refined by Adam to maximise the mean over those particles of
   ``<projection, image> / |projection|`` (a matched filter: no scale to fit), the atoms
   rendered as Gaussians of ``width`` A weighted by atomic number and by the decoded
   amplitude factor at ``z`` (an absent part does not pull), with each particle's pose,
   CTF and intensity scale;
4. bonds across domain boundaries get their lengths back
   (:meth:`~gaussianem.model.displace.AtomInterpolator.keep_bonds`).

On the hinge cell (SNR 0.1, 200 particles per state) the moving domain lands at 0.53 A
mean heavy-atom RMSD with the true domains, against 4.7 A for the displaced model
(``benchmarks/domain_fit.py``; docs/benchmarks.md has the table with found domains).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from gaussianem.analysis.clusters import kmeans
from gaussianem.analysis.domains import Domains, segment, segment_ladder
from gaussianem.model.rigid_groups import kabsch
from gaussianem.analysis.domain_boundaries import Boundaries, refine_boundaries
from gaussianem.analysis.image_path import ImagePath, image_path
from gaussianem.analysis.result import Result
from gaussianem.analysis.state_particles import (PARTICLES, WIDTH, StateParticles, nearest_particles,
                                                  usable_particles)
from gaussianem.errors import InputError

STEPS = 80
LEARNING_RATE = 0.01        # radians per step for the rotation vector
TRANSLATION_UNIT = 10.0     # A per unit of the translation parameter (so one rate serves both)


@dataclass
class DomainFit:
    """One state's fit: ``coords`` (M, 3) the fitted model (physical frame); ``score_start``
    and ``score`` the objective at the displaced model and after the fit; per domain the
    fit's ``rotation_deg`` and ``translation_A`` beyond the displaced model's motion."""

    coords: np.ndarray
    score_start: float
    score: float
    rotation_deg: list[float]
    translation_A: list[float]
    particles: int
    seconds: float
    selection: str = "latent"     # how the particles were chosen: nearest the latent, or by images
    held_out: float | None = None  # t of the held-out half's gain over the displaced model (checked_fit)
    kept: str = "fitted"          # "fitted", or "displaced" when the check fell back to the plain displacement
    start: str = "displaced"      # what the fit started from: the displaced model, or the images' path
    note: str = ""                # why the displaced model was kept, when not by the held-out check

    def summary(self) -> dict:
        return {"score_start": round(self.score_start, 5), "score": round(self.score, 5),
                "rotation_deg": [round(v, 2) for v in self.rotation_deg],
                "translation_A": [round(v, 2) for v in self.translation_A],
                "particles": self.particles, "selection": self.selection, "seconds": round(self.seconds, 1),
                "held_out_t": None if self.held_out is None else round(self.held_out, 2), "kept": self.kept,
                "start": self.start, **({"note": self.note} if self.note else {})}


def rotation_matrix(w: torch.Tensor) -> torch.Tensor:
    """The rotation matrix (3, 3) of rotation vector ``w`` (3,) (Rodrigues), smooth at 0."""
    th2 = (w * w).sum()
    th = torch.sqrt(th2 + 1e-24)
    k = torch.zeros(3, 3, dtype=w.dtype, device=w.device)
    k[0, 1], k[0, 2], k[1, 2] = -w[2], w[1], -w[0]
    k = k - k.T
    a = torch.where(th2 > 1e-12, torch.sin(th) / th, 1 - th2 / 6)
    b = torch.where(th2 > 1e-12, (1 - torch.cos(th)) / (th2 + 1e-24), 0.5 - th2 / 24)
    return torch.eye(3, dtype=w.dtype, device=w.device) + a * k + b * (k @ k)


def fit_domains(result: Result, model, displaced: np.ndarray, domains: Domains, z: np.ndarray,
                interpolator, particles: int = PARTICLES, steps: int = STEPS, lr: float = LEARNING_RATE,
                width: float = WIDTH, indices=None, state: StateParticles | None = None,
                usable: np.ndarray | None = None) -> DomainFit:
    """The model (``AtomicModel``, physical frame) with its ``domains`` fitted as rigid
    bodies to the particles nearest latent ``z``, starting from ``displaced`` (M, 3), the
    model displaced to ``z``. ``interpolator``: the model's
    :class:`~gaussianem.model.displace.AtomInterpolator` (``Result.interpolator``).
    ``indices``: fit to these particles (0-based rows of the training particle file)
    instead of the ``particles`` nearest ``z`` (among the ``usable`` ones, (N,) bool,
    :func:`usable_particles`); ``state``: the state's particles, already read."""
    t0 = time.perf_counter()
    x0 = np.asarray(model.coords, dtype=np.float64)
    displaced = np.asarray(displaced, dtype=np.float64)
    if displaced.shape != x0.shape or len(domains.atom_labels) != len(x0):
        raise InputError(f"the displaced model ({displaced.shape}) and domains ({len(domains.atom_labels)} "
                         f"atoms) must match the model ({len(x0)} atoms)")
    state = state or StateParticles(result, model, z, interpolator, particles, indices, width, usable)
    dev = state.device
    groups = [np.flatnonzero(domains.atom_labels == k) for k in range(domains.n)]
    starts = []
    for g in groups:
        r, pc, qc = kabsch(x0[g], displaced[g])
        starts.append([torch.tensor(a, dtype=torch.float32, device=dev) for a in (r, pc, qc)])
    atoms = torch.from_numpy(x0.astype(np.float32)).to(dev)
    gidx = [torch.from_numpy(g).to(dev) for g in groups]
    params = [torch.zeros(3, device=dev, requires_grad=True) for _ in range(2 * len(groups))]

    def motions(fit: bool = True):
        """Per domain (R, p, q): x -> R (x - p) + q, physical frame."""
        out = []
        for k in range(len(groups)):
            r, pc, qc = starts[k]
            if fit:
                r, qc = rotation_matrix(params[2 * k]) @ r, qc + TRANSLATION_UNIT * params[2 * k + 1]
            out.append((r, pc, qc))
        return out

    def place(fit: bool = True) -> torch.Tensor:
        """Atoms (M, 3), engine frame, with each domain's start (and fitted) motion."""
        out = torch.zeros_like(atoms)
        for g, (r, pc, qc) in zip(gidx, motions(fit)):
            out = out.index_copy(0, g, (atoms[g] - pc) @ r.T + qc)
        return out - state.centre

    with torch.no_grad():
        first = state.score(place(fit=False))
    opt = torch.optim.Adam(params, lr=lr)
    with torch.enable_grad():
        for _ in range(int(steps)):
            opt.zero_grad()
            state.score(place(), backward=True)
            opt.step()
    with torch.no_grad():
        x = place()
        last = state.score(x)
        if not last > first:                       # never worse than the displaced model
            x, last = place(fit=False), first
            for p in params:
                p.zero_()
    fitted = interpolator.keep_bonds(result.grid.to_physical(x.double().cpu().numpy()))
    rot = [float(np.degrees(params[2 * k].detach().norm().cpu())) for k in range(len(groups))]
    shift = [float(TRANSLATION_UNIT * params[2 * k + 1].detach().norm().cpu()) for k in range(len(groups))]
    return DomainFit(fitted, first, last, rot, shift, state.n, time.perf_counter() - t0)


HELD_OUT_T = 3.0            # the held-out half's gain must be this many standard errors above 0
HELD_OUT_MIN = 20           # particles: fewer than this in a half and nothing can be checked


def paired_t(gain: np.ndarray) -> float:
    """The mean of per-particle score gains over its standard error (a paired t)."""
    gain = np.asarray(gain, dtype=np.float64)
    return float(gain.mean() / max(gain.std(ddof=1) / np.sqrt(len(gain)), 1e-12))


def checked_fit(result: Result, model, displaced: np.ndarray, domains: Domains, z: np.ndarray, interpolator,
                particles: int = PARTICLES, steps: int = STEPS, indices=None,
                usable: np.ndarray | None = None, start: np.ndarray | None = None) -> DomainFit:
    """:func:`fit_domains`, checked on particles it did not see: the state's particles
    (``indices``, or the ``particles`` nearest ``z``) are split in two alternate halves;
    the domains are fitted to the first, and the second half's per-particle scores, fitted
    against displaced, must gain by ``HELD_OUT_T`` standard errors (a paired t). If they do,
    the fit goes on from there on all the particles; if not (too few particles, noise, or
    domains the particles cannot tell apart), the plain displaced model is kept
    (``kept == "displaced"``): a fit the images do not confirm is not written. ``start``
    (M, 3): another model to fit from (the images' path at the state's place,
    :meth:`ImagePath.coords_at`) where the first half's particles prefer it to
    ``displaced`` (a local fit from the decoder's part of a large motion can stop short)."""
    t0 = time.perf_counter()
    chosen = np.asarray(indices if indices is not None else nearest_particles(result, z, particles, usable))
    halves = chosen[0::2], chosen[1::2]
    t = None
    if min(len(h) for h in halves) >= HELD_OUT_MIN:
        half = StateParticles(result, model, z, interpolator, indices=halves[0])
        begin, began = displaced, "displaced"
        if start is not None:
            with torch.no_grad():
                ends = [half.score(half.engine(x)) for x in (displaced, start)]
            if ends[1] > ends[0]:
                begin, began = start, "path"
        first = fit_domains(result, model, begin, domains, z, interpolator, steps=steps, state=half)
        check = StateParticles(result, model, z, interpolator, indices=halves[1])
        t = paired_t(check.scores(check.engine(first.coords)) - check.scores(check.engine(displaced)))
    if t is None or t < HELD_OUT_T:
        score = first.score_start if t is not None else float("nan")
        fit = DomainFit(interpolator.keep_bonds(np.asarray(displaced, dtype=np.float64)), score, score,
                        [0.0] * domains.n, [0.0] * domains.n, len(chosen), 0.0, held_out=t, kept="displaced")
    else:
        fit = fit_domains(result, model, first.coords, domains, z, interpolator, steps=max(1, steps // 2),
                          indices=chosen)
        fit.held_out, fit.start = t, began
    fit.seconds = time.perf_counter() - t0
    return fit


SEGMENT_STATES = 16         # k-means centres of the latents the domains are found from


def _centre_displacements(result: Result, interpolator, reference=None, states: int = SEGMENT_STATES,
                          seed: int = 0) -> np.ndarray:
    """(centres (S, zdim), displacements (S, M, 3)): the k-means centres of the particles'
    latents and the model's displacements there, relative to ``reference`` (None: the
    consensus)."""
    zs = result.require_z()
    centres = kmeans(zs, min(int(states), len(zs)), seed=seed).centres
    return centres, result.atom_displacements(interpolator, centres, reference)


def model_domains(result: Result, model, interpolator, reference=None, states: int = SEGMENT_STATES,
                  seed: int = 0) -> Domains:
    """The model's rigid domains (:func:`gaussianem.analysis.domains.segment`) from its
    displacements at the k-means centres of the particles' latents, relative to
    ``reference`` (the latent the model stands for; None: the consensus)."""
    return segment(model, _centre_displacements(result, interpolator, reference, states, seed)[1], seed=seed)


def domain_count(result: Result, model, domains: Domains, ladder: list[Domains], z: np.ndarray, start: np.ndarray,
                 interpolator, indices: np.ndarray, steps: int = STEPS) -> tuple[Domains, list[dict]]:
    """(domains, judged): the images' word on how many domains move. The decoded motion may
    be too small to tell a moving part from its core (two domains moving at once: one of
    them split off, the other left with the core), so each finer split of the ``ladder``
    (:func:`~gaussianem.analysis.domains.segment_ladder`) beyond ``domains`` is fitted, from
    ``start`` (M, 3), with its boundaries placed, to one alternate half of the particles
    ``indices`` of the state at ``z``, and scored on the other half: a finer split is taken
    when its held-out gain over the best so far is ``HELD_OUT_T`` standard errors above 0
    (a paired t), so a split that only fits noise is not."""
    counts = sorted({d.n for d in ladder if d.n > domains.n})
    halves = np.asarray(indices)[0::2], np.asarray(indices)[1::2]
    if not counts or min(len(h) for h in halves) < HELD_OUT_MIN:
        return domains, []
    fit_half = StateParticles(result, model, z, interpolator, indices=halves[0])
    check = StateParticles(result, model, z, interpolator, indices=halves[1])

    def held_out(d: Domains) -> np.ndarray:
        fit = fit_domains(result, model, start, d, z, interpolator, steps=steps, state=fit_half)
        placed = refine_boundaries(result, model, d, fit.coords, fit_half)
        return check.scores(check.engine(placed.coords))

    best = held_out(domains)
    judged = []
    for n in counts:
        cand = next(d for d in ladder if d.n == n)
        scores = held_out(cand)
        t = paired_t(scores - best)
        judged.append({"domains": n, "against": domains.n, "held_out_t": round(t, 2), "taken": t >= HELD_OUT_T})
        if t >= HELD_OUT_T:
            domains, best = cand, scores
    return domains, judged


def domains_by_images(result: Result, model, domains: Domains, interpolator, reference=None, usable=None,
                      particles: int = PARTICLES, steps: int = STEPS, states: int = SEGMENT_STATES,
                      seed: int = 0) -> tuple[Boundaries, ImagePath]:
    """The images' word on the domains and the states: the model is fitted to the
    particles of the k-means centre of the latents that moves it most; finer splits than
    ``domains`` are taken where those particles confirm them (:func:`domain_count`,
    recorded in the result's ``judged``); the domains' boundaries are moved to where the
    particles put them (:mod:`gaussianem.analysis.domain_boundaries`), and every particle is
    placed on the path from the model to that state (:mod:`gaussianem.analysis.image_path`)."""
    centres, disp = _centre_displacements(result, interpolator, reference, states, seed)
    most = int(np.argmax((disp ** 2).sum((1, 2))))
    state = StateParticles(result, model, centres[most], interpolator, particles, usable=usable)
    start = np.asarray(model.coords, dtype=np.float64) + disp[most]
    domains, judged = domain_count(result, model, domains, segment_ladder(model, disp, seed=seed), centres[most],
                                   start, interpolator, nearest_particles(result, centres[most], particles, usable),
                                   steps)
    end = fit_domains(result, model, start, domains, centres[most], interpolator, steps=steps, state=state)
    found = refine_boundaries(result, model, domains, end.coords, state)
    if (found.domains.residue_labels != domains.residue_labels).any():     # the end fitted again, on them
        found.coords = fit_domains(result, model, found.coords, found.domains, centres[most], interpolator,
                                   steps=steps, state=state).coords
    found.judged = judged
    return found, image_path(result, model, found.domains, found.coords, interpolator, reference, usable, seed=seed)


OWN_STATE_MAX = 0.6         # fraction of its way to the end state a domain may move at its own latent


def own_state_shift(result: Result, model, domains: Domains, reference, interpolator, path: ImagePath,
                    particles: int = PARTICLES, steps: int = STEPS, usable: np.ndarray | None = None,
                    indices=None) -> float:
    """How far the model's domains move when fitted (:func:`checked_fit`) to the particles
    of its own latent ``reference``, chosen as the states' are: the largest over the
    domains of the RMS move as a fraction of the domain's RMS motion to the images' end
    state (``path.end``; domains moving under 1 A there are not judged). The model stands
    at that latent, so its particles should leave it nearly where it is (0.1-0.4 of the way
    on the validation's cells, mostly the spread of the latent's ends). Where the latent
    does not resolve the motion (two domains moving one after the other), a latent's
    particles are a mixture of states and pull a domain most of the way (0.85 on one such
    cell): the states' fits would be fitted to the wrong particles, and the held-out half,
    drawn from the same mixture, would confirm them. ``indices``: those particles, when
    known."""
    zr = result.check_z(np.asarray(reference, dtype=np.float32))[0]
    chosen = indices if indices is not None or not path.usable else path.select(result, zr, particles, usable)
    x0 = np.asarray(model.coords, dtype=np.float64)
    fit = checked_fit(result, model, x0, domains, zr, interpolator, particles=particles, steps=steps, usable=usable,
                      indices=chosen)
    moved, far = ((fit.coords - x0) ** 2).sum(-1), ((np.asarray(path.end) - x0) ** 2).sum(-1)
    out = 0.0
    for k in range(domains.n):
        sel = domains.atom_labels == k
        if np.sqrt(far[sel].mean()) >= 1.0:
            out = max(out, float(np.sqrt(moved[sel].mean() / far[sel].mean())))
    return out


def displaced_fit(displaced: np.ndarray, domains: Domains, interpolator, particles: int, note: str) -> DomainFit:
    """The plain displaced model as a state's result (``kept == "displaced"``, ``note`` why)."""
    return DomainFit(interpolator.keep_bonds(np.asarray(displaced, dtype=np.float64)), float("nan"), float("nan"),
                     [0.0] * domains.n, [0.0] * domains.n, particles, 0.0, kept="displaced", note=note)


def fitted_models(result: Result, model, z: np.ndarray, interpolator, reference=None, particles: int = PARTICLES,
                  steps: int = STEPS, sort: str = "images", progress=print):
    """(models, domains, fits): the model displaced to each latent row of ``z`` with its
    rigid domains fitted to that state's particles (:func:`fit_domains`). ``sort``:
    ``images`` moves the domains' boundaries and takes each state's particles by their
    place on the domains' path (:func:`domains_by_images`) when the latent agrees with
    it; ``latent`` keeps the domains and takes the particles nearest each latent."""
    if sort not in ("images", "latent"):
        raise InputError(f"unknown particle sort {sort!r}: expected images or latent")
    z = result.check_z(z)
    domains = model_domains(result, model, interpolator, reference)
    usable, note = usable_particles(result)
    progress(f"rigid domains: {domains.n} ({', '.join(str(s) for s in domains.sizes())} residues)"
             + (f"; {note}" if note else ""))
    path = None
    if sort == "images" and domains.motion > 0:
        found, path = domains_by_images(result, model, domains, interpolator, reference, usable, particles, steps)
        for j in found.judged:
            progress(f"{j['domains']} domains instead of {j['against']}: held-out gain t = {j['held_out_t']:.1f} "
                     f"({HELD_OUT_T:g} needed), " + ("taken" if j["taken"] else "not taken"))
        domains = found.domains
        progress(f"domain boundaries placed by the particles of the most moved state: {found.moved()} residue(s) "
                 f"changed domain ({', '.join(str(s) for s in domains.sizes())} residues)")
        progress(f"particles placed along the domains' path by their images ({len(path.indices)} scored): the "
                 f"latent reads their place with R^2 {path.r2:.2f}" + (
                     "" if path.usable else "; too low to use, so states take the particles nearest their latent"))
    moved = result.displace_model(model, z, interpolator=interpolator, reference=reference)
    moved = moved if isinstance(moved, list) else [moved]
    shift = None if reference is None or path is None or domains.n < 2 else own_state_shift(
        result, model, domains, reference, interpolator, path, particles, steps, usable)
    if shift is not None and shift > OWN_STATE_MAX:
        note = (f"fitted to the particles of its own latent, a domain of the model moves {shift:.2f} of its way to "
                f"the end state (over {OWN_STATE_MAX:g}): the latent does not tell the states apart well enough here "
                "(two domains moving one after the other?), so each state's particles would be a mixture; the plain "
                "displaced models are written "
                "(docs/validation.md, \"--fit-domains where two domains move at once\")")
        progress("warning: " + note)
        fits = [displaced_fit(m.coords, domains, interpolator, particles, note) for m in moved]
        return [model.with_coords(f.coords) for f in fits], domains, fits
    models, fits = [], []
    for i, (zi, m) in enumerate(zip(z, moved)):
        chosen = path.select(result, zi, particles, usable) if path is not None and path.usable else None
        fit = checked_fit(result, model, m.coords, domains, zi, interpolator, particles=particles, steps=steps,
                          usable=usable, indices=chosen,
                          start=path.coords_at(model, zi, result.require_z()) if chosen is not None else None)
        if chosen is not None:
            fit.selection = f"images (R^2 {path.r2:.2f})"
        if fit.kept == "displaced":
            progress(f"state {i + 1}/{len(z)}: the fitted domains did not match the held-out half of its "
                     f"{fit.particles} particles better than the displaced model ("
                     + (f"t = {fit.held_out:.1f}, {HELD_OUT_T:g} needed" if fit.held_out is not None
                        else f"under {2 * HELD_OUT_MIN} particles") + "): the plain displaced model is kept "
                     f"({fit.seconds:.0f} s)")
        else:
            progress(f"state {i + 1}/{len(z)}: domains fitted to {fit.particles} particles, score "
                     f"{fit.score_start:.4g} -> {fit.score:.4g}, rotations "
                     f"{', '.join(f'{r:.1f}' for r in fit.rotation_deg)} deg"
                     + (" from the images' path" if fit.start == "path" else "")
                     + f", held-out gain t = {fit.held_out:.1f} ({fit.seconds:.0f} s)")
        models.append(model.with_coords(fit.coords))
        fits.append(fit)
    return models, domains, fits
