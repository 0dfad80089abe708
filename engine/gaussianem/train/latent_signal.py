"""Is the heterogeneity the latent shows in the images? Difference maps from independent
noise halves.

At SNR 0.01 a latent can follow the noise: an encoder and decoder fitted to 2,000 such
images give each particle a state that fits its own image better than another's, with no
motion behind it (the robustness matrix's ``snr0.01`` cell: the latent's read-out of the
true motion 0.12, while the decoder moves the particles and the image loss falls). The
image loss cannot tell, since the latent was fitted to those very images, and selecting
particles by such a latent selects their noise.

This check keeps the selection and the evidence apart. Each image ``x`` of a sample of
particles is split into two copies with independent noise (Pang et al.'s
recorrupted-to-recorrupted pairs): ``x + n'`` and ``x - n'``, ``n'`` fresh Gaussian noise
with the power spectrum of the images' residuals from the consensus projection (at least
the noise's own power, since the residual also holds the heterogeneity). The first copy is
encoded exactly as training encodes; the particles at the two ends (thirds) of each
latent part's first principal axis are reconstructed (rigid backprojection, CTF-weighted,
:mod:`gaussianem.physics.backproject`) from the second copies, in two random halves; the
two halves' difference maps (high end less low end) are compared by their Fourier
correlation, pooled over the shells from ``BAND_LOW_A`` to ``BAND_HIGH_A`` inside a soft
mask around the consensus Gaussians. A latent part that follows structure the images share
gives reproducible difference maps (correlation near 1); one that follows noise or
anything else that does not differ in 3D (for instance the particles' views) gives
difference maps of noise (near 0). The same with the particles split at random
(``random``) shows the spread to expect from noise alone.

On the robustness matrix (docs/validation.md, "Health that knows its limits"), the
conformational latent's difference maps correlate at 0.56-0.97 on every run at SNR 0.03 to
1, and at -0.07 to 0.19 at SNR 0.01 where the latent's motion read-out is 0.02-0.13 (or its
first axis 0.48); with 20,000 particles and a read-out of 0.70, 0.68. The evidence grows
with the particles, so all of them are used up to ``PARTICLES`` (with 2,000 of the 20,000 the
same run read 0.17). :func:`checks` turns it into ``health.json``'s ``latent_signal``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gaussianem.io.images import fourier_crop
from gaussianem.model import intensity
from gaussianem.model.encoding import encoder_inputs
from gaussianem.physics import backproject as bp
from gaussianem.physics.fsc import shell_index, soft_mask
from gaussianem.physics.grid import Grid
from gaussianem.physics.render import render_volume

PARTICLES = 20000              # particles used at most (each reconstructed from one noise half)
BAND_LOW_A, BAND_HIGH_A = 60.0, 12.0   # Angstrom: the shells pooled (a motion is low resolution)
MASK_EXTRA_A = 3.0             # the mask's Gaussians: this much wider than the consensus'
OVERSAMPLE = 2                 # as gaussianem.analysis.reconstruct
# the conformational difference-map correlation under which a moving latent is mostly noise:
# 0.56-0.97 on the robustness matrix's 57 runs at SNR 0.03-1, -0.07-0.04 at SNR 0.01 with
# 2,000 particles (motion read-outs 0.09-0.13), 0.14 with 10,000 (read-out 0.13), 0.68 with
# 20,000 (read-out 0.70); a random split of the particles -0.18-0.08
SIGNAL_WARNING = 0.3
MIN_GROUP = 10                 # particles per half and end below which nothing is judged
MAP_APIX_A = 4.0               # the maps' pixel at most this coarse (Nyquist 8 A, beyond the band): cheap


@torch.no_grad()
def _residual_spectrum(model, images, phys, image_std, rows, box, batch, dev):
    """The mean 2D power spectrum (unnormalised FFT) of the normalised images less their
    consensus projection (the DC term set to 0), and each image's residual variance over
    the mean."""
    power, var = torch.zeros(box, box, device=dev), []
    for s in range(0, len(rows), batch):
        r = rows[s:s + batch]
        idx = torch.from_numpy(r).to(dev)
        x = intensity.normalise(images.__getitems__(r)["image"].to(dev), image_std, phys.remove_offset)
        ref = encoder_inputs(model, x, idx, phys, box)[0]
        res = x - (ref if ref is not None else x.mean((-2, -1), keepdim=True))
        power += torch.fft.fft2(res).abs().pow(2).sum(0)
        var.append(res.pow(2).mean((-2, -1)))
    power /= len(rows)
    power[0, 0] = 0.0
    var = torch.cat(var)
    return power, var / var.mean().clamp_min(1e-30)


def _band(a: np.ndarray, b: np.ndarray, mask: np.ndarray, apix: float) -> tuple:
    """The Fourier coefficients of two masked maps on the shells from ``BAND_LOW_A`` to
    ``BAND_HIGH_A`` (clipped to Nyquist; the three lowest shells when none is left)."""
    box = a.shape[0]
    fa = torch.fft.rfftn(torch.from_numpy(np.asarray(a * mask, np.float64))).flatten()
    fb = torch.fft.rfftn(torch.from_numpy(np.asarray(b * mask, np.float64))).flatten()
    shell, inside = shell_index(box)
    res = box * apix / shell.clamp_min(1).double()
    sel = inside & (shell > 0) & (res <= BAND_LOW_A) & (res >= BAND_HIGH_A)
    if not bool(sel.any()):
        sel = inside & (shell > 0) & (shell <= 3)
    return fa[sel], fb[sel]


def _band_dot(a: np.ndarray, b: np.ndarray, mask: np.ndarray, apix: float) -> float:
    """The real inner product of two masked maps over the band of :func:`_band`."""
    fa, fb = _band(a, b, mask, apix)
    return float((fa * fb.conj()).real.sum())


def _band_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, apix: float) -> float:
    """The Fourier correlation of two masked maps pooled over the band of :func:`_band`."""
    fa, fb = _band(a, b, mask, apix)
    num = (fa * fb.conj()).real.sum()
    den = torch.sqrt(fa.abs().pow(2).sum() * fb.abs().pow(2).sum())
    return float(num / den) if float(den) > 0 else float("nan")


@torch.no_grad()
def measure(model, images, phys, image_std: float, part_dims: int | None = None, n: int = PARTICLES,
            batch: int = 64, seed: int = 0, z_train: np.ndarray | None = None) -> dict:
    """The difference-map correlation (module docstring) of each latent part (``conf`` and
    ``comp``, or ``all`` when the latent is not split) and of a random split (``random``),
    over up to ``n`` random particles of ``images``
    (:class:`~gaussianem.io.images.ParticleImages`), with their physics ``phys`` and the
    data set's ``image_std``; with the particles' training latents ``z_train`` (one row
    per image), also ``asked_3d`` of the conformational part (module docstring)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    dev = next(model.parameters()).device
    box = model.cfg.box
    train_apix = float(phys.apix.median())
    small = min(box, 2 * int(np.ceil(box * train_apix / MAP_APIX_A / 2)))
    was_training = model.training
    model.eval()
    try:
        power, rel_var = _residual_spectrum(model, images, phys, image_std, rows, box, batch, dev)
        amp = power.sqrt() / box
        gen = torch.Generator(device="cpu").manual_seed(seed)
        z, second = [], []
        for s in range(0, len(rows), batch):
            r = rows[s:s + batch]
            idx = torch.from_numpy(r).to(dev)
            x = intensity.normalise(images.__getitems__(r)["image"].to(dev), image_std, phys.remove_offset)
            noise = torch.fft.ifft2(torch.fft.fft2(torch.randn(x.shape, generator=gen).to(dev)) * amp).real
            noise = noise * rel_var[s:s + len(r), None, None].sqrt()
            first = x + noise
            z.append(model.encode(first, *encoder_inputs(model, first, idx, phys, box))[0].float().cpu().numpy())
            second.append(fourier_crop(x - noise, small).cpu())
    finally:
        model.train(was_training)
    z, second = np.concatenate(z), torch.cat(second)
    factor = box / small
    apix = float(phys.apix[torch.from_numpy(rows).to(phys.apix.device)].median()) * factor
    grid = Grid(small, apix)
    points = bp.voxel_points(small, apix, dev)
    widths = torch.sqrt(model.widths.detach().float() ** 2 + MASK_EXTRA_A ** 2)
    mask = soft_mask(model.centres.detach().float().cpu(), widths.cpu(), grid)
    half = rng.permutation(len(rows)) % 2

    def rigid_map(local: np.ndarray) -> np.ndarray:
        acc = torch.zeros(2, small ** 3, device=dev)
        for s in range(0, len(local), batch):
            loc = local[s:s + batch]
            i = torch.from_numpy(rows[loc]).to(dev)
            ap = phys.apix[i] * factor
            ch = bp.prepare_images(second[loc].to(dev), phys.ctf[i], ap, phys.shift[i], phys.scale[i],
                                   oversample=OVERSAMPLE)
            bp.backproject(ch, phys.rot[i], ap / OVERSAMPLE, points, acc)
        w = bp.weights(acc[1].reshape(small, small, small))
        return bp.wiener(acc[0].reshape(small, small, small), w, bp.shell_regulariser(w)).cpu().numpy()

    def decoded_maps(local: np.ndarray, parts: list) -> list:
        """The mean rendered decoded state (training latents) of the particles ``local`` and
        of each subset of them in ``parts``; each particle is decoded and rendered once."""
        member = [np.isin(local, p) for p in parts]
        acc = torch.zeros(1 + len(parts), small, small, small, device=dev)
        zt = torch.from_numpy(np.asarray(z_train, np.float32)[rows[local]]).to(dev)
        emb, step = model.embed(), max(batch // 2, 1)
        for s in range(0, len(local), step):
            out = model.decode(zt[s:s + step], emb)
            for j, (c, a, w) in enumerate(zip(out["centres"], out["amplitudes"], out["widths"])):
                vol = render_volume(c.float(), a.float(), w.float(), small, apix)
                acc[0] += vol
                for k, inside in enumerate(member):
                    if inside[s + j]:
                        acc[1 + k] += vol
        counts = [len(local)] + [len(p) for p in parts]
        return [(acc[i] / max(n_i, 1)).cpu().numpy() for i, n_i in enumerate(counts)]

    def difference_correlation(key: np.ndarray, asked: bool = False) -> tuple:
        lo, hi = key <= np.quantile(key, 1 / 3), key >= np.quantile(key, 2 / 3)
        groups = [[np.nonzero(end & (half == h))[0] for end in (hi, lo)] for h in (0, 1)]
        if min(len(g) for pair in groups for g in pair) < MIN_GROUP:
            return float("nan"), None
        d = [rigid_map(g_hi) - rigid_map(g_lo) for g_hi, g_lo in groups]
        corr = round(_band_correlation(d[0], d[1], mask, apix), 4)
        if not asked:
            return corr, None
        ratios = []
        for h, (g_hi, g_lo) in enumerate(groups):
            whole = np.nonzero(half == h)[0]
            rendered, r_hi, r_lo = decoded_maps(whole, [g_hi, g_lo])
            power = _band_dot(rendered, rendered, mask, apix)
            d_dec = (_band_dot(rigid_map(whole), rendered, mask, apix) / power if power > 0 else 0.0) * (r_hi - r_lo)
            moved = _band_dot(d_dec, d_dec, mask, apix)
            ratios.append(_band_dot(d[h], d_dec, mask, apix) / moved if moved > 0 else float("nan"))
        return corr, round(float(np.mean(ratios)), 4) if all(map(math.isfinite, ratios)) else None

    dims = part_dims if part_dims is not None else (model.cfg.zdim_conf if model.cfg.split else z.shape[1])
    parts = {"conf": z[:, :dims], "comp": z[:, dims:]} if model.cfg.split else {"all": z}
    out, asked = {}, None
    for name, zz in parts.items():
        c = zz - zz.mean(0)
        if not zz.shape[1] or float(np.abs(c).max()) == 0:
            out[name] = float("nan")
            continue
        want = z_train is not None and name != "comp"
        out[name], got = difference_correlation(c @ np.linalg.svd(c, full_matrices=False)[2][0], want)
        asked = got if want else asked
    out["random"] = difference_correlation(rng.permutation(len(rows)).astype(np.float64))[0]
    result = {"particles": int(len(rows)), "band_A": [BAND_LOW_A, BAND_HIGH_A], "difference_correlation": out}
    if z_train is not None:
        result["asked_3d"] = asked
    return result


def checks(usage: dict, no_motion: float) -> list:
    """A warning when the particles at the two ends of the conformational latent (all of it
    when not split) show no reproducible 3D difference (``usage["signal"]``,
    :func:`measure`) while the decoder moves them (the median particle by
    ``no_motion`` Angstrom or more): the motion
    shown is not in the images. None when it was not measured or nothing moves (then
    ``motion_found`` speaks)."""
    sig = (usage or {}).get("signal") or {}
    corr = sig.get("difference_correlation") or {}
    part = "conf" if "conf" in corr else "all"
    value = corr.get(part)
    if value is None or not math.isfinite(value):
        return []
    moving = (usage.get("displacement_median") or 0.0) >= no_motion
    random = corr.get("random")
    noise = f" (a random split of the particles gives {random:.2f})" if random is not None and math.isfinite(random) else ""
    what = "conformational latent" if part == "conf" else "latent"
    if value < SIGNAL_WARNING:
        return [] if not moving else [_check(
            "latent_signal", value, "warning",
            f"the {what} is mostly noise: the particles at the two ends of its first axis, reconstructed from an "
            f"independent half of their images' noise, give difference maps that agree at {value:.2f} between two "
            f"halves of the particles{noise}, under the {SIGNAL_WARNING:g} of a motion the images hold; the motion "
            "shown is not resolved; more particles, or training with '--encoder-lowpass 10' (the encoder reads the "
            "images low-pass filtered), may resolve it (docs/validation.md, \"How many particles are enough\")",
            SIGNAL_WARNING)]
    return [_check("latent_signal", value, "healthy",
                   f"the ends of the {what} differ reproducibly in 3D: difference maps from independent halves of "
                   f"the noise and of the particles agree at {value:.2f}{noise}", SIGNAL_WARNING)]


def _check(name, value, status, message, threshold=None) -> dict:
    return {"name": name, "value": value, "status": status, "message": message, "threshold": threshold}
