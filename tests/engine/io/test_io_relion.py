"""RELION .star reading and writing, against files written with starfile and mrcfile."""

import os
import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from gaussianem.errors import ParticleFileError
from gaussianem.io.particle_data import ParticleFileWarning
from gaussianem.io.particles import load_particles
from gaussianem.io.particles import write_subset
from gaussianem.io.relion import read_star
from gaussianem.io.relion_write import write_star
from gaussianem.physics import poses


def _stack(path, n, box=16, ny=None, value=0.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.full((n, ny or box, box), value, np.float32))
        m.set_image_stack()
        m.voxel_size = 1.0


ROT = np.array([10.0, -120.0, 45.0, 170.0])
TILT = np.array([20.0, 90.0, 135.0, 5.0])
PSI = np.array([-30.0, 60.0, 0.0, -175.0])


def _relion30(folder):
    """RELION 3.0 file: one table, origins in pixels, pixel size from detector/mag."""
    _stack(os.path.join(folder, "Extract", "a.mrcs"), 4)
    df = pd.DataFrame({
        "rlnImageName": ["000001@Extract/a.mrcs", "3@Extract/a.mrcs", "000002@Extract/a.mrcs",
                         "4@Extract/a.mrcs"],
        "rlnAngleRot": ROT, "rlnAngleTilt": TILT, "rlnAnglePsi": PSI,
        "rlnOriginX": [1.5, -2.0, 0.0, 3.0], "rlnOriginY": [0.5, 1.0, -4.0, 0.0],
        "rlnDefocusU": [10000.0, 12000.0, 14000.0, 16000.0],
        "rlnDefocusV": [9500.0, 11000.0, 13000.0, 15500.0],
        "rlnDefocusAngle": [10.0, 20.0, 30.0, 40.0],
        "rlnVoltage": [300.0, 300.0, 200.0, 300.0],
        "rlnSphericalAberration": [2.7, 2.7, 2.0, 2.7],
        "rlnAmplitudeContrast": [0.1, 0.1, 0.07, 0.1],
        "rlnDetectorPixelSize": [5.0, 5.0, 5.0, 5.0],
        "rlnMagnification": [25000.0, 25000.0, 25000.0, 25000.0],
    })
    path = os.path.join(folder, "particles30.star")
    starfile.write(df, path)
    return path, df


def _relion31(folder, name="run_data.star", optics_updates=None, particle_updates=None,
              image_prefix="Extract/job002/"):
    """RELION 3.1 file with two optics groups of different pixel size, voltage and Cs."""
    _stack(os.path.join(folder, image_prefix, "g1.mrcs"), 2, value=1.0)
    _stack(os.path.join(folder, image_prefix, "g2.mrcs"), 2, value=2.0)
    optics = pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1", "opticsGroup2"], "rlnOpticsGroup": [1, 2],
        "rlnMtfFileName": ["mtf_k3.star", "mtf_k2.star"],
        "rlnImagePixelSize": [1.0, 1.5], "rlnImageSize": [16, 16], "rlnImageDimensionality": [2, 2],
        "rlnVoltage": [300.0, 200.0], "rlnSphericalAberration": [2.7, 0.01],
        "rlnAmplitudeContrast": [0.1, 0.07],
    })
    particles = pd.DataFrame({
        "rlnImageName": [f"000001@{image_prefix}g1.mrcs", f"000001@{image_prefix}g2.mrcs",
                         f"000002@{image_prefix}g1.mrcs", f"000002@{image_prefix}g2.mrcs"],
        "rlnAngleRot": ROT, "rlnAngleTilt": TILT, "rlnAnglePsi": PSI,
        "rlnOriginXAngst": [1.5, -2.25, 0.0, 3.0], "rlnOriginYAngst": [0.5, 1.5, -4.0, 0.0],
        "rlnDefocusU": [10000.0, 12000.0, 14000.0, 16000.0],
        "rlnDefocusV": [9500.0, 11000.0, 13000.0, 15500.0],
        "rlnDefocusAngle": [10.0, 20.0, 30.0, 40.0],
        "rlnPhaseShift": [0.0, 0.0, 45.0, 0.0], "rlnCtfBfactor": [0.0, 10.0, 0.0, 0.0],
        "rlnOpticsGroup": [1, 2, 1, 2], "rlnClassNumber": [1, 1, 2, 2],
        "rlnRandomSubset": [1, 2, 1, 2], "rlnMicrographName": ["m1.mrc", "m2.mrc", "m1.mrc", "m2.mrc"],
    })
    for k, v in (optics_updates or {}).items():
        optics[k] = v
    for k, v in (particle_updates or {}).items():
        particles[k] = v
    path = os.path.join(folder, name)
    starfile.write({"optics": optics, "particles": particles}, path)
    return path, optics, particles


