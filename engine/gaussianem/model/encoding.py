"""What the image encoder reads from each particle, besides its pixels.

* :class:`Physics`: every particle's pose, CTF, pixel size, intensity scale and shift
  correction (:mod:`gaussianem.model.intensity`), resident on the device.
* :func:`encoder_inputs`: the consensus Gaussians projected with the particle's pose and
  CTF (the encoder subtracts it: ``encoder_input="residual"``), and with
  ``gaussian_features`` the per-Gaussian residual correlations of
  :func:`residual_correlations` pooled over the Gaussian embedding.
* :func:`encode_particles`: posterior means of a batch, exactly as training encodes
  (used by training's final latents and by ``Result.encode``).
"""

from __future__ import annotations

import numpy as np
import torch

from gaussianem.model import intensity
from gaussianem.model.networks import HeterogeneityModel
from gaussianem.physics import render


class Physics:
    """Per-particle poses, CTF, pixel sizes and intensity scales resident on the device.
    ``scale`` is 1 for every particle until :meth:`set_intensity`."""

    def __init__(self, data, train_box: int, device):
        self.rot = torch.from_numpy(data.rotations.astype(np.float32)).to(device)
        self.star_shift = torch.from_numpy(data.shifts.astype(np.float32)).to(device)
        self.shift = self.star_shift.clone()
        self.ctf = data.ctf.as_tensor(device=device)
        self.apix = torch.from_numpy((data.apix * data.box / train_box).astype(np.float32)).to(device)
        self.scale = torch.ones(len(data), device=device)
        self.remove_offset = True

    def set_intensity(self, scale: "intensity.IntensityScale") -> None:
        """Per-particle scales, offset removal and shift corrections (added to the star's
        origins) measured before training."""
        self.scale = torch.from_numpy(np.asarray(scale.particle, np.float32)).to(self.rot.device)
        self.remove_offset = scale.remove_offset
        self.shift = self.star_shift.clone()
        if scale.shift_correction is not None:
            self.shift += torch.from_numpy(np.asarray(scale.shift_correction, np.float32)).to(self.shift)

    def project(self, centres, amplitudes, widths, idx, box: int, band: float | None = None,
                scaled: bool = True) -> torch.Tensor:
        """Projections of Gaussians for particles ``idx`` as the images see them: pose,
        CTF and (``scaled``) intensity scale applied, mean-free when offsets are removed."""
        p = render.project(centres, amplitudes, widths, self.rot[idx], self.shift[idx], box, self.apix[idx],
                           ctf_params=self.ctf[idx], lowpass=band)
        if scaled:
            p = p * self.scale[idx, None, None]
        return p - p.mean((-2, -1), keepdim=True) if self.remove_offset else p


def encoder_inputs(core: HeterogeneityModel, images: torch.Tensor, idx, phys: Physics, box: int,
                   emb: torch.Tensor | None = None):
    """What the encoder reads besides the image: the undeformed Gaussians projected with
    each particle's pose and CTF at the learned intensity scale (None if it does not
    compare), and with ``gaussian_features`` the per-Gaussian residual correlations of
    :func:`residual_correlations` pooled over the Gaussian embedding into
    (B, 4 * emb_dim), whatever the number of Gaussians: a pose-free summary of where the
    image departs from the consensus. ``emb``: the Gaussian embedding, if the caller
    already has it (training shares it with the decoder)."""
    if not core.needs_reference:
        return None, None
    if core.cfg.gaussian_features:
        ref, g = residual_correlations(core, images, idx, phys, box)
        emb = core.embed() if emb is None else emb
        return ref, torch.einsum("bnk,ne->bke", g, emb).flatten(1) / len(core.centres) ** 0.5
    with torch.no_grad():
        ref = phys.project(core.centres, core.amplitudes, core.widths, idx, box)
    return ref * core.scale.detach(), None


def residual_correlations(core: HeterogeneityModel, images: torch.Tensor, idx, phys: Physics, box: int):
    """The consensus projection ``ref`` (B, box, box) and, for each particle and Gaussian,
    how the residual ``images - ref`` correlates with that Gaussian's projection (pose
    and CTF applied): the gradient of <projection, residual> with respect to its
    amplitude and its centre (x, y, z), from one backward pass of the renderer. The
    amplitude part is negative where the image lacks the Gaussian's density, the centre
    part points where the density sits instead (its in-plane component: a projection
    cannot see along the beam). (B, N, 4), each channel divided by its RMS over the
    Gaussians; no gradient flows back through it."""
    with torch.enable_grad():
        B = len(idx)
        amps = core.amplitudes.detach().unsqueeze(0).expand(B, -1).clone().requires_grad_(True)
        xyz = core.centres.detach().unsqueeze(0).expand(B, -1, -1).clone().requires_grad_(True)
        proj = phys.project(xyz, amps, core.widths.detach(), idx, box)
        ref = proj.detach() * core.scale.detach()
        g, gx = torch.autograd.grad((proj * (images.float() - ref)).sum(), (amps, xyz))
    g = torch.cat([g[..., None], gx], -1)                             # (B, N, 4)
    return ref, g / g.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)


@torch.no_grad()
def encode_particles(model: HeterogeneityModel, images: torch.Tensor, idx, phys: Physics,
                     image_std: float) -> torch.Tensor:
    """Posterior means of a batch of raw particle images (rows ``idx`` of the dataset),
    as training encodes them: normalised, with what else the encoder reads."""
    images = intensity.normalise(images, image_std, phys.remove_offset)
    return model.encode(images, *encoder_inputs(model, images, idx, phys, model.cfg.box))[0]
