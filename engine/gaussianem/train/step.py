"""One training step's loss: the image term on deformed, re-weighted Gaussians projected
with each particle's pose, CTF and intensity scale, the KL term, and the neighbour-graph
terms that keep local structure (:class:`NeighbourGraph`); the :class:`Schedule` says
where in training the step is (KL warm-up, loss band).

The consensus projection of each particle (the base Gaussians with its pose, CTF and
intensity scale), which the encoder's inputs are made from, is the same in every epoch:
:class:`ReferenceCache` renders it once for all particles and each step reads it
(``GAUSSIANEM_REFERENCE_CACHE_GB``: its memory budget, 0 turns it off)."""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, replace

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
    rigid: torch.Tensor | None = None   # the edges within one rigid domain (train.graph_cut), None: all

    @classmethod
    def build(cls, base: GaussianSet, radius: float | None, device) -> "NeighbourGraph":
        edges, radius = losses.radius_graph(base.centres.to(device), radius)
        d0 = (base.centres[edges[:, 0].cpu()] - base.centres[edges[:, 1].cpu()]).norm(dim=1)
        return cls(edges, (0.5 * d0).to(device), float(d0.median()), float(radius))

    @property
    def strained(self) -> torch.Tensor:
        """The edges whose length and displacement difference are held (the distance and
        alignment terms): all, or those within one rigid domain once the graph is cut."""
        return self.edges if self.rigid is None else self.rigid

    def cut(self, labels) -> "NeighbourGraph":
        """The same graph whose distance and alignment terms no longer hold the edges
        between Gaussians of different ``labels`` (N,) (None: the whole graph again); the
        embedding and spacing terms keep every edge (domains must not overlap)."""
        if labels is None:
            return NeighbourGraph(self.edges, self.min_dist, self.edge_scale, self.radius)
        lab = torch.as_tensor(labels, device=self.edges.device)
        keep = lab[self.edges[:, 0]] == lab[self.edges[:, 1]]
        return NeighbourGraph(self.edges, self.min_dist, self.edge_scale, self.radius, self.edges[keep])


@dataclass
class Batch:
    images: torch.Tensor         # (B, box, box) normalised images on the device
    index: torch.Tensor          # (B,) rows of the particle set
    phys: Physics                # poses, CTF, scales of every particle (on the device)
    box: int
    noise: torch.Tensor | None = None   # (B, zdim) reparameterisation noise (default: drawn here)
    references: bool = True             # read the consensus projections from a ReferenceCache


@dataclass
class Schedule:
    """Where a step is: ``kl_scale`` (0 to 1, the KL warm-up) and ``band`` (the image
    loss's resolution limit in Angstrom, None for the full band), with the loss settings."""

    weights: LossWeights
    loss: str = "l2"
    kl_scale: float = 1.0
    band: float | None = None
    distance_robust: float = 0.0     # Angstrom: the distance term's Charbonnier scale (0: squared)
    distance_cut: float | None = None  # the distance weight once the graph is cut (None: the weights')

    @classmethod
    def at(cls, cfg, t: float, apix: float) -> "Schedule":
        """The schedule ``t`` epochs (fractional) into a stage of ``cfg``, at the training
        box's coarsest pixel size ``apix``."""
        kl = min(1.0, t / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
        return cls(cfg.weights, cfg.loss, kl, loss_band(cfg, t, apix), cfg.distance_robust, cfg.distance_cut)


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
    cached = ReferenceCache.of(phys, core, box) if batch.references and core.needs_reference else None
    ref, feats = encoder_inputs(core, images, idx, cached or phys, box, emb)
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
        "distance": losses.distance_loss(core.centres, out["centres"], graph.strained,
                                         schedule.distance_robust) / scale2,
        "alignment": losses.alignment_loss(strain_part(out), graph.strained) / scale2,
        "embedding": losses.embedding_loss(out["embedding"].float(), edges),
        "spacing": losses.spacing_loss(out["centres"], edges, graph.min_dist),
        "amplitude": losses.amplitude_loss(out["amp_factor"], mass),
    }
    w = schedule.weights
    if graph.rigid is not None and schedule.distance_cut is not None:
        w = replace(w, distance=schedule.distance_cut)
    if w.contrastive > 0:
        terms["contrastive"] = losses.contrastive_loss(mu, out["displacement"], out["amp_factor"])
    total = sum(getattr(w, k) * v * (schedule.kl_scale if k == "kl" else 1.0) for k, v in terms.items())
    with torch.no_grad():
        if ref is None:
            ref = phys.project(core.centres, core.amplitudes, core.widths, idx, box) * core.scale
        cons = render.lowpass(ref, phys.apix[idx], band) if band else ref
        stats = health.step_stats(pred, cons, target, mu, logvar, out, mass, core.cfg.max_displacement)
    return total, {k: v.detach() for k, v in terms.items()}, stats