def test_relion30(tmp_path):
    path, df = _relion30(str(tmp_path))
    data = read_star(path)
    assert len(data) == 4 and data.box == 16
    np.testing.assert_allclose(data.apix, 2.0)  # 5 um * 1e4 / 25000
    np.testing.assert_allclose(data.shifts[:, 0], df.rlnOriginX * 2.0)  # pixels -> Angstrom
    np.testing.assert_allclose(data.shifts[:, 1], df.rlnOriginY * 2.0)
    np.testing.assert_allclose(data.rotations, poses.euler_to_matrix(ROT, TILT, PSI))
    np.testing.assert_allclose(data.ctf.voltage, df.rlnVoltage)
    np.testing.assert_allclose(data.ctf.cs, df.rlnSphericalAberration)
    np.testing.assert_allclose(data.ctf.amp_contrast, df.rlnAmplitudeContrast)
    np.testing.assert_allclose(data.ctf.defocus_angle, df.rlnDefocusAngle)
    np.testing.assert_allclose(data.ctf.phase_shift, 0.0)  # absent -> 0
    np.testing.assert_allclose(data.ctf.bfactor, 0.0)
    np.testing.assert_array_equal(data.image_indices, [0, 2, 1, 3])
    stack = os.path.join(str(tmp_path), "Extract", "a.mrcs")
    assert all(p == stack for p in data.image_paths)
    np.testing.assert_array_equal(data.optics_group, [1, 1, 2, 1])  # by unique optics values
    assert data.source == path and data.table.attrs["optics"] is None


def test_relion31_two_optics_groups(tmp_path):
    path, optics, particles = _relion31(str(tmp_path))
    data = load_particles(path)
    np.testing.assert_allclose(data.apix, [1.0, 1.5, 1.0, 1.5])
    np.testing.assert_allclose(data.ctf.voltage, [300, 200, 300, 200])
    np.testing.assert_allclose(data.ctf.cs, [2.7, 0.01, 2.7, 0.01])
    np.testing.assert_allclose(data.ctf.amp_contrast, [0.1, 0.07, 0.1, 0.07])
    np.testing.assert_allclose(data.shifts, particles[["rlnOriginXAngst", "rlnOriginYAngst"]])
    np.testing.assert_allclose(data.ctf.phase_shift, [0, 0, 45, 0])
    np.testing.assert_allclose(data.ctf.bfactor, [0, 10, 0, 0])
    np.testing.assert_allclose(data.ctf.defocus_u, particles.rlnDefocusU)
    np.testing.assert_array_equal(data.optics_group, [1, 2, 1, 2])
    np.testing.assert_array_equal(data.image_indices, [0, 0, 1, 1])
    np.testing.assert_allclose(data.rotations, poses.euler_to_matrix(ROT, TILT, PSI))
    assert data.box == 16
    assert data.image_paths[1] == os.path.join(str(tmp_path), "Extract", "job002", "g2.mrcs")


