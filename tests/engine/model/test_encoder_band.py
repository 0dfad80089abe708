"""The image encoder's own low-pass (training's --encoder-lowpass)."""

import numpy as np
import pytest
import torch

from gaussianem.errors import TrainingError
from gaussianem.model.networks import ImageEncoder, ModelConfig
from gaussianem.train.config import TrainConfig
from gaussianem.train.loop import encoder_band


def _encoder(band):
    torch.manual_seed(0)
    return ImageEncoder(ModelConfig(box=16, zdim=2, enc_dim=16, encoder_input="image", gaussian_features=False,
                                    encoder_band=band)).eval()


def test_a_band_limited_encoder_does_not_see_what_lies_beyond_its_band():
    x = torch.randn(3, 16, 16)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    fine = torch.cos(2 * np.pi * 7 * (xx + yy) / 16)[None]    # 0.62 cycles/pixel: out of a half-Nyquist band
    with torch.no_grad():
        lp = _encoder(0.5)
        assert torch.allclose(lp(x)[0], lp(x + 5 * fine)[0], atol=1e-4)
        full = _encoder(0.0)
        assert not torch.allclose(full(x)[0], full(x + 5 * fine)[0], atol=1e-3)
        coarse = torch.cos(2 * np.pi * xx / 16)[None]       # the lowest frequency: in band
        assert not torch.allclose(lp(x)[0], lp(x + 5 * coarse)[0], atol=1e-3)


def test_encoder_lowpass_in_angstrom_becomes_a_fraction_of_nyquist():
    class Data:
        apix, box = np.array([1.5]), 128
    cfg = TrainConfig(particles="p.star", consensus="c.mrc", outdir="o", encoder_lowpass=12.0)
    assert encoder_band(cfg, Data, 64) == pytest.approx(2 * 3.0 / 12.0)     # 3 A pixels at box 64
    assert encoder_band(TrainConfig(particles="p", consensus="c", outdir="o"), Data, 64) == 0.0
    assert encoder_band(TrainConfig(particles="p", consensus="c", outdir="o", encoder_lowpass=2.0), Data, 64) == 1.0
    with pytest.raises(TrainingError, match="--encoder-lowpass"):
        TrainConfig(particles="p", consensus="c", outdir="o", encoder_lowpass=-1.0)
