"""Contrast transfer function, computed exactly as RELION does (``ctf.h``, 3.1+).

For a spatial frequency ``k`` (1/Angstrom, ``u = |k|``, ``theta = atan2(ky, kx)``)::

    deltaf(theta) = -(dU + dV)/2 - (dU - dV)/2 * cos(2 (theta - azimuth))
    chi = pi * lambda * deltaf * u^2 + pi/2 * Cs * lambda^3 * u^4
          - atan(Q / sqrt(1 - Q^2)) - phase_shift
    ctf = scale * -sin(chi) * exp(-B u^2 / 4)

with defoci ``dU, dV`` in Angstrom (positive = underfocus), the astigmatism azimuth
``rlnDefocusAngle`` in degrees measured from the x axis, ``Cs`` in mm, voltage in kV,
amplitude contrast ``Q`` and ``rlnPhaseShift`` in degrees, ``rlnCtfBfactor`` B in A^2 and
``rlnCtfScalefactor`` ``scale`` (1 when absent), as RELION's ``CTF::getCTF`` applies them.
At ``u = 0`` the CTF equals ``Q`` (positive), so a projection of positive density keeps
its sign at low frequency (RELION's convention: protein is white after inversion).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch


@dataclass
class CTFParams:
    """Per-particle CTF parameters, arrays of shape (N,), in RELION units."""

    defocus_u: np.ndarray       # Angstrom
    defocus_v: np.ndarray       # Angstrom
    defocus_angle: np.ndarray   # degrees
    voltage: np.ndarray         # kV
    cs: np.ndarray              # mm
    amp_contrast: np.ndarray    # fraction
    phase_shift: np.ndarray     # degrees
    bfactor: np.ndarray         # A^2
    scale: np.ndarray = field(default=None)  # multiplies the CTF (rlnCtfScalefactor); None: 1

    def __post_init__(self):
        if self.scale is None:
            self.scale = np.ones(np.shape(self.defocus_u))

    def __len__(self) -> int:
        return len(self.defocus_u)

    def subset(self, idx) -> "CTFParams":
        return CTFParams(**{f.name: np.asarray(getattr(self, f.name))[idx] for f in fields(self)})

    def as_tensor(self, idx=None, device=None) -> torch.Tensor:
        """(B, 9) float32 tensor in the field order, for batched evaluation."""
        cols = [np.asarray(getattr(self, f.name), dtype=np.float32) for f in fields(self)]
        arr = np.stack(cols, axis=1)
        if idx is not None:
            arr = arr[idx]
        return torch.from_numpy(np.ascontiguousarray(arr)).to(device)

    @classmethod
    def constant(cls, n: int, **values) -> "CTFParams":
        defaults = dict(defocus_u=15000.0, defocus_v=15000.0, defocus_angle=0.0, voltage=300.0,
                        cs=2.7, amp_contrast=0.1, phase_shift=0.0, bfactor=0.0)
        defaults.update(values)
        return cls(**{k: np.full(n, v, dtype=np.float64) for k, v in defaults.items()})

    @classmethod
    def random(cls, n: int, rng: np.random.Generator, defocus=(8000.0, 25000.0),
               astigmatism: float = 500.0) -> "CTFParams":
        """Simulated micrographs: mean defocus uniform in ``defocus`` (Angstrom), up to
        ``astigmatism`` between U and V, a random astigmatism angle; values rounded as a
        star file would hold them (0.01 A, 0.01 degree)."""
        dmean = rng.uniform(*defocus, n)
        dast = rng.uniform(0, astigmatism, n)
        ctf = cls.constant(n)
        ctf.defocus_u = np.round(dmean + dast / 2, 2)
        ctf.defocus_v = np.round(dmean - dast / 2, 2)
        ctf.defocus_angle = np.round(rng.uniform(-180, 180, n), 2)
        return ctf


def fourier_grid(box: int, apix, rfft: bool = True, device=None, dtype=torch.float32) -> torch.Tensor:
    """Spatial frequencies (kx, ky) in 1/Angstrom on a ``box``-pixel image's FFT grid.

    Layout is ``torch.fft.rfft2``'s (H=box, W=box//2+1) when ``rfft`` else ``fft2``'s,
    unshifted (zero frequency at [0, 0]); rows are y, columns x. ``apix`` may be a scalar
    (returns (H, W, 2)) or a (B,) tensor (returns (B, H, W, 2)).
    """
    ky = torch.fft.fftfreq(box, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(box, device=device, dtype=dtype) if rfft else ky
    g = torch.stack(torch.meshgrid(kx, ky, indexing="xy"), dim=-1)  # (H, W, 2): [..., 0]=kx
    if isinstance(apix, torch.Tensor) and apix.ndim == 1:
        return g[None] / apix.to(device=device, dtype=dtype)[:, None, None, None]
    return g / float(apix)


def evaluate(freqs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """CTF values on a frequency grid.

    freqs: (H, W, 2) or (B, H, W, 2) in 1/Angstrom; params: (B, 9) from
    :meth:`CTFParams.as_tensor` (or (B, 8), without the scale factor: 1). Returns (B, H, W)
    float32.
    """
    p = params[:, :, None, None]
    dfu, dfv, ang, kv, cs, q, phase, bfac = (p[:, i] for i in range(8))
    lam = 12.2642598 / torch.sqrt(kv * 1e3 * (1 + kv * 1e3 * 0.978466e-6))
    kx, ky = freqs[..., 0], freqs[..., 1]
    u2 = kx * kx + ky * ky
    theta = torch.atan2(ky, kx)
    deltaf = -0.5 * (dfu + dfv) - 0.5 * (dfu - dfv) * torch.cos(2 * (theta - torch.deg2rad(ang)))
    chi = (torch.pi * lam * deltaf * u2 + 0.5 * torch.pi * (cs * 1e7) * lam ** 3 * u2 * u2
           - torch.atan(q / torch.sqrt(1 - q * q)) - torch.deg2rad(phase))
    ctf = -torch.sin(chi) * torch.exp(-bfac * u2 / 4)
    if params.shape[1] > 8:
        ctf = ctf * p[:, 8]
    return ctf
