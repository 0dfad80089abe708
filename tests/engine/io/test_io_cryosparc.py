"""cryoSPARC .cs reading and writing, against record arrays saved with np.save."""

import os

import mrcfile
import numpy as np
import pytest
from numpy.lib.recfunctions import drop_fields

from gaussianem.errors import ParticleFileError
from gaussianem.io.cryosparc import read_cs, write_cs
from gaussianem.io.particles import load_particles
from gaussianem.io.particles import write_subset
from gaussianem.physics import poses

T = 0.7  # radians

POSES = np.array([[0.0, 0.0, T],      # about z
                  [0.0, T, 0.0],      # about y
                  [0.3, -0.5, 1.1],
                  [0.0, 0.0, 0.0]])
SHIFTS_PX = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0], [-1.5, 1.5]])
UIDS = np.array([901, 17, 4242, 55], dtype=np.uint64)

MAIN_FIELDS = [("uid", "<u8"), ("alignments3D/pose", "<f4", (3,)),
               ("alignments3D/shift", "<f4", (2,)), ("alignments3D/psize_A", "<f4"),
               ("alignments3D/class_posterior", "<f4")]
PT_FIELDS = [("uid", "<u8"), ("blob/path", "S40"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
             ("blob/psize_A", "<f4"), ("blob/sign", "<f4"), ("ctf/exp_group_id", "<u4"),
             ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"),
             ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
             ("ctf/phase_shift_rad", "<f4")]


def _stack(path, n, box=16):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.zeros((n, box, box), np.float32))
        m.set_image_stack()
        m.voxel_size = 1.2


def _records(fields, n=4):
    return np.zeros(n, dtype=fields)


def _fill_main(rec):
    rec["uid"] = UIDS
    rec["alignments3D/pose"] = POSES
    rec["alignments3D/shift"] = SHIFTS_PX
    rec["alignments3D/psize_A"] = 1.2
    rec["alignments3D/class_posterior"] = 1.0
    return rec


def _fill_blob_ctf(rec):
    rec["uid"] = UIDS
    rec["blob/path"] = [b">J3/extract/mic1_particles.mrcs", b"J3/extract/mic2_particles.mrcs",
                        b">J3/extract/mic1_particles.mrcs", b"J3/extract/mic2_particles.mrcs"]
    rec["blob/idx"] = [0, 1, 2, 0]
    rec["blob/shape"] = 16
    rec["blob/psize_A"] = 1.2
    rec["blob/sign"] = -1.0
    rec["ctf/exp_group_id"] = 1
    rec["ctf/accel_kv"] = 300
    rec["ctf/cs_mm"] = 2.7
    rec["ctf/amp_contrast"] = 0.1
    rec["ctf/df1_A"] = [10000, 11000, 12000, 13000]
    rec["ctf/df2_A"] = [9000, 10500, 11900, 12000]
    rec["ctf/df_angle_rad"] = [0.0, np.pi / 2, np.pi / 4, -0.3]
    rec["ctf/phase_shift_rad"] = [0.0, 0.0, np.pi / 2, 0.0]
    return rec


def _project(tmp_path):
    """A cryoSPARC project: stacks in J3/extract, the particle .cs in J5."""
    project = tmp_path / "P1"
    _stack(str(project / "J3" / "extract" / "mic1_particles.mrcs"), 3)
    _stack(str(project / "J3" / "extract" / "mic2_particles.mrcs"), 2)
    (project / "J5").mkdir()
    return project


def _save(path, rec):
    with open(path, "wb") as f:
        np.save(f, rec)
    return str(path)


def _full_cs(tmp_path):
    project = _project(tmp_path)
    rec = _fill_blob_ctf(_fill_main(_records(
        MAIN_FIELDS + [f for f in PT_FIELDS if f[0] != "uid"])))
    return project, rec, _save(project / "J5" / "J5_particles.cs", rec)