def test_image_names_from_project_dir_and_datadir(tmp_path):
    # RELION writes stack paths relative to the project directory, two levels above the
    # job directory that holds the .star file.
    project = tmp_path / "project"
    job = project / "Refine3D" / "job010"
    job.mkdir(parents=True)
    path, _, _ = _relion31(str(project))  # writes the stacks in the project
    os.replace(path, job / "run_data.star")
    data = read_star(str(job / "run_data.star"))
    assert data.image_paths[0] == str(project / "Extract" / "job002" / "g1.mrcs")
    # datadir: the named path below it, or just the file name in it
    flat = tmp_path / "flat"
    _stack(str(flat / "g1.mrcs"), 2)
    _stack(str(flat / "g2.mrcs"), 2)
    data = read_star(str(job / "run_data.star"), datadir=str(flat))
    assert data.image_paths[1] == str(flat / "g2.mrcs")
    # absolute names are used as they are
    absolute = str(project / "Extract" / "job002" / "g1.mrcs")
    path2, _, _ = _relion31(str(tmp_path / "abs"), particle_updates={
        "rlnImageName": [f"1@{absolute}", f"2@{absolute}", f"1@{absolute}", f"2@{absolute}"]})
    assert read_star(path2).image_paths[3] == absolute
    # absolute names from another machine, found by file name in datadir
    path3, _, _ = _relion31(str(tmp_path / "moved"), particle_updates={
        "rlnImageName": ["1@/elsewhere/g1.mrcs", "1@/elsewhere/g2.mrcs",
                         "2@/elsewhere/g1.mrcs", "2@/elsewhere/g2.mrcs"]})
    assert read_star(path3, datadir=str(flat)).image_paths[2] == str(flat / "g1.mrcs")
    with pytest.raises(ParticleFileError, match="/elsewhere/g1.mrcs"):
        read_star(path3)


def test_missing_stack_names_file_and_stack(tmp_path):
    path, _, _ = _relion31(str(tmp_path))
    os.remove(os.path.join(str(tmp_path), "Extract", "job002", "g2.mrcs"))
    with pytest.raises(ParticleFileError) as e:
        read_star(path)
    assert path in str(e.value) and "Extract/job002/g2.mrcs" in str(e.value)
    assert "row 2" in str(e.value)


@pytest.mark.parametrize("block,column", [("particles", "rlnAngleTilt"), ("particles", "rlnDefocusV"),
                                          ("optics", "rlnVoltage"),
                                          ("particles", "rlnImageName")])
def test_missing_columns(tmp_path, block, column):
    path, optics, particles = _relion31(str(tmp_path))
    table = optics if block == "optics" else particles
    blocks = {"optics": optics, "particles": particles}
    blocks[block] = table.drop(columns=[column])
    starfile.write(blocks, path)
    with pytest.raises(ParticleFileError) as e:
        read_star(path)
    assert path in str(e.value) and column in str(e.value) and "missing column" in str(e.value)


def test_missing_amplitude_contrast_is_relions_default(tmp_path):
    """RELION 3.0 files (and Warp's) may lack rlnAmplitudeContrast: RELION takes 0.1, so
    do we, with a warning."""
    path, df = _relion30(str(tmp_path))
    starfile.write(df.drop(columns=["rlnAmplitudeContrast"]), path)
    with pytest.warns(ParticleFileWarning, match="rlnAmplitudeContrast.*0.1"):
        data = read_star(path)
    np.testing.assert_allclose(data.ctf.amp_contrast, 0.1)
    np.testing.assert_array_equal(data.optics_group, [1, 1, 2, 1])


