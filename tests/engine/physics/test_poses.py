"""RELION Euler and cryoSPARC rotation-vector conventions, checked geometrically."""

import numpy as np
import pytest

from gaussianem.physics import poses


def rz(a):
    c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def ry(a):
    c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


@pytest.mark.parametrize("rot,tilt,psi", [(0, 0, 0), (30, 60, 90), (-150, 120, 33), (200, 10, -80)])
def test_euler_is_zyz_product(rot, tilt, psi):
    # RELION: A = R(psi) about z . R(tilt) about y . R(rot) about z (passive form)
    expected = rz(psi) @ ry(tilt) @ rz(rot)
    assert np.allclose(poses.euler_to_matrix(rot, tilt, psi), expected)


def test_viewing_direction_projects_to_centre():
    # RELION's projection direction for (rot, tilt) is (cos rot sin tilt, sin rot sin tilt, cos tilt)
    rot, tilt, psi = 40.0, 70.0, 15.0
    d = np.array([np.cos(np.deg2rad(rot)) * np.sin(np.deg2rad(tilt)),
                  np.sin(np.deg2rad(rot)) * np.sin(np.deg2rad(tilt)), np.cos(np.deg2rad(tilt))])
    A = poses.euler_to_matrix(rot, tilt, psi)
    assert np.allclose((A @ (10 * d))[:2], 0, atol=1e-9)
    assert (A @ d)[2] == pytest.approx(1.0)


def test_matrix_to_euler_round_trip():
    rng = np.random.default_rng(0)
    R = poses.random_rotations(500, rng)
    e = poses.matrix_to_euler(R)
    assert np.allclose(poses.euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]), R, atol=1e-9)
    assert np.all((e[:, 1] >= 0) & (e[:, 1] <= 180))


def test_random_rotations_are_rotations():
    R = poses.random_rotations(100, np.random.default_rng(1))
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1)


def test_cryosparc_pose_round_trip():
    rng = np.random.default_rng(2)
    R = poses.random_rotations(200, rng)
    v = poses.matrix_to_cryosparc_pose(R)
    assert np.allclose(poses.cryosparc_pose_to_matrix(v), R, atol=1e-6)