def test_rotvec_conventions():
    # Rodrigues of t about z is [[c,-s,0],[s,c,0],[0,0,1]]; cryoSPARC's pose matrix is the
    # transpose of RELION's A, so A = [[c,s,0],[-s,c,0],[0,0,1]], which is RELION's matrix
    # for (rot=0, tilt=0, psi=t) (A[0,1] = sin(psi)) and equally for (rot=t, 0, 0).
    c, s = np.cos(T), np.sin(T)
    a_z = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    np.testing.assert_allclose(poses.cryosparc_pose_to_matrix([0, 0, T]), a_z, atol=1e-12)
    np.testing.assert_allclose(poses.euler_to_matrix(0, 0, np.rad2deg(T)), a_z, atol=1e-12)
    np.testing.assert_allclose(poses.euler_to_matrix(np.rad2deg(T), 0, 0), a_z, atol=1e-12)
    # t about y: Rodrigues [[c,0,s],[0,1,0],[-s,0,c]], transposed; RELION (0, tilt=t, 0)
    # has A[0,2] = -sin(tilt) and A[2,0] = sin(tilt).
    a_y = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    np.testing.assert_allclose(poses.cryosparc_pose_to_matrix([0, T, 0]), a_y, atol=1e-12)
    np.testing.assert_allclose(poses.euler_to_matrix(0, np.rad2deg(T), 0), a_y, atol=1e-12)


