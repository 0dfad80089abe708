"""A decoder whose displacements are known by hand, for the health checks' tests
(``health.latent_usage`` and what reads it)."""

from __future__ import annotations

import torch


class KnownDecoder(torch.nn.Module):
    """A decoder whose displacements are known by hand: particle latent z moves four of five
    equal-mass Gaussians by (z, 0, 0) Angstrom; the fifth is absent (amplitude factor 0)
    and displaced 30 A, which must not count as the particle moving."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def embed(self):
        return torch.zeros(5, 1)

    def mass_weights(self):
        return torch.full((5,), 0.2)

    def decode(self, z, emb):
        d = torch.zeros(len(z), 5, 3)
        d[..., 0] = z[:, :1]
        d[:, 4, 0] = 30.0                      # a fifth Gaussian, absent (amplitude 0), far away
        amp = torch.ones(len(z), 5)
        amp[:, 4] = 0.0
        return {"displacement": d, "amp_factor": amp}
