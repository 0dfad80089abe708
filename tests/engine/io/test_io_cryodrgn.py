"""cryoDRGN inputs (images + pose.pkl + ctf.pkl [+ ind.pkl]) against a RELION .star and a
cryoSPARC .cs converted here the way cryoDRGN's parse_pose_* / parse_ctf_* commands do,
written from their documented formulas (not with cryoDRGN, nor with the engine)."""

import os
import pickle

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from scipy.spatial.transform import Rotation

from gaussianem.errors import ParticleFileError
from gaussianem.io.cryodrgn import read_cryodrgn
from gaussianem.io.particles import load_particles, write_subset

N, BOX, APIX = 6, 16, 1.3
RNG = np.random.default_rng(7)
ROT, TILT, PSI = RNG.uniform(-180, 180, N), RNG.uniform(1, 179, N), RNG.uniform(-180, 180, N)
ORIGIN = RNG.uniform(-3, 3, (N, 2))  # Angstrom


def _stack(path, n, box=BOX, apix=APIX):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.arange(n * box * box, dtype=np.float32).reshape(n, box, box))
        m.set_image_stack()
        m.voxel_size = apix


def _star(folder):
    _stack(os.path.join(folder, "particles.mrcs"), N)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnImagePixelSize": [APIX], "rlnImageSize": [BOX],
                           "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.07]})
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(N)],
        "rlnAngleRot": ROT, "rlnAngleTilt": TILT, "rlnAnglePsi": PSI,
        "rlnOriginXAngst": ORIGIN[:, 0], "rlnOriginYAngst": ORIGIN[:, 1],
        "rlnDefocusU": RNG.uniform(1e4, 2e4, N), "rlnDefocusV": RNG.uniform(1e4, 2e4, N),
        "rlnDefocusAngle": RNG.uniform(-90, 90, N), "rlnPhaseShift": RNG.uniform(0, 90, N),
        "rlnOpticsGroup": np.ones(N, int)})
    path = os.path.join(folder, "particles.star")
    starfile.write({"optics": optics, "particles": particles}, path)
    return path, particles


def _relion_matrix(rot, tilt, psi):
    """cryoDRGN's utils.R_from_relion_scipy, written out: ZXZ Euler angles (rot + 90,
    tilt, psi - 90) with the signs of four off-diagonal elements flipped."""
    e = np.stack([rot + 90, tilt, psi - 90], axis=1)
    f = np.ones((3, 3))
    f[0, 1] = f[1, 0] = f[1, 2] = f[2, 1] = -1
    return Rotation.from_euler("zxz", e, degrees=True).as_matrix() * f


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return str(path)


