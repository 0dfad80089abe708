"""The heterogeneity model: dual encoder (images, Gaussians) and one deformation decoder.

* :class:`ImageEncoder` maps a particle image (Fourier-cropped to the training box,
  optionally windowed by a soft circular mask) to the mean and log-variance of its
  latent ``z`` (a VAE posterior). With ``encoder_input="residual"`` (what training uses
  by default) it sees the image minus the consensus Gaussians projected with the
  particle's pose and CTF: the large pose-dependent signal every particle shares is
  removed, what is left is heterogeneity and noise.
  With ``gaussian_features`` (training's default) it also reads, for each Gaussian, how
  the residual correlates with that Gaussian's projection (its amplitude and centre
  gradients, ``encoding.residual_correlations``), pooled over the Gaussian embedding: a
  pose-free view of which density is missing or displaced.
* :class:`GaussianEncoder` embeds each base Gaussian's parameters (position, amplitude,
  width; positions also through a Fourier positional encoding) with a shared MLP with
  LayerNorm.
* :class:`DeformationDecoder` takes ``[z, embedding_i]`` and outputs, per Gaussian, a
  displacement (3, Angstrom; with ``centre_displacements``, training's default, without
  the common translation, :func:`remove_translation`: the consensus poses already place
  the particle as a whole), an amplitude factor in (0, 2) (compositional change drives
  it towards 0) and, with ``width_change``, a width factor in [exp(-0.2), exp(0.2)] (off
  by default: a conformational decoder that can blur Gaussians can fake their absence). The first layer is split
  ``W [z, e] = Wz z + We e`` so the per-Gaussian part is computed once per batch.

With ``zdim_conf`` and ``zdim_comp`` both set, ``z = [z_conf, z_comp]`` and two decoders
share the Gaussian embedding: the conformational one may only move Gaussians, the
compositional one may only change amplitudes, so the two kinds of heterogeneity land on
separate latent axes. Otherwise one decoder drives all outputs from all of ``z``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from gaussianem.errors import InputError
from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.segments import DomainField, SegmentField


@dataclass
class ModelConfig:
    """The networks' shape and behaviour, saved in every checkpoint. Defaults are the
    training defaults; :meth:`from_saved` reads a checkpoint's, filling what older runs
    did not record with what they did (:data:`BEFORE_RECORDED`)."""

    box: int                      # training image size (pixels)
    zdim: int                     # total latent size (= zdim_conf + zdim_comp when split)
    zdim_conf: int = 0            # > 0 with zdim_comp > 0: split latent (training's default:
    zdim_comp: int = 0            # DEFAULT_SPLIT); 0 and 0: one unsplit latent
    enc_dim: int = 256
    enc_layers: int = 3
    emb_dim: int = 32
    gauss_dim: int = 128
    dec_dim: int = 128
    dec_layers: int = 3
    pe_freqs: int = 6
    window: bool = True
    max_displacement: float = 20.0   # Angstrom, bound of each displacement component
    width_change: bool = False       # the conformational decoder also changes widths
    encoder_input: str = "residual"  # residual (image - consensus projection) | image | both
    gaussian_features: bool = True   # the encoder also reads the residual's correlation with
                                     # each Gaussian's projection, pooled over the embedding
    centre_displacements: bool = True  # no common translation: displacements lose it
                                       # (centre_by says how, remove_translation)
    centre_by: str = "core"       # "core": the mass-weighted mean of the parts that move least
                                  # (training's default since session 12); "mass": of all; "median":
                                  # the median per axis; "none" (remove_translation)
    segments: int = 0             # > 0: that many rigid segments move with the latent too
                                  # (gaussianem.model.segments), the per-Gaussian decoder adds the rest
    domain_motion: bool = False   # the domains training finds (--cut-graph) move rigidly with the latent
                                  # (gaussianem.model.segments.DomainField) under the per-Gaussian rest
    encoder_band: float = 0.0     # > 0: the image encoder reads its input low-pass filtered to this
                                  # fraction of Nyquist (training's --encoder-lowpass); 0: the full band

    @property
    def split(self) -> bool:
        return self.zdim_conf > 0 and self.zdim_comp > 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_saved(cls, d: dict) -> "ModelConfig":
        return cls(**{**BEFORE_RECORDED, **d})


DEFAULT_SPLIT = (8, 1)      # training's latent sizes (conformational, compositional) when none is given
# what runs made before a setting existed did (a checkpoint without the key)
BEFORE_RECORDED = {"encoder_input": "image", "gaussian_features": False, "centre_displacements": False,
                   "width_change": False, "segments": 0, "centre_by": "mass",
                   "domain_motion": False}


def _mlp(din: int, dim: int, dout: int, layers: int, norm: bool = False) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = din
    for _ in range(layers):
        mods += [nn.Linear(d, dim)] + ([nn.LayerNorm(dim)] if norm else []) + [nn.SiLU()]
        d = dim
    mods.append(nn.Linear(d, dout))
    return nn.Sequential(*mods)


def soft_circular_mask(box: int, edge: float = 0.1) -> torch.Tensor:
    """1 inside radius (0.5 - edge) * box, cosine fall-off to 0 at 0.5 * box."""
    r = torch.arange(box, dtype=torch.float32) - box // 2
    rr = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2) / box
    inner = 0.5 - edge
    m = 0.5 * (1 + torch.cos(torch.pi * (rr - inner) / edge))
    return torch.where(rr < inner, torch.ones_like(m), torch.where(rr > 0.5, torch.zeros_like(m), m))


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.register_buffer("mask", soft_circular_mask(cfg.box) if cfg.window
                             else torch.ones(cfg.box, cfg.box), persistent=False)
        self.input = cfg.encoder_input
        band = None
        if cfg.encoder_band > 0:
            ky = torch.fft.fftfreq(cfg.box)[:, None]
            kx = torch.fft.rfftfreq(cfg.box)[None, :]
            band = ((ky ** 2 + kx ** 2).sqrt() <= 0.5 * cfg.encoder_band).float()
        self.register_buffer("band", band, persistent=False)
        if self.input not in ("image", "residual", "both"):
            raise InputError(f"unknown encoder input {self.input!r}: expected image, residual or both")
        channels = 2 if self.input == "both" else 1
        extra = 4 * cfg.emb_dim if cfg.gaussian_features else 0
        self.net = _mlp(channels * cfg.box * cfg.box + extra, cfg.enc_dim, 2 * cfg.zdim, cfg.enc_layers, norm=True)

    def forward(self, images: torch.Tensor, reference: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input != "image":
            if reference is None:
                raise InputError("this encoder needs the consensus projection of each image (reference)")
            if self.input == "residual":
                images = images - reference
            else:
                images = torch.stack([images, reference], 1)
        if self.band is not None:
            images = torch.fft.irfft2(torch.fft.rfft2(images.float()) * self.band, s=images.shape[-2:])
        x = (images * self.mask).flatten(1)
        if features is not None:
            x = torch.cat([x, features.to(x.dtype)], 1)
        out = self.net(x)
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar.clamp(-10, 5)


class GaussianEncoder(nn.Module):
    """Per-Gaussian embedding of normalised (position, amplitude, width)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pe_freqs = cfg.pe_freqs
        din = 5 + 6 * cfg.pe_freqs
        self.net = _mlp(din, cfg.gauss_dim, cfg.emb_dim, 2, norm=True)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        xyz = feats[:, :3]
        freqs = (2.0 ** torch.arange(self.pe_freqs, device=feats.device, dtype=feats.dtype)) * math.pi
        ang = xyz[:, :, None] * freqs                                      # (N, 3, F)
        pe = torch.cat([torch.sin(ang), torch.cos(ang)], -1).flatten(1)
        return self.net(torch.cat([feats, pe], dim=1))


