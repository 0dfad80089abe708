"""MRC maps and stacks: gaussianem.io.mrc against files written with the mrcfile library."""

import os

import mrcfile
import numpy as np
import pytest

from gaussianem.errors import ParticleFileError
from gaussianem.io import mrc
from gaussianem.io.atomic import atomic_output


def _mrcfile_stack(path, data, apix=1.0):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.set_image_stack()
        m.voxel_size = apix


def test_image_stack_reads_selected_images(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 12, 12)).astype(np.float32)
    path = str(tmp_path / "s.mrcs")
    _mrcfile_stack(path, data, 1.3)
    stack = mrc.ImageStack(path)
    assert len(stack) == 7 and stack.shape == (7, 12, 12)
    assert stack.header.apix == pytest.approx(1.3)
    one = stack[4]
    assert one.shape == (1, 12, 12) and one.dtype == np.float32
    np.testing.assert_array_equal(one[0], data[4])
    many = stack[np.array([5, 0, 3])]  # any order, returned in the order asked
    np.testing.assert_array_equal(many, data[[5, 0, 3]])
    many[0] += 1  # a copy, not a view of the mapped file
    np.testing.assert_array_equal(stack[5][0], data[5])
    with pytest.raises(IndexError, match="out of range"):
        stack[7]


def test_image_stack_int16_and_single_image(tmp_path):
    data = np.arange(2 * 6 * 6, dtype=np.int16).reshape(2, 6, 6)
    p16 = str(tmp_path / "i16.mrcs")
    _mrcfile_stack(p16, data)
    out = mrc.ImageStack(p16)[[1, 0]]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data[[1, 0]].astype(np.float32))
    p1 = str(tmp_path / "one.mrc")
    with mrcfile.new(p1) as m:  # a single 2D image: mrcfile gives a 2D array
        m.set_data(np.ones((6, 6), np.float32))
    assert mrc.ImageStack(p1)[0].shape == (1, 6, 6)


def test_stack_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(mrc, "MAX_OPEN_STACKS", 2)
    monkeypatch.setattr(mrc, "_open_maps", type(mrc._open_maps)())     # this test's maps only
    stacks = []
    for k in range(4):
        p = str(tmp_path / f"{k}.mrcs")
        _mrcfile_stack(p, np.full((2, 4, 4), k, np.float32))
        stacks.append(mrc.ImageStack(p))
    for _ in range(2):
        for k, s in enumerate(stacks):
            assert s[1][0, 0, 0] == k
    assert len(mrc._open_maps) == 2


def test_write_stack_roundtrip(tmp_path):
    images = np.random.default_rng(1).normal(size=(3, 10, 10))
    path = str(tmp_path / "w.mrcs")
    mrc.write_stack(path, images, 2.5)
    with mrcfile.open(path) as m:
        assert m.is_image_stack()
        assert m.voxel_size.x == pytest.approx(2.5)
        np.testing.assert_allclose(m.data, images.astype(np.float32))
    assert os.listdir(tmp_path) == ["w.mrcs"]  # no temporary file left


def test_header_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nothere.mrcs")
    with pytest.raises(ParticleFileError, match="nothere.mrcs.*not found"):
        mrc.read_header(missing)
    junk = tmp_path / "junk.mrcs"
    junk.write_bytes(b"this is not an MRC file")
    with pytest.raises(ParticleFileError, match="junk.mrcs"):
        mrc.read_header(str(junk))
    trunc = str(tmp_path / "trunc.mrcs")
    _mrcfile_stack(trunc, np.zeros((4, 8, 8), np.float32))
    with open(trunc, "r+b") as f:
        f.truncate(1024 + 2 * 8 * 8 * 4)
    with pytest.raises(ParticleFileError, match=r"trunc\.mrcs.*truncated"):
        mrc.read_header(trunc)


def test_map_roundtrip_and_origin(tmp_path):
    vol = np.random.default_rng(2).normal(size=(6, 7, 8)).astype(np.float32)
    path = str(tmp_path / "map.mrc")
    mrc.write_map(path, vol, 1.7, origin_xyz=(-3.0, 4.0, 5.5))
    out, apix, origin = mrc.read_map(path)
    np.testing.assert_array_equal(out, vol)
    assert apix == pytest.approx(1.7)
    np.testing.assert_allclose(origin, [-3.0, 4.0, 5.5])
    mrc.write_map(path, vol * 2, 1.7)  # overwrite in place
    np.testing.assert_array_equal(mrc.read_map(path)[0], vol * 2)
    assert os.listdir(tmp_path) == ["map.mrc"]


def test_read_map_axis_order_and_nstart(tmp_path):
    vol = np.random.default_rng(3).normal(size=(4, 5, 6)).astype(np.float32)  # (z, y, x)
    path = str(tmp_path / "zyx.mrc")
    with mrcfile.new(path) as m:
        # columns run along z, rows along y, sections along x: file array is (x, y, z)
        m.set_data(np.ascontiguousarray(vol.transpose(2, 1, 0)))
        m.header.mapc, m.header.mapr, m.header.maps = 3, 2, 1
        m.voxel_size = 2.0
        m.header.nxstart, m.header.nystart, m.header.nzstart = 10, 20, 30  # col, row, section
    out, apix, origin = mrc.read_map(path)
    np.testing.assert_array_equal(out, vol)
    # nxstart belongs to the column axis (z), nzstart to the section axis (x)
    np.testing.assert_allclose(origin, [30 * 2.0, 20 * 2.0, 10 * 2.0])


def test_read_map_without_voxel_size(tmp_path):
    path = str(tmp_path / "nosize.mrc")
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((4, 4, 4), np.float32))
        m.voxel_size = 0.0
    with pytest.raises(ParticleFileError, match="nosize.mrc.*voxel size"):
        mrc.read_map(path)


def test_atomic_output_keeps_original_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(path) as tmp:
            with open(tmp, "w") as f:
                f.write("new, half written")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]
