"""The images' spectral SNR per resolution shell, as the encoder meets it.

For up to 1,000 particles of a finished run: the power of the consensus projection (what
the decoder starts from) over the power of the residual (image less that projection: the
noise, plus the heterogeneity), summed per Fourier shell. Where it falls far below 1 the
residual the encoder reads is noise (docs/validation.md, "What costs motion at SNR 0.01").

  .venv/bin/python benchmarks/spectral_snr.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine"))

from gaussianem.analysis.result import load_result  # noqa: E402
from gaussianem.model import intensity  # noqa: E402
from gaussianem.model.encoding import encoder_inputs  # noqa: E402

THRESHOLDS = (1.0, 0.3, 0.1, 0.03, 0.01)


@torch.no_grad()
def spectral_snr(run: str, n: int = 1000, batch: int = 100) -> list:
    """(shell, resolution in Angstrom, SSNR) for the shells 1 .. box/2 - 1 of ``run``."""
    res = load_result(run)
    images, phys = res.particle_source()
    model = res.model
    box = model.cfg.box
    rows = np.arange(min(n, len(images)))
    signal, residual = torch.zeros(box, box), torch.zeros(box, box)
    for s in range(0, len(rows), batch):
        r = rows[s:s + batch]
        x = intensity.normalise(images.__getitems__(r)["image"], res.image_std, phys.remove_offset)
        ref = encoder_inputs(model, x, torch.from_numpy(r), phys, box)[0]
        signal += torch.fft.fft2(ref).abs().pow(2).sum(0)
        residual += torch.fft.fft2(x - ref).abs().pow(2).sum(0)
    k = torch.fft.fftfreq(box)
    shell = ((k[:, None] ** 2 + k[None] ** 2).sqrt() * box).round().long()
    apix = float(phys.apix.median())
    return [(sh, box * apix / sh, float(signal[shell == sh].sum() / residual[shell == sh].sum()))
            for sh in range(1, box // 2)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-n", type=int, default=1000, help="particles (the first n)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    for run in a.runs:
        shells = spectral_snr(run, a.n)
        cross = {t: next((round(r, 1) for _, r, v in shells if v < t), None) for t in THRESHOLDS}
        print(run, "first resolution (A) below each SSNR:", cross)
        print("  " + " ".join(f"{r:.1f}A:{v:.3g}" for _, r, v in shells[::3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
