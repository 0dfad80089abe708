"""One training step's loss: the image term on deformed, re-weighted Gaussians projected
with each particle's pose, CTF and intensity scale, the KL term, and the neighbour-graph
terms that keep local structure (:class:`NeighbourGraph`); the :class:`Schedule` says
where in training the step is (KL warm-up, loss band)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussianem.model import losses
from gaussianem.model.encoding import Physics, encoder_inputs
from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.losses import LossWeights
from gaussianem.physics import render
from gaussianem.train import health


@dataclass
class NeighbourGraph:
    """Edges between neighbouring base Gaussians, the closest two may come (half their
    rest distance), and the median edge length that makes the structure terms unitless."""

    edges: torch.Tensor          # (E, 2) long, on the device
    min_dist: torch.Tensor       # (E,) Angstrom
    edge_scale: float            # Angstrom
    radius: float                # Angstrom

    @classmethod
    def build(cls, base: GaussianSet, radius: float | None, device) -> "NeighbourGraph":
        edges, radius = losses.radius_graph(base.centres.to(device), radius)
        d0 = (base.centres[edges[:, 0].cpu()] - base.centres[edges[:, 1].cpu()]).norm(dim=1)
        return cls(edges, (0.5 * d0).to(device), float(d0.median()), float(radius))


@dataclass
class Batch:
    images: torch.Tensor         # (B, box, box) normalised images on the device
    index: torch.Tensor          # (B,) rows of the particle set
    phys: Physics                # poses, CTF, scales of every particle (on the device)
    box: int
    noise: torch.Tensor | None = None   # (B, zdim) reparameterisation noise (default: drawn here)


@dataclass
class Schedule:
    """Where a step is: ``kl_scale`` (0 to 1, the KL warm-up) and ``band`` (the image
    loss's resolution limit in Angstrom, None for the full band), with the loss settings."""

    weights: LossWeights
    loss: str = "l2"
    kl_scale: float = 1.0
    band: float | None = None
    distance_robust: float = 0.0     # Angstrom: the distance term's Charbonnier scale (0: squared)

    @classmethod
    def at(cls, cfg, t: float, apix: float) -> "Schedule":
        """The schedule ``t`` epochs (fractional) into a stage of ``cfg``, at the training
        box's coarsest pixel size ``apix``."""
        kl = min(1.0, t / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
        return cls(cfg.weights, cfg.loss, kl, loss_band(cfg, t, apix), cfg.distance_robust)


def loss_band(cfg, t: float, apix: float) -> float | None:
    """The image loss's resolution limit (Angstrom) at epoch ``t`` (fractional), or None
    for the full band: from ``lowpass_start`` linearly in spatial frequency to Nyquist."""
    ramp = cfg.lowpass_epochs
    if not cfg.lowpass_start or t >= ramp:
        return None
    f0, f1 = 1.0 / cfg.lowpass_start, 1.0 / (2 * apix)
    if f0 >= f1:
        return None
    return 1.0 / (f0 + (f1 - f0) * t / ramp)


def compute_losses(model, batch: Batch, graph: NeighbourGraph, schedule: Schedule):
    """The weighted total loss, its terms, and the step's health numbers
    (:func:`gaussianem.train.health.step_stats`)."""
    core = model.module if hasattr(model, "module") else model
    images, idx, phys, box, band = batch.images, batch.index, batch.phys, batch.box, schedule.band
    emb = core.embed()                           # once per step: the features and the decoder read it
    ref, feats = encoder_inputs(core, images, idx, phys, box, emb)
    mu, logvar = model(images, ref, feats)       # forward = image encoder (DDP-wrapped or not)
    eps = torch.randn_like(mu) if batch.noise is None else batch.noise.to(mu)
    z = mu + eps * torch.exp(0.5 * logvar) if core.training else mu
    out = core.decode(z, emb)
    pred = phys.project(out["centres"], out["amplitudes"], out["widths"], idx, box, band) * core.scale
    target = render.lowpass(images, phys.apix[idx], band) if band else images.float()
    mass = core.mass_weights()
    edges, scale2 = graph.edges, graph.edge_scale ** 2
    terms = {
        "image": losses.image_loss(pred, target, schedule.loss),
        "kl": losses.kl_divergence(mu.float(), logvar.float()),
        # structure terms in units of the typical edge length (dimensionless)
        "distance": losses.distance_loss(core.centres, out["centres"], edges,
                                         schedule.distance_robust) / scale2,
        "alignment": losses.alignment_loss(out["displacement"], edges) / scale2,
        "embedding": losses.embedding_loss(out["embedding"].float(), edges),
        "spacing": losses.spacing_loss(out["centres"], edges, graph.min_dist),
        "amplitude": losses.amplitude_loss(out["amp_factor"], mass),
    }
    w = schedule.weights
    if w.contrastive > 0:
        terms["contrastive"] = losses.contrastive_loss(mu, out["displacement"], out["amp_factor"])
    total = sum(getattr(w, k) * v * (schedule.kl_scale if k == "kl" else 1.0) for k, v in terms.items())
    with torch.no_grad():
        if ref is None:
            ref = phys.project(core.centres, core.amplitudes, core.widths, idx, box) * core.scale
        cons = render.lowpass(ref, phys.apix[idx], band) if band else ref
        stats = health.step_stats(pred, cons, target, mu, logvar, out, mass, core.cfg.max_displacement)
    return total, {k: v.detach() for k, v in terms.items()}, stats
