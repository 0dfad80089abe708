"""Fourier cropping of maps keeps positions (voxel box//2 at the origin) and values."""

from __future__ import annotations

import numpy as np
import pytest

from gaussianem.errors import InputError
from gaussianem.physics.grid import Grid
from gaussianem.physics.resample import even_box, fourier_crop_volume, fourier_pad_volume


def _blob(box, apix, centre, sigma):
    ax = (np.arange(box) - box // 2) * apix
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * sigma ** 2))


def test_crop_keeps_positions_and_values():
    big = _blob(64, 1.0, (5.0, -3.0, 2.0), 4.0)
    small = fourier_crop_volume(big, 32)
    ref = _blob(32, 2.0, (5.0, -3.0, 2.0), 4.0)
    assert small.shape == (32, 32, 32)
    assert np.abs(small - ref).max() < 1e-3 * ref.max()
    assert small.sum() * 8 == pytest.approx(big.sum(), rel=1e-4)        # integral preserved
    # the cropped grid's physical frame: the same centre
    g = Grid(64, 1.0, (10.0, 20.0, 30.0))
    g2 = Grid(32, 2.0, g.centre - 16 * 2.0)
    assert np.allclose(g2.centre, g.centre)


def test_crop_errors_and_identity():
    v = np.zeros((16, 16, 16), np.float32)
    assert fourier_crop_volume(v, 16) is v
    with pytest.raises(InputError):
        fourier_crop_volume(v, 9)
    with pytest.raises(InputError):
        fourier_crop_volume(v[:, :, :8], 8)
    assert even_box(256 * 0.5, 1.0) == 128 and even_box(100, 3.0) == 34


def test_pad_samples_the_same_density_finer_and_undoes_a_crop():
    small = _blob(32, 2.0, (5.0, -3.0, 2.0), 4.0)
    big = fourier_pad_volume(small, 64)
    ref = _blob(64, 1.0, (5.0, -3.0, 2.0), 4.0)                      # same positions, finer voxels
    assert big.shape == (64, 64, 64) and big.dtype == np.float32
    assert np.abs(big - ref).max() < 2e-3 * ref.max()
    assert np.abs(fourier_crop_volume(big, 32) - small).max() < 1e-5
    assert fourier_pad_volume(small, 32) is small
    with pytest.raises(InputError):
        fourier_pad_volume(small, 30)
    with pytest.raises(InputError):
        fourier_pad_volume(small[:31, :31, :31], 64)
