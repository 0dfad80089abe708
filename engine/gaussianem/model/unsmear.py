"""The base Gaussians un-smeared by the decoded motion.

The consensus map of a flexible sample is the average of its states, so the moving parts
are smeared along their paths, and the base Gaussians fitted to it are the smear. Moving
a smear rigidly does not make a sharp domain: on the 30-degree hinge cell the images
preferred the decoder's half motion to the true motion applied to those Gaussians
(docs/validation.md, "The whole motion"), so no loss on them asks for more.

The states are ``base + d(z)``; their average over the particles should be the
consensus, not a state of it. :func:`unsmear` finds the base whose deformed copies
average to what the base itself renders now (the consensus as the Gaussians carry it):
for ``K`` decoded states (displacements ``d_k``, amplitude factors ``f_k``) it fits
centres, amplitudes and widths to::

    min || mean_k V(c + d_k, a f_k, s) - V(c0, a0, s0) ||^2

(``V``: the Gaussians sampled on the training grid), starting from the current base.
With no decoded motion nothing changes; with a partial motion the base sharpens by that
part, and training on the sharper base carries more of the motion, which the next call
takes out of the base again.
"""

from __future__ import annotations

import torch

from gaussianem.physics.render import render_volume


def unsmear(centres: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor, displacements: torch.Tensor,
            amp_factors: torch.Tensor, box: int, apix: float, steps: int = 100, min_width_ratio: float = 0.6,
            max_shift: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """New (centres, amplitudes, widths) and a report (misfit before and after, relative
    to the target's energy; median width ratio; mean centre shift in Angstrom), for the
    current base and ``K`` decoded states (``displacements`` (K, N, 3), ``amp_factors``
    (K, N)). Widths stay above ``min_width_ratio`` of their current values; centres move
    at most ``max_shift`` Angstrom (default: the median width)."""
    with torch.no_grad():
        c0, a0, s0 = (t.detach().float() for t in (centres, amplitudes, widths))
        d, f = displacements.detach().float(), amp_factors.detach().float()
        target = render_volume(c0, a0, s0, box, apix)
        norm = float((target ** 2).sum()) or 1.0
    if max_shift is None:
        max_shift = float(s0.median())
    K = d.shape[0]

    def misfit(c, a, s):
        vol = sum(render_volume(c + d[k], a * f[k], s, box, apix) for k in range(K))
        return ((vol / K - target) ** 2).sum() / norm

    with torch.no_grad():
        before = float(misfit(c0, a0, s0))
    dc = torch.zeros_like(c0, requires_grad=True)
    la = torch.log(a0.abs().clamp_min(1e-12)).clone().requires_grad_(True)
    ls = torch.log(s0).clone().requires_grad_(True)
    sign = torch.sign(a0) + (a0 == 0).float()
    opt = torch.optim.Adam([{"params": [dc], "lr": 0.02 * max_shift}, {"params": [la, ls], "lr": 0.02}])
    floor = torch.log(s0 * min_width_ratio)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = misfit(c0 + dc, sign * torch.exp(la), torch.exp(ls))
        loss.backward()
        opt.step()
        with torch.no_grad():
            ls.copy_(torch.maximum(ls, floor))
            n = dc.norm(dim=1, keepdim=True)
            dc.mul_(torch.clamp(max_shift / n.clamp_min(1e-12), max=1.0))
    with torch.no_grad():
        c, a, s = c0 + dc, sign * torch.exp(la), torch.exp(ls)
        after = float(misfit(c, a, s))
        if after >= before:                   # nothing to gain: keep the base as it was
            c, a, s = c0, a0, s0
    report = {"misfit_before": before, "misfit_after": min(after, before), "states": K,
              "width_ratio_median": float((s / s0).median()), "centre_shift_mean": float((c - c0).norm(dim=1).mean())}
    return c.to(centres), a.to(amplitudes), s.to(widths), report