def test_duplicate_particles_are_reported(tmp_path):
    """The same image named twice (same stack and index, however the number is written) is
    read, with a warning that counts the repeats and names one."""
    path, df = _relion30(str(tmp_path))
    df["rlnImageName"] = ["000001@Extract/a.mrcs", "3@Extract/a.mrcs", "1@Extract/a.mrcs",
                          "3@Extract/a.mrcs"]
    starfile.write(df, path)
    with pytest.warns(ParticleFileWarning, match=r"2 of 4 .*(1|3)@.*a\.mrcs") as w:
        data = read_star(path)
    assert len(data) == 4 and sum("earlier row" in str(x.message) for x in w) == 1
    with warnings.catch_warnings(record=True) as w:     # a file without repeats: no such warning
        warnings.simplefilter("always")
        read_star(_relion30(str(tmp_path / "clean"))[0])
    assert not any("earlier row" in str(x.message) for x in w)


def test_pixel_size_missing(tmp_path):
    path, df = _relion30(str(tmp_path))
    starfile.write(df.drop(columns=["rlnMagnification"]), path)
    with pytest.raises(ParticleFileError, match="pixel size missing.*rlnImagePixelSize") as e:
        read_star(path)
    assert path in str(e.value)


def test_stack_shorter_than_index(tmp_path):
    path, _, particles = _relion31(str(tmp_path), particle_updates={
        "rlnImageName": ["1@Extract/job002/g1.mrcs", "1@Extract/job002/g2.mrcs",
                         "2@Extract/job002/g1.mrcs", "000005@Extract/job002/g2.mrcs"]})
    with pytest.raises(ParticleFileError) as e:
        read_star(path)
    msg = str(e.value)
    assert path in msg and "g2.mrcs" in msg and "row 4" in msg and "image 5" in msg
    assert "only 2 image" in msg


def test_box_mismatches(tmp_path):
    # optics groups disagree on rlnImageSize
    path, _, _ = _relion31(str(tmp_path / "a"), optics_updates={"rlnImageSize": [16, 32]})
    with pytest.raises(ParticleFileError, match="rlnImageSize.*different") as e:
        read_star(path)
    assert path in str(e.value)
    # stacks of different sizes
    path, _, _ = _relion31(str(tmp_path / "b"), optics_updates={"rlnImageSize": [16, 16]})
    _stack(str(tmp_path / "b" / "Extract" / "job002" / "g2.mrcs"), 2, box=20)
    with pytest.raises(ParticleFileError, match="different box sizes") as e:
        read_star(path)
    assert "g1.mrcs" in str(e.value) and "g2.mrcs" in str(e.value)
    # the optics table says 32 but the stacks hold 16
    path, _, _ = _relion31(str(tmp_path / "c"), optics_updates={"rlnImageSize": [32, 32]})
    with pytest.raises(ParticleFileError, match="32 px.*16 px"):
        read_star(path)


def test_non_square_and_unreadable_stacks(tmp_path):
    path, _, _ = _relion31(str(tmp_path))
    g1 = str(tmp_path / "Extract" / "job002" / "g1.mrcs")
    _stack(g1, 2, box=16, ny=12)
    with pytest.raises(ParticleFileError, match="16 x 12.*square") as e:
        read_star(path)
    assert g1 in str(e.value)
    with open(g1, "wb") as f:
        f.write(b"garbage" * 10)
    with pytest.raises(ParticleFileError, match="not a readable MRC") as e:
        read_star(path)
    assert g1 in str(e.value)


def test_bad_values_and_groups(tmp_path):
    path, _, _ = _relion31(str(tmp_path / "a"), particle_updates={"rlnOpticsGroup": [1, 2, 3, 2]})
    with pytest.raises(ParticleFileError, match="row 3 is in optics group 3"):
        read_star(path)
    path, _, _ = _relion31(str(tmp_path / "b"), particle_updates={
        "rlnDefocusU": ["10000", "12000", "oops", "16000"]})
    with pytest.raises(ParticleFileError, match="rlnDefocusU, row 3: 'oops'"):
        read_star(path)
    path, _, _ = _relion31(str(tmp_path / "c"), particle_updates={
        "rlnImageName": ["1@Extract/job002/g1.mrcs", "x@Extract/job002/g2.mrcs",
                         "2@Extract/job002/g1.mrcs", "2@Extract/job002/g2.mrcs"]})
    with pytest.raises(ParticleFileError, match="rlnImageName, row 2"):
        read_star(path)
    bad = tmp_path / "notstar.star"
    bad.write_text("data_\nloop_\n_rlnFoo #1\n1\n")
    with pytest.raises(ParticleFileError, match="no particle table"):
        read_star(str(bad))