def strain_part(out: dict) -> torch.Tensor:
    """The displacements the structure terms charge: all, less the domains' rigid motion
    where ``--domain-motion`` gives one (a domain's rigid turn strains no edge within it)."""
    d = out["displacement"]
    return d if out.get("domain_rigid") is None else d - out["domain_rigid"]


def reference_budget(device: torch.device) -> float:
    """Bytes the consensus projections may take: ``GAUSSIANEM_REFERENCE_CACHE_GB`` (GiB; 0:
    no cache), by default a quarter of a GPU's memory, 4 GiB on the CPU."""
    env = os.environ.get("GAUSSIANEM_REFERENCE_CACHE_GB")
    if env not in (None, ""):
        return float(env) * 2 ** 30
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 4
    return 4.0 * 2 ** 30


class ReferenceCache:
    """Every particle's consensus projection ``phys.project(base, idx)`` (pose, CTF and
    intensity scale; float32, on the device), rendered once and read by each step in its
    place. It stands in for ``phys`` where only the base is projected (the encoder's
    inputs): :meth:`project` returns the stored values and, when a gradient is asked (the
    Gaussian features' residual correlations), adds the renderer's backward alone
    (:func:`~gaussianem.physics.render.gradients_only`): the same values and gradients as
    rendering, without the forward. Rendered again whenever the base Gaussians (``--unsmear``,
    a recovery), the box or the particles' poses, CTF and scales change."""

    _of = weakref.WeakKeyDictionary()       # Physics -> its cache (lives as long as it)
    BATCH = 64

    def __init__(self, phys, box: int):
        self.phys, self.box, self.values, self.key, self.base = phys, box, None, None, None

    @classmethod
    def of(cls, phys, core, box: int) -> "ReferenceCache | None":
        """The cache of ``phys``'s particles for ``core``'s base at ``box``, rendered if
        needed; None when it does not fit :func:`reference_budget`."""
        n = len(phys.rot)
        if n * box * box * 4 > reference_budget(phys.rot.device):
            return None
        cache = cls._of.get(phys)
        if cache is None or cache.box != box:
            cache = cls._of[phys] = cls(phys, box)
        cache._refresh(core)
        return cache

    def _state(self, core):
        p = self.phys
        return ((p.rot, p.shift, p.ctf, p.apix, p.scale), p.remove_offset,
                tuple((t.data_ptr(), t._version) for t in (core.centres, core.amplitudes, core.widths)))

    def _refresh(self, core) -> None:
        key = self._state(core)
        if self.key is not None and all(a is b for a, b in zip(key[0], self.key[0])) and key[1] == self.key[1]:
            if key[2] == self.key[2]:
                return                                     # nothing written to the base since
            if all(torch.equal(a, b) for a, b in zip((core.centres, core.amplitudes, core.widths), self.base)):
                self.key = key                             # written with the same values (a broadcast)
                return
        self.base = tuple(t.detach().clone() for t in (core.centres, core.amplitudes, core.widths))
        n, dev = len(self.phys.rot), self.phys.rot.device
        values = torch.empty(n, self.box, self.box, device=dev)
        with torch.no_grad():
            for start in range(0, n, self.BATCH):
                stop = min(n, start + self.BATCH)
                values[start:stop] = self.phys.project(*self.base, torch.arange(start, stop, device=dev), self.box)
        self.values, self.key = values, key

    def project(self, centres, amplitudes, widths, idx, box: int, band: float | None = None,
                scaled: bool = True) -> torch.Tensor:
        """``phys.project`` of the base Gaussians (given here as they were cached, or
        expanded per particle) for particles ``idx``: stored values, exact gradients."""
        if band or not scaled or box != self.box:
            return self.phys.project(centres, amplitudes, widths, idx, box, band, scaled)
        values = self.values[idx]
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in (centres, amplitudes, widths)):
            return values
        with render.gradients_only():
            return values + self.phys.project(centres, amplitudes, widths, idx, box)
