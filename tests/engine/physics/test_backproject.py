"""Backprojection and Wiener filtering (gaussianem.physics.backproject), checked against
images made by the independent Fourier-slice projector (physics.fourier_slice) with
RELION poses, origins and CTFs: the reconstruction must return the volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaussianem.physics import backproject as bp
from gaussianem.physics.ctf import CTFParams
from gaussianem.physics.fourier_slice import project_volume
from gaussianem.physics.fsc import fsc
from gaussianem.physics.poses import random_rotations
from gaussianem.physics.render import render_volume

D, APIX = 32, 2.0


@pytest.fixture(scope="module")
def projections():
    rng = np.random.default_rng(0)
    n = 800
    c = torch.tensor(rng.normal(0, 8, (40, 3)), dtype=torch.float32)
    vol = render_volume(c, torch.ones(40), torch.full((40,), 1.2), D, APIX)
    rot = torch.tensor(random_rotations(n, rng), dtype=torch.float32)
    shifts = torch.tensor(rng.normal(0, 3, (n, 2)), dtype=torch.float32)
    ctf = CTFParams.random(n, rng).as_tensor()
    return vol, rot, shifts, ctf, project_volume(vol, rot, shifts, APIX, ctf)


def _reconstruct(images, rot, shifts, ctf, oversample=2, points=None):
    n = len(images)
    apix = torch.full((n,), APIX)
    acc = torch.zeros(2, D ** 3)
    ch = bp.prepare_images(images, ctf, apix, shifts, oversample=oversample)
    grid = bp.voxel_points(D, APIX)
    bp.backproject(ch, rot, apix / oversample, grid, acc)
    if points is not None:              # the images along moved rays; the weights as they were
        acc[0] = bp.backproject(ch[:, :1], rot, apix / oversample, points, torch.zeros(1, D ** 3))[0]
    w = bp.weights(acc[1].reshape(D, D, D))
    return bp.wiener(acc[0].reshape(D, D, D), w, bp.shell_regulariser(w, None, initial=1e-3))


def test_reconstruction_returns_the_volume(projections):
    """Shifts, astigmatic CTFs and poses undone: FSC with the true volume above 0.95 to
    Nyquist, amplitudes within 15% up to half Nyquist."""
    vol, rot, shifts, ctf, images = projections
    m = _reconstruct(images, rot, shifts, ctf)
    _, f = fsc(m.numpy(), vol.numpy(), APIX)
    assert f.min() > 0.95, np.round(f, 3)
    ratio = bp.shell_mean(bp.spectrum(m).abs(), D) / bp.shell_mean(bp.spectrum(vol).abs(), D)
    assert np.all(np.abs(ratio[2:D // 4] - 1) < 0.15), np.round(ratio, 2)


def test_oversampling_keeps_high_frequencies(projections):
    vol, rot, shifts, ctf, images = projections
    f1 = fsc(_reconstruct(images, rot, shifts, ctf, oversample=1).numpy(), vol.numpy(), APIX)[1]
    f2 = fsc(_reconstruct(images, rot, shifts, ctf, oversample=2).numpy(), vol.numpy(), APIX)[1]
    assert f2[-1] > f1[-1] + 0.02


def test_wrong_shift_sign_is_caught(projections):
    """The origin convention is what makes it work: the opposite sign loses the map."""
    vol, rot, shifts, ctf, images = projections
    right = fsc(_reconstruct(images, rot, shifts, ctf).numpy(), vol.numpy(), APIX)[1]
    wrong = fsc(_reconstruct(images, rot, -shifts, ctf).numpy(), vol.numpy(), APIX)[1]
    assert wrong[D // 4] < right[D // 4] - 0.3


def test_moved_points_read_a_moved_volume(projections):
    """Backprojecting at points x + t reconstructs the volume translated by -t: the
    deformable backprojection's contract (the voxel at x takes what the image shows at
    the deformed position)."""
    vol, rot, shifts, ctf, _ = projections
    t = torch.tensor([4.0, -2.0, 6.0])                          # Angstrom, whole voxels
    moved = torch.roll(vol, shifts=(3, -1, 2), dims=(0, 1, 2))   # z, y, x by t / apix
    images = project_volume(moved, rot, shifts, APIX, ctf)
    m = _reconstruct(images, rot, shifts, ctf, points=bp.voxel_points(D, APIX) + t)
    assert np.corrcoef(m.numpy().ravel(), vol.numpy().ravel())[0, 1] > 0.95
    back = _reconstruct(images, rot, shifts, ctf, points=bp.voxel_points(D, APIX) - t)
    assert np.corrcoef(back.numpy().ravel(), vol.numpy().ravel())[0, 1] < 0.5


def test_regulariser_from_fsc():
    w = torch.ones(D, D, D // 2 + 1, dtype=torch.float64)
    reg = bp.shell_regulariser(w, np.full(D // 2, 0.5))
    assert reg.shape == (D // 2 + 1,) and np.allclose(reg[1:], 1.0)        # SSNR 1: 1/tau^2 = mean weight
    assert bp.shell_regulariser(w, np.full(D // 2, 0.0))[1] > 100           # no signal: heavy damping