def test_write_star_roundtrip(tmp_path):
    path, _, _ = _relion31(str(tmp_path))
    data = read_star(path)
    out = str(tmp_path / "copy.star")
    write_star(out, data)
    back = read_star(out)
    for name in ("image_paths", "image_indices", "optics_group"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    np.testing.assert_allclose(back.rotations, data.rotations, atol=1e-6)
    np.testing.assert_allclose(back.shifts, data.shifts)
    np.testing.assert_allclose(back.apix, data.apix)
    for f in ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs", "amp_contrast",
              "phase_shift", "bfactor"):
        np.testing.assert_allclose(getattr(back.ctf, f), getattr(data.ctf, f))
    assert back.box == data.box
    written = starfile.read(out, always_dict=True)
    assert list(written) == ["optics", "particles"]
    assert written["particles"]["rlnImageName"][0] == "000001@Extract/job002/g1.mrcs"  # relative
    # a 3.0 source comes back with its optics values grouped
    path30, _ = _relion30(str(tmp_path / "r30"))
    d30 = read_star(path30)
    write_star(str(tmp_path / "r30" / "new.star"), d30)
    back30 = read_star(str(tmp_path / "r30" / "new.star"))
    np.testing.assert_allclose(back30.shifts, d30.shifts)
    np.testing.assert_allclose(back30.ctf.voltage, d30.ctf.voltage)
    assert len(starfile.read(str(tmp_path / "r30" / "new.star"))["optics"]) == 2


def test_write_star_refuses_mixed_group(tmp_path):
    data = read_star(_relion31(str(tmp_path))[0])
    data.optics_group[:] = 1
    with pytest.raises(ValueError, match="rlnVoltage varies within optics group 1"):
        write_star(str(tmp_path / "bad.star"), data)
    assert not os.path.exists(tmp_path / "bad.star")


def test_write_subset_keeps_original_columns(tmp_path):
    path, optics, particles = _relion31(str(tmp_path))
    data = read_star(path)
    out = str(tmp_path / "subset.star")
    write_subset(data, [3, 0], out)
    blocks = starfile.read(out, always_dict=True)
    pd.testing.assert_frame_equal(blocks["optics"], optics)
    expected = particles.iloc[[3, 0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(blocks["particles"], expected)
    sub = read_star(out)
    np.testing.assert_allclose(sub.rotations, data.rotations[[3, 0]])
    # a subset of a subset still refers to the original rows
    write_subset(data.subset([1, 2, 3]), np.array([False, False, True]), out)
    assert starfile.read(out, always_dict=True)["particles"]["rlnRandomSubset"].tolist() == [2]
    # a star source exported as .cs
    write_subset(data, [1, 2], str(tmp_path / "subset.cs"))
    cs = load_particles(str(tmp_path / "subset.cs"))
    np.testing.assert_allclose(cs.rotations, data.rotations[[1, 2]], atol=1e-5)
    np.testing.assert_allclose(cs.shifts, data.shifts[[1, 2]], atol=1e-5)


def test_write_subset_relion30(tmp_path):
    path, df = _relion30(str(tmp_path))
    out = str(tmp_path / "sub30.star")
    write_subset(read_star(path), [2], out)
    back = starfile.read(out)
    assert isinstance(back, pd.DataFrame) and list(back.columns) == list(df.columns)
    assert read_star(out).ctf.voltage.tolist() == [200.0]
