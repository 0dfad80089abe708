"""Did the whole motion arrive? The particles at the ends of the motion, asked.

A decoder can find a motion (which particles are where, which part moves which way) and
still carry only part of its amplitude: on a 30-degree hinge the default decoder of
session 10 carried a tenth of it while the latent followed the motion at 0.92
(docs/validation.md, "The whole motion"). Nothing in the image loss at the end of
training says so, since every particle is fitted as well as the decoder can.

This check asks the images. The particles at both ends of the conformational latent's
first principal axis (``ENDS`` each) are predicted with their decoded motion scaled by
``s`` about the latent's centre state: Gaussians at ``c + d(z_mid) + s (d(z_p) - d(z_mid))``
(each particle's own amplitudes), projected with its pose, CTF and intensity scale. Each
particle's image loss over ``SCALES`` gives its preferred ``s`` (a parabola through the
best grid point and its neighbours); the median over the particles is ``asked``. ``asked``
near 1 means the decoded motion is what the images hold; well above 1 means the particles
ask for more motion than the decoder gives (the scaled shape is not the true one, so
``asked`` understates how much is missing). Over ``health.ASKED_WARNING`` the run's health warns
(:func:`gaussianem.train.health.arrival_checks`).
"""

from __future__ import annotations

import numpy as np
import torch

from gaussianem.model import intensity
from gaussianem.train import health, latent_signal

SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
ENDS = 96                      # particles at each end
MIN_MOTION = 0.3               # Angstrom RMS between the ends below which nothing is judged


def _preferred(losses: np.ndarray) -> np.ndarray:
    """Each row's minimum of ``losses`` (P, len(SCALES)) on the ``SCALES`` grid, refined by a
    parabola through the best point and its neighbours (clipped to the grid)."""
    s = np.asarray(SCALES)
    k = losses.argmin(1)
    out = s[k].astype(np.float64)
    for i, j in enumerate(k):
        if 0 < j < len(s) - 1:
            x, y = s[j - 1:j + 2], losses[i, j - 1:j + 2]
            a, b, _ = np.polyfit(x, y, 2)
            if a > 0:
                out[i] = float(np.clip(-b / (2 * a), s[j - 1], s[j + 1]))
    return out


@torch.no_grad()
def measure(model, images, phys, image_std: float, z: np.ndarray, box: int, part_dims: int | None = None,
            batch: int = 32) -> dict:
    """``asked`` (the median preferred scale of the decoded motion, see the module
    docstring), the preferred scales at each end, and the RMS decoded motion between the
    ends (Angstrom), for a trained ``model``, its ``images``
    (:class:`~gaussianem.io.images.ParticleImages`), ``phys`` and the latents ``z`` (n, zdim)
    of every particle."""
    z = np.asarray(z, np.float32)
    dims = part_dims or (model.cfg.zdim_conf if model.cfg.split else model.cfg.zdim)
    zc = z[:, :dims]
    centre = np.median(zc, 0)
    if len(z) < 4 * ENDS:
        return {"asked": None, "reason": f"too few particles ({len(z)}) to judge"}
    _, _, vt = np.linalg.svd(zc - zc.mean(0), full_matrices=False)
    pc = (zc - zc.mean(0)) @ vt[0]
    order = np.argsort(pc)
    ends = {"low": order[:ENDS], "high": order[-ENDS:]}
    dev = next(model.parameters()).device
    emb, mass = model.embed(), model.mass_weights()
    mid = model.decode(torch.from_numpy(np.concatenate([centre, np.median(z[:, dims:], 0)])[None]).to(dev), emb)
    d_mid = mid["displacement"][0].float()
    result: dict = {"scales": list(SCALES), "particles_per_end": ENDS}
    prefs, motion = [], []
    for name, idx in ends.items():
        losses = []
        for s0 in range(0, len(idx), batch):
            rows = np.sort(idx[s0:s0 + batch])
            target = intensity.normalise(images.__getitems__(rows)["image"].to(dev), image_std)
            ti = torch.from_numpy(rows).to(dev)
            out = model.decode(torch.from_numpy(z[rows]).to(dev), emb)
            rel = out["displacement"].float() - d_mid
            w = mass * out["amp_factor"].float()
            motion.append(((rel.pow(2).sum(-1) * w).sum(1) / w.sum(1)).sqrt().cpu().numpy())
            per = []
            for s in SCALES:
                cen = model.centres + d_mid + s * rel
                pred = phys.project(cen, out["amplitudes"], out["widths"], ti, box) * model.scale
                per.append(((pred - target) ** 2).mean((-2, -1)).cpu().double().numpy())
            losses.append(np.stack(per, 1))
        p = _preferred(np.concatenate(losses))
        result[f"asked_{name}"] = round(float(np.median(p)), 3)
        prefs.append(p)
    rms = float(np.median(np.concatenate(motion)))
    result["decoded_motion_A"] = round(rms, 3)
    if rms < MIN_MOTION:
        result.update(asked=None, reason=f"the ends move by {rms:.2f} A RMS from the centre: no motion to judge")
        return result
    result["asked"] = round(float(np.median(np.concatenate(prefs))), 3)
    return result


def usage(trainer, z: np.ndarray) -> dict:
    """:func:`gaussianem.train.health.latent_usage` of a finished
    :class:`~gaussianem.train.loop.Trainer`'s latents ``z``, with this module's
    measurement under ``arrival`` and :func:`gaussianem.train.latent_signal.measure` under
    ``signal`` (when the latent is in use)."""
    model = trainer.model
    out = health.latent_usage(model, z)
    if out.get("displacement_spread", 0.0) >= health.UNUSED_DISPLACEMENT:
        out["arrival"] = measure(model, trainer.images, trainer.phys, trainer.image_std, z, trainer.box)
        out["signal"] = latent_signal.measure(model, trainer.images, trainer.phys, trainer.image_std, z_train=z)
    return out