def test_read_cs(tmp_path):
    project, rec, path = _full_cs(tmp_path)
    data = load_particles(path)
    assert len(data) == 4 and data.box == 16
    np.testing.assert_allclose(data.rotations, poses.cryosparc_pose_to_matrix(POSES.astype(np.float32)))
    c, s = np.cos(T), np.sin(T)
    np.testing.assert_allclose(data.rotations[0], poses.euler_to_matrix(0, 0, np.rad2deg(T)), atol=1e-6)
    np.testing.assert_allclose(data.rotations[0], [[c, s, 0], [-s, c, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(data.rotations[1], poses.euler_to_matrix(0, np.rad2deg(T), 0), atol=1e-6)
    np.testing.assert_allclose(data.rotations[3], np.eye(3))
    np.testing.assert_allclose(data.shifts, SHIFTS_PX * 1.2, rtol=1e-6)  # pixels -> Angstrom
    np.testing.assert_allclose(data.apix, 1.2, rtol=1e-6)
    np.testing.assert_allclose(data.ctf.defocus_angle, [0, 90, 45, np.rad2deg(-0.3)], atol=1e-4)
    np.testing.assert_allclose(data.ctf.phase_shift, [0, 0, 90, 0], atol=1e-4)
    np.testing.assert_allclose(data.ctf.defocus_u, rec["ctf/df1_A"])
    np.testing.assert_allclose(data.ctf.voltage, 300)
    np.testing.assert_allclose(data.ctf.bfactor, 0)  # absent -> 0
    np.testing.assert_array_equal(data.image_indices, [0, 1, 2, 0])
    mic1 = str(project / "J3" / "extract" / "mic1_particles.mrcs")  # '>' dropped, found in the project
    assert data.image_paths[0] == mic1 and data.image_paths[2] == mic1
    np.testing.assert_array_equal(data.optics_group, 1)
    np.testing.assert_array_equal(data.table["uid"], UIDS)


def test_shift_uses_alignment_pixel_size(tmp_path):
    project, rec, _ = _full_cs(tmp_path)
    rec["alignments3D/psize_A"] = 2.4
    data = read_cs(_save(project / "J5" / "other.cs", rec))
    np.testing.assert_allclose(data.shifts, SHIFTS_PX * 2.4, rtol=1e-6)
    np.testing.assert_allclose(data.apix, 1.2, rtol=1e-6)


def test_passthrough_joins_on_uid(tmp_path):
    project = _project(tmp_path)
    main = _save(project / "J5" / "J5_particles.cs", _fill_main(_records(MAIN_FIELDS)))
    pt_rec = _fill_blob_ctf(_records(PT_FIELDS))[[2, 0, 3, 1]]  # another row order
    pt = _save(project / "J5" / "J5_passthrough_particles.cs", pt_rec)
    with pytest.raises(ParticleFileError) as e:
        read_cs(main)
    assert main in str(e.value) and "blob/psize_A" in str(e.value)
    data = read_cs(main, passthrough=pt)
    np.testing.assert_allclose(data.ctf.defocus_u, [10000, 11000, 12000, 13000])
    np.testing.assert_array_equal(data.image_indices, [0, 1, 2, 0])
    np.testing.assert_allclose(data.rotations, poses.cryosparc_pose_to_matrix(POSES.astype(np.float32)))
    # a particle without a passthrough row
    _save(pt, pt_rec[:3])
    with pytest.raises(ParticleFileError, match=r"row 2 \(uid 17\).*passthrough"):
        read_cs(main, passthrough=pt)


def test_write_cs_roundtrip(tmp_path):
    project, _, path = _full_cs(tmp_path)
    data = read_cs(path)
    out = str(project / "J5" / "copy.cs")
    write_cs(out, data)
    back = read_cs(out)
    np.testing.assert_array_equal(back.image_paths, data.image_paths)
    np.testing.assert_array_equal(back.image_indices, data.image_indices)
    np.testing.assert_allclose(back.rotations, data.rotations, atol=1e-6)
    np.testing.assert_allclose(back.shifts, data.shifts, atol=1e-5)
    np.testing.assert_allclose(back.apix, data.apix)
    for f in ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs", "amp_contrast",
              "phase_shift", "bfactor"):
        np.testing.assert_allclose(getattr(back.ctf, f), getattr(data.ctf, f), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(back.table["uid"], UIDS)
    rec = np.load(out)
    assert os.path.isabs(rec["blob/path"][0].decode())  # stacks outside the .cs folder


def test_write_subset_of_cs(tmp_path):
    project = _project(tmp_path)
    main = _save(project / "J5" / "J5_particles.cs", _fill_main(_records(MAIN_FIELDS)))
    pt = _save(project / "J5" / "J5_passthrough_particles.cs", _fill_blob_ctf(_records(PT_FIELDS)))
    data = read_cs(main, passthrough=pt)
    out = str(project / "J5" / "subset.cs")
    write_subset(data.subset([3, 1, 2]), [0, 2], out)  # original rows 3 and 2
    rec = np.load(out)
    np.testing.assert_array_equal(rec["uid"], UIDS[[3, 2]])
    assert "alignments3D/class_posterior" in rec.dtype.names and "blob/sign" in rec.dtype.names
    sub = read_cs(out)  # stands alone: passthrough fields merged in
    np.testing.assert_allclose(sub.rotations, data.rotations[[3, 2]])
    # exported as .star
    write_subset(data, [0, 1], str(project / "J5" / "subset.star"))
    star = load_particles(str(project / "J5" / "subset.star"))
    np.testing.assert_allclose(star.rotations, data.rotations[[0, 1]], atol=1e-6)
    np.testing.assert_allclose(star.shifts, data.shifts[[0, 1]], atol=1e-5)


def test_cs_errors(tmp_path):
    project, rec, _ = _full_cs(tmp_path)
    folder = project / "J5"
    path = _save(folder / "nopose.cs", drop_fields(rec, "alignments3D/pose", usemask=False))
    with pytest.raises(ParticleFileError) as e:
        read_cs(path)
    assert path in str(e.value) and "alignments3D/pose" in str(e.value)
    bad = rec.copy()
    bad["blob/idx"][3] = 7
    path = _save(folder / "badidx.cs", bad)
    with pytest.raises(ParticleFileError, match=r"row 4 asks for image 8.*mic2_particles.mrcs.*only 2"):
        read_cs(path)
    bad = rec.copy()
    bad["blob/shape"][1] = (16, 12)
    path = _save(folder / "nonsquare.cs", bad)
    with pytest.raises(ParticleFileError, match=r"blob/shape', row 2.*square"):
        read_cs(path)
    junk = folder / "junk.cs"
    junk.write_bytes(b"not numpy")
    with pytest.raises(ParticleFileError, match="junk.cs.*not a readable"):
        read_cs(str(junk))
    with pytest.raises(ParticleFileError, match="unknown particle file type"):
        load_particles(str(folder / "particles.dat"))
    with pytest.raises(ParticleFileError, match="particles.txt: images without metadata"):
        load_particles(str(folder / "particles.txt"))