def _cryodrgn_inputs(folder, particles, box=BOX):
    """parse_pose_star: (R_from_relion(euler), origin_px / D); parse_ctf_star: float32
    (N, 9) rows D, apix, dfu, dfv, dfang, kV, Cs, w, phase shift."""
    rots = _relion_matrix(ROT, TILT, PSI)
    trans = ORIGIN / APIX / box
    ctf = np.zeros((N, 9))
    ctf[:, 0], ctf[:, 1] = box, APIX
    for i, c in enumerate(["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]):
        ctf[:, 2 + i] = particles[c]
    ctf[:, 5:8] = [300.0, 2.7, 0.07]
    ctf[:, 8] = particles["rlnPhaseShift"]
    return (_dump(os.path.join(folder, "pose.pkl"), (rots, trans)),
            _dump(os.path.join(folder, "ctf.pkl"), ctf.astype(np.float32)))


def _same(a, b, ctf_atol=1e-2):
    # the .star holds angles and origins to 6 decimals, the pickles the exact values
    np.testing.assert_allclose(a.rotations, b.rotations, atol=1e-7)
    np.testing.assert_allclose(a.shifts, b.shifts, atol=1e-6)
    np.testing.assert_allclose(a.apix, b.apix, rtol=1e-6)
    for f in ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs", "amp_contrast", "phase_shift"):
        np.testing.assert_allclose(getattr(a.ctf, f), getattr(b.ctf, f), atol=ctf_atol, rtol=1e-6)
    np.testing.assert_array_equal(a.image_indices, b.image_indices)
    assert list(a.image_paths) == list(b.image_paths) and a.box == b.box


def test_pose_and_ctf_pickles_match_the_star(tmp_path):
    star, particles = _star(str(tmp_path))
    pose, ctf = _cryodrgn_inputs(str(tmp_path), particles)
    ref = load_particles(star)
    stack = str(tmp_path / "particles.mrcs")
    # the same particles from each image source cryoDRGN reads
    (tmp_path / "list.txt").write_text("particles.mrcs\n\n")
    for images in (stack, str(tmp_path / "list.txt"), star):
        data = load_particles(images, poses=pose, ctf=ctf)
        _same(data, ref)
        assert data.source == os.path.abspath(images) and data.table is None
    # rotations are RELION's A, translations RELION's origin over the box, same sign
    rots, trans = pickle.load(open(pose, "rb"))
    np.testing.assert_allclose(ref.rotations, rots, atol=1e-7)
    np.testing.assert_allclose(ref.shifts, trans * BOX * APIX, atol=1e-6)
    # a pair of rotation and translation pickles
    pair = (_dump(tmp_path / "rot.pkl", rots), _dump(tmp_path / "trans.pkl", trans))
    _same(read_cryodrgn(stack, pair, ctf), ref)
    # rotations only: no shifts
    only = read_cryodrgn(stack, _dump(tmp_path / "r.pkl", rots), ctf)
    np.testing.assert_array_equal(only.shifts, 0)


def test_downsampled_images_and_export(tmp_path):
    # cryoDRGN's ctf.pkl keeps the box and pixel size it was parsed at; for images
    # downsampled to d afterwards the pixel size is D * apix / d and the fractional
    # translations stay the same.
    star, particles = _star(str(tmp_path))
    pose, ctf = _cryodrgn_inputs(str(tmp_path), particles)
    _stack(str(tmp_path / "small.mrcs"), N, box=8, apix=APIX * 2)
    data = load_particles(str(tmp_path / "small.mrcs"), poses=pose, ctf=ctf)
    ref = load_particles(star)
    assert data.box == 8
    np.testing.assert_allclose(data.apix, 2 * APIX, rtol=1e-6)
    np.testing.assert_allclose(data.shifts, ref.shifts, atol=1e-6)
    # exported as a RELION .star, read back
    out = str(tmp_path / "subset.star")
    write_subset(data, [4, 1], out)
    back = load_particles(out)
    np.testing.assert_allclose(back.rotations, data.rotations[[4, 1]], atol=1e-6)
    np.testing.assert_allclose(back.shifts, data.shifts[[4, 1]], atol=1e-5)


def test_ind_selects_particles(tmp_path):
    star, particles = _star(str(tmp_path))
    pose, ctf = _cryodrgn_inputs(str(tmp_path), particles)
    ref = load_particles(star)
    stack = str(tmp_path / "particles.mrcs")
    ind = np.array([5, 0, 3])
    for given in (ind, _dump(tmp_path / "ind.pkl", ind)):
        _same(load_particles(stack, poses=pose, ctf=ctf, ind=given), ref.subset(ind))
    # poses already selected (cryoDRGN accepts them too); the CTF must be full length
    rots, trans = pickle.load(open(pose, "rb"))
    sel = _dump(tmp_path / "pose_sel.pkl", (rots[ind], trans[ind]))
    _same(read_cryodrgn(stack, sel, ctf, ind=ind), ref.subset(ind))
    with pytest.raises(ParticleFileError, match="index 6 .*out of range for 6 images"):
        read_cryodrgn(stack, pose, ctf, ind=[1, 6])


def test_cryosparc_poses_the_cryodrgn_way(tmp_path):
    # parse_pose_csparc: rots = expmap(alignments3D/pose) transposed; trans = shift / D
    # (times 2 with --hetrefine); parse_ctf_csparc: angles in degrees.
    _stack(str(tmp_path / "particles.mrcs"), N)
    pose = RNG.normal(size=(N, 3)).astype(np.float32)
    shift = RNG.uniform(-2, 2, (N, 2)).astype(np.float32)
    rec = np.zeros(N, dtype=[("uid", "<u8"), ("blob/path", "S20"), ("blob/idx", "<u4"),
                             ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"),
                             ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"),
                             ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
                             ("alignments3D/pose", "<f4", (3,)), ("alignments3D/shift", "<f4", (2,)),
                             ("alignments3D/psize_A", "<f4")])
    rec["uid"], rec["blob/path"], rec["blob/idx"] = np.arange(N), b"particles.mrcs", np.arange(N)
    rec["blob/shape"], rec["blob/psize_A"], rec["alignments3D/psize_A"] = BOX, APIX, APIX
    rec["ctf/accel_kv"], rec["ctf/cs_mm"], rec["ctf/amp_contrast"] = 300, 2.7, 0.1
    rec["ctf/df1_A"], rec["ctf/df2_A"], rec["ctf/df_angle_rad"] = 15000, 14000, 0.5
    rec["alignments3D/pose"], rec["alignments3D/shift"] = pose, shift
    cs = str(tmp_path / "particles.cs")
    with open(cs, "wb") as f:
        np.save(f, rec)
    rots = np.swapaxes(Rotation.from_rotvec(pose.astype(np.float64)).as_matrix(), 1, 2)
    ctf = np.zeros((N, 9), np.float32)
    ctf[:] = [BOX, APIX, 15000, 14000, np.rad2deg(np.float32(0.5)), 300, 2.7, 0.1, 0]
    pkl_pose = _dump(tmp_path / "pose.pkl", (rots, shift.astype(np.float64) / BOX))
    pkl_ctf = _dump(tmp_path / "ctf.pkl", ctf)
    ref = load_particles(cs)
    for images in (str(tmp_path / "particles.mrcs"), cs):
        _same(load_particles(images, poses=pkl_pose, ctf=pkl_ctf), ref, ctf_atol=1e-3)


@pytest.mark.parametrize("case,match", [
    ("pixels", r"translation 1 is .*expected fractions of the box"),
    ("rows", r"pose.pkl: 5 rows of rotations for 6 images; expected one row per image"),
    ("columns", r"ctf.pkl: CTF parameters of shape \(6, 7\); expected an \(N, 9\) array"),
    ("not_rotation", r"rotation 2 is not a rotation matrix"),
    ("apix", r"ctf.pkl: column 2 \(pixel size \(A\)\), row 1: 0; expected a positive value"),
    ("no_ctf", r"need both poses \(pose.pkl\) and ctf"),
    ("code", r"pose.pkl: not a readable cryoDRGN pose pickle .*posix.system|os.system"),
])
def test_bad_inputs_name_file_and_field(tmp_path, case, match):
    star, particles = _star(str(tmp_path))
    pose, ctf = _cryodrgn_inputs(str(tmp_path), particles)
    rots, trans = pickle.load(open(pose, "rb"))
    c = pickle.load(open(ctf, "rb"))
    if case == "pixels":
        _dump(pose, (rots, trans * BOX))
    elif case == "rows":
        _dump(pose, (rots[:5], trans[:5]))
    elif case == "columns":
        _dump(ctf, c[:, :7])
    elif case == "not_rotation":
        rots[1] *= 2
        _dump(pose, (rots, trans))
    elif case == "apix":
        c[0, 1] = 0
        _dump(ctf, c)
    elif case == "code":
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'ran'}",))
        _dump(pose, Evil())
    with pytest.raises(ParticleFileError, match=match):
        load_particles(str(tmp_path / "particles.mrcs"), poses=pose, ctf=None if case == "no_ctf" else ctf)
    assert not (tmp_path / "ran").exists()


def test_images_without_metadata(tmp_path):
    _stack(str(tmp_path / "particles.mrcs"), 2)
    with pytest.raises(ParticleFileError, match="images without metadata; give the poses and the CTF"):
        load_particles(str(tmp_path / "particles.mrcs"))
    (tmp_path / "list.txt").write_text("particles.mrcs\nmissing.mrcs\n")
    with pytest.raises(ParticleFileError, match="missing.mrcs .line 2. not found"):
        read_cryodrgn(str(tmp_path / "list.txt"), "p.pkl", "c.pkl")