class DeformationDecoder(nn.Module):
    """[z, e_i] -> outputs per Gaussian; ``nout`` of them, in the caller's order."""

    def __init__(self, zdim: int, emb_dim: int, dim: int, layers: int, nout: int):
        super().__init__()
        self.zproj = nn.Linear(zdim, dim)
        self.eproj = nn.Linear(emb_dim, dim, bias=False)
        self.body = _mlp(dim, dim, nout, layers - 1) if layers > 1 else nn.Linear(dim, nout)
        last = self.body[-1] if isinstance(self.body, nn.Sequential) else self.body
        nn.init.normal_(last.weight, std=1e-3)       # start from the consensus (no deformation)
        nn.init.zeros_(last.bias)

    def forward(self, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.zproj(z)[:, None, :] + self.eproj(emb)[None, :, :]       # (B, N, dim)
        return self.body(torch.nn.functional.silu(h))


def remove_translation(disp: torch.Tensor, by: str, mass: torch.Tensor) -> torch.Tensor:
    """Displacements (B, N, 3) less each particle's common translation.

    The consensus refinement placed every particle as a whole, so a translation of all
    Gaussians together is a pose error, not a conformation (and the graph losses do not see
    it). ``by="core"`` (training's default since session 12, :func:`core_translation`)
    takes the mass-weighted mean of the parts that move least: a domain moving against
    the rest keeps its motion, a translation of everything goes entirely. On the
    robustness matrix it doubled the motion arriving where two domains move at once
    (0.28 -> 0.54-0.62 on three runs) and kept every other cell (docs/validation.md, "The
    whole motion, session 12"). ``by="mass"`` (the default before) takes the
    mass-weighted mean (``mass`` (N,), summing to 1); it drags the rest of the molecule
    against every moving domain. ``by="median"``
    takes the Gaussians' median displacement per axis: a pure translation goes entirely,
    while a domain moving with fewer than half of the Gaussians moves alone, the rest
    staying where the refinement put it (as it does when a large body dominates the
    alignment). On a 30-degree hinge of a sixth of the mass the median carried more of the
    motion, but at SNR 0.03 it once lost a normal mode altogether (docs/validation.md,
    "Displaced models"), so it is an option (``--centre-by median``), not the default."""
    if by == "median":
        return disp - disp.median(dim=1, keepdim=True).values
    if by == "mass":
        return disp - torch.einsum("bnk,n->bk", disp, mass)[:, None, :]
    if by == "core":
        return disp - core_translation(disp, mass)[:, None, :]
    if by == "none":
        return disp
    raise InputError(f"unknown translation removal {by!r}: expected mass, median, core or none")


CORE_SCALE = 1.0        # Angstrom: a Gaussian this far from the common translation counts half


def core_translation(disp: torch.Tensor, mass: torch.Tensor, scale: float = CORE_SCALE) -> torch.Tensor:
    """(B, 3) each particle's translation of its core: the mass-weighted mean displacement
    with each Gaussian weighted down by ``1 / (1 + (r / scale)^2)``, ``r`` its distance
    from the Gaussians' median displacement (weights held fixed, Cauchy M-estimator's
    first step). Parts that move by several Angstrom against the rest hardly count, so
    they keep their motion; a rigid translation of everything goes entirely."""
    with torch.no_grad():
        med = disp.median(dim=1, keepdim=True).values
        r2 = (disp - med).pow(2).sum(-1) / scale ** 2
        w = mass[None, :] / (1 + r2)
        w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    return torch.einsum("bnk,bn->bk", disp, w)


class HeterogeneityModel(nn.Module):
    """Encoders + decoder around a fixed base Gaussian set (a buffer, saved with the model)."""

    def __init__(self, cfg: ModelConfig, base: GaussianSet):
        super().__init__()
        if cfg.split and cfg.zdim != cfg.zdim_conf + cfg.zdim_comp:
            raise InputError("zdim must equal zdim_conf + zdim_comp when the latent is split")
        self.cfg = cfg
        self.register_buffer("centres", base.centres.float().clone())
        self.register_buffer("amplitudes", base.amplitudes.float().clone())
        self.register_buffer("widths", base.widths.float().clone())
        radius = float(base.centres.norm(dim=1).max()) or 1.0
        self.register_buffer("feat_scale", torch.tensor(
            [radius] * 3 + [float(base.amplitudes.mean()), float(base.widths.mean())]))
        self.image_encoder = ImageEncoder(cfg)
        self.gaussian_encoder = GaussianEncoder(cfg)
        if cfg.split:
            self.conf_decoder = DeformationDecoder(cfg.zdim_conf, cfg.emb_dim, cfg.dec_dim, cfg.dec_layers,
                                                   4 if cfg.width_change else 3)
            # composition is one number per Gaussian from a few latent values: a narrower net
            self.comp_decoder = DeformationDecoder(cfg.zdim_comp, cfg.emb_dim, max(32, cfg.dec_dim // 4),
                                                   max(2, cfg.dec_layers - 1), 1)
        else:
            self.decoder = DeformationDecoder(cfg.zdim, cfg.emb_dim, cfg.dec_dim, cfg.dec_layers,
                                              5 if cfg.width_change else 4)
        if cfg.segments > 0:
            self.segment_field = SegmentField(cfg.zdim_conf if cfg.split else cfg.zdim, self.centres,
                                              self.mass_weights(), cfg.segments, cfg.dec_dim,
                                              max_shift=cfg.max_displacement)
        if cfg.domain_motion:
            self.domain_field = DomainField(cfg.zdim_conf if cfg.split else cfg.zdim, len(self.centres),
                                            dim=cfg.dec_dim, max_shift=cfg.max_displacement)
        # global intensity scale between Gaussian projections and (normalised) images
        self.log_scale = nn.Parameter(torch.zeros(()))

    def embed(self) -> torch.Tensor:
        feats = torch.cat([self.centres, self.amplitudes[:, None], self.widths[:, None]], 1)
        return self.gaussian_encoder(feats / self.feat_scale)

    @property
    def needs_reference(self) -> bool:
        return self.cfg.encoder_input != "image" or self.cfg.gaussian_features

    def encode(self, images: torch.Tensor, reference: torch.Tensor | None = None,
               features: torch.Tensor | None = None):
        return self.image_encoder(images, reference, features)

    def forward(self, images: torch.Tensor, reference: torch.Tensor | None = None,
                features: torch.Tensor | None = None):
        """The module's forward is the image encoder (what DistributedDataParallel wraps)."""
        return self.encode(images, reference, features)

    def decode(self, z: torch.Tensor, emb: torch.Tensor | None = None) -> dict:
        """Latents (B, zdim) -> dict of displacement (B,N,3), amp_factor (B,N),
        width_factor (B,N), and the deformed centres/amplitudes/widths."""
        if emb is None:
            emb = self.embed()
        cfg = self.cfg
        if cfg.split:
            oc = self.conf_decoder(z[:, :cfg.zdim_conf], emb)
            oa = self.comp_decoder(z[:, cfg.zdim_conf:], emb)
            disp_raw, amp_raw = oc[..., :3], oa[..., 0]
            width_raw = oc[..., 3] if cfg.width_change else None
        else:
            o = self.decoder(z, emb)
            disp_raw, amp_raw = o[..., :3], o[..., 3]
            width_raw = o[..., 4] if cfg.width_change else None
        disp = cfg.max_displacement * torch.tanh(disp_raw.float() / cfg.max_displacement * 10.0)
        z_conf = z[:, :cfg.zdim_conf] if cfg.split else z
        rigid = domain = None
        if cfg.segments > 0:
            rigid = self.segment_field(z_conf, self.centres)
            disp = disp + rigid
        if cfg.domain_motion:
            domain = self.domain_field(z_conf, self.centres)
            disp = disp + domain
        if cfg.centre_displacements:
            disp = remove_translation(disp, cfg.centre_by, self.mass_weights())
        amp_factor = 2 * torch.sigmoid(amp_raw.float())
        width_factor = (torch.exp(0.2 * torch.tanh(width_raw.float())) if width_raw is not None
                        else torch.ones_like(amp_factor))
        return {
            "displacement": disp,
            "amp_factor": amp_factor,
            "width_factor": width_factor,
            "centres": self.centres + disp,
            "amplitudes": self.amplitudes * amp_factor,
            "widths": self.widths * width_factor,
            "embedding": emb,
            "rigid": rigid,
            "domain_rigid": domain,     # the domains' rigid part of the displacement (--domain-motion)
        }

    def mass_weights(self) -> torch.Tensor:
        """Each base Gaussian's share of the total integrated density (a s^3), (N,)."""
        m = self.amplitudes.abs() * self.widths ** 3
        return m / m.sum().clamp_min(1e-30)

    @property
    def scale(self) -> torch.Tensor:
        """The learned global factor on every projection, within [0.1, 10]: the images'
        scale is measured before training (gaussianem.model.intensity), this absorbs only what
        the Gaussians' fit to the map leaves."""
        return torch.exp(self.log_scale.clamp(-2.3, 2.3))
