"""cryoSPARC .cs files written for export: every field cryoSPARC's own particle outputs
carry, with its dtype and shape; uids kept from the source or new random 64-bit ones;
k-means labels in ``alignments3D/class``. Files are made here with mrcfile, starfile and
NumPy."""

import warnings

import mrcfile
import numpy as np
import pytest
from numpy.lib.recfunctions import drop_fields

from gaussianem.errors import InputError
from gaussianem.io.cryosparc import read_cs, write_cs
from gaussianem.io.particle_data import ParticleData, ParticleFileWarning
from gaussianem.io.particles import load_particles, write_subset
from gaussianem.io.relion import read_star
from gaussianem.io.relion_write import write_star
from gaussianem.physics import poses
from gaussianem.physics.ctf import CTFParams

N = 6

# The particle fields of cryoSPARC's own outputs: blob and ctf as in cryosparc-tools'
# test data set of extracted particles (tests/conftest.py), alignments3D as in a
# refinement's particles.cs (cryosparc-tools tests/data/4k_dataset.cs); strings are
# fixed-width bytes once saved.
CRYOSPARC_FIELDS = {
    "uid": ("<u8", ()),
    "blob/path": ("S", ()), "blob/idx": ("<u4", ()), "blob/shape": ("<u4", (2,)),
    "blob/psize_A": ("<f4", ()), "blob/sign": ("<f4", ()), "blob/import_sig": ("<u8", ()),
    "ctf/type": ("S", ()), "ctf/exp_group_id": ("<u4", ()), "ctf/accel_kv": ("<f4", ()),
    "ctf/cs_mm": ("<f4", ()), "ctf/amp_contrast": ("<f4", ()), "ctf/df1_A": ("<f4", ()),
    "ctf/df2_A": ("<f4", ()), "ctf/df_angle_rad": ("<f4", ()), "ctf/phase_shift_rad": ("<f4", ()),
    "ctf/scale": ("<f4", ()), "ctf/scale_const": ("<f4", ()), "ctf/shift_A": ("<f4", (2,)),
    "ctf/tilt_A": ("<f4", (2,)), "ctf/trefoil_A": ("<f4", (2,)), "ctf/tetra_A": ("<f4", (4,)),
    "ctf/anisomag": ("<f4", (4,)), "ctf/bfactor": ("<f4", ()),
    "alignments3D/split": ("<u4", ()), "alignments3D/shift": ("<f4", (2,)),
    "alignments3D/pose": ("<f4", (3,)), "alignments3D/psize_A": ("<f4", ()),
    "alignments3D/error": ("<f4", ()), "alignments3D/error_min": ("<f4", ()),
    "alignments3D/resid_pow": ("<f4", ()), "alignments3D/slice_pow": ("<f4", ()),
    "alignments3D/image_pow": ("<f4", ()), "alignments3D/cross_cor": ("<f4", ()),
    "alignments3D/alpha": ("<f4", ()), "alignments3D/alpha_min": ("<f4", ()),
    "alignments3D/weight": ("<f4", ()), "alignments3D/pose_ess": ("<f4", ()),
    "alignments3D/shift_ess": ("<f4", ()), "alignments3D/class_posterior": ("<f4", ()),
    "alignments3D/class": ("<u4", ()), "alignments3D/class_ess": ("<f4", ()),
}


def _check_fields(rec, n):
    assert set(rec.dtype.names) >= set(CRYOSPARC_FIELDS)
    for name, (kind, shape) in CRYOSPARC_FIELDS.items():
        dt, _ = rec.dtype.fields[name]
        base = dt.base if dt.shape else dt
        if kind == "S":
            assert base.kind == "S", name
        else:
            assert base == np.dtype(kind), (name, base)
        assert dt.shape == shape, (name, dt.shape)
        assert rec[name].shape == (n,) + shape


def _star(tmp_path, extra_columns=None, optics_extra=None):
    """A RELION file of N particles in two stacks (two optics groups)."""
    for k in (1, 2):
        with mrcfile.new(tmp_path / f"s{k}.mrcs", overwrite=True) as m:
            m.set_data(np.zeros((N, 8, 8), np.float32))
    rng = np.random.default_rng(3)
    ctf = CTFParams(rng.uniform(9000, 15000, N), rng.uniform(9000, 15000, N), rng.uniform(-90, 90, N),
                    np.repeat([300.0, 200.0], N // 2), np.full(N, 2.7), np.full(N, 0.1),
                    np.zeros(N), np.zeros(N))
    data = ParticleData(
        image_paths=np.array([str(tmp_path / f"s{1 + i // 3}.mrcs") for i in range(N)], dtype=object),
        image_indices=np.arange(N) % 3, rotations=poses.euler_to_matrix(*rng.uniform(-170, 170, (3, N))),
        shifts=rng.normal(0, 3, (N, 2)), ctf=ctf, apix=np.full(N, 1.5), box=8,
        optics_group=np.repeat([1, 2], N // 2), source=str(tmp_path / "p.star"))
    path = tmp_path / "p.star"
    write_star(path, data, columns=extra_columns)
    if optics_extra:
        import starfile
        tables = starfile.read(path, always_dict=True)
        for k, v in optics_extra.items():
            tables["optics"][k] = v
        starfile.write(tables, path)
    return read_star(path)


def test_cs_from_star_has_every_cryosparc_field(tmp_path):
    data = _star(tmp_path, extra_columns={"rlnRandomSubset": [1, 2, 2, 1, 1, 2]})
    out = tmp_path / "sub.cs"
    write_cs(out, data, sign=-1.0)
    rec = np.load(out)
    _check_fields(rec, N)
    assert rec.dtype.names[0] == "uid"
    assert np.unique(rec["uid"]).size == N and rec["uid"].max() > 2**40   # random 64-bit, not 0..N-1
    np.testing.assert_array_equal(rec["blob/sign"], -1.0)
    assert set(rec["ctf/type"]) == {b"imported"}
    np.testing.assert_array_equal(rec["ctf/exp_group_id"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(rec["alignments3D/split"], [0, 1, 1, 0, 0, 1])   # rlnRandomSubset - 1
    for name in ("ctf/anisomag", "ctf/tilt_A", "ctf/trefoil_A", "ctf/tetra_A", "ctf/shift_A",
                 "alignments3D/error", "blob/import_sig", "ctf/scale_const"):
        assert not np.any(rec[name]), name
    np.testing.assert_array_equal(rec["ctf/scale"], 1.0)
    np.testing.assert_array_equal(rec["alignments3D/alpha"], 1.0)
    np.testing.assert_array_equal(rec["alignments3D/class_posterior"], 1.0)
    np.testing.assert_array_equal(rec["alignments3D/class"], 0)
    np.testing.assert_array_equal(rec["blob/shape"], 8)
    back = read_cs(out)                  # and read back as it was
    np.testing.assert_allclose(back.rotations, data.rotations, atol=1e-5)
    np.testing.assert_allclose(back.shifts, data.shifts, atol=1e-4)
    np.testing.assert_allclose(back.ctf.defocus_u, data.ctf.defocus_u, rtol=1e-6)
    np.testing.assert_allclose(back.ctf.defocus_angle, data.ctf.defocus_angle, atol=1e-4)
    np.testing.assert_array_equal(back.image_paths, data.image_paths)
    np.testing.assert_array_equal(back.image_indices, data.image_indices)
    np.testing.assert_array_equal(back.table["uid"], rec["uid"])
    # without rlnRandomSubset the half sets are the uids' parity; contrast +1 by default
    plain = _star(tmp_path)
    write_cs(out, plain)
    rec = np.load(out)
    np.testing.assert_array_equal(rec["alignments3D/split"], rec["uid"] % 2)
    np.testing.assert_array_equal(rec["blob/sign"], 1.0)


def test_uids_survive_round_trips(tmp_path):
    data = _star(tmp_path)
    first = tmp_path / "a.cs"
    write_cs(first, data)
    uid = np.load(first)["uid"]
    # .cs -> subset as rows, and -> converted again: the uids stay
    src = read_cs(first)
    write_subset(src, [4, 1], tmp_path / "rows.cs")
    np.testing.assert_array_equal(np.load(tmp_path / "rows.cs")["uid"], uid[[4, 1]])
    write_cs(tmp_path / "again.cs", src.subset([2, 5]))
    np.testing.assert_array_equal(np.load(tmp_path / "again.cs")["uid"], uid[[2, 5]])
    assert np.load(tmp_path / "again.cs").dtype == np.load(first).dtype
    # a .star converted by pyem's csparc2star keeps the uids in ucsfUid
    pyem = _star(tmp_path, extra_columns={"ucsfUid": uid})
    write_cs(tmp_path / "pyem.cs", pyem)
    np.testing.assert_array_equal(np.load(tmp_path / "pyem.cs")["uid"], uid)
    assert np.load(tmp_path / "pyem.cs")["uid"].dtype == np.uint64
    # a .star without them gets new ones each time
    write_cs(tmp_path / "new.cs", data)
    assert not np.array_equal(np.load(tmp_path / "new.cs")["uid"], uid)


def test_cs_rows_are_completed_and_kept(tmp_path):
    """A .cs made by another tool, without blob/sign, ctf/type, ... and without uids:
    the rows are kept as they are and the missing fields added."""
    write_cs(tmp_path / "full.cs", _star(tmp_path))
    full = np.load(tmp_path / "full.cs")
    keep = ["blob/path", "blob/idx", "blob/shape", "blob/psize_A", "ctf/accel_kv", "ctf/cs_mm",
            "ctf/amp_contrast", "ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "alignments3D/pose",
            "alignments3D/shift", "alignments3D/psize_A"]
    sparse = drop_fields(full, [n for n in full.dtype.names if n not in keep], usemask=False)
    with open(tmp_path / "sparse.cs", "wb") as f:
        np.save(f, sparse)
    src = load_particles(tmp_path / "sparse.cs")
    write_subset(src, [0, 3, 5], tmp_path / "out.cs", sign=-1.0)
    rec = np.load(tmp_path / "out.cs")
    _check_fields(rec, 3)
    assert rec.dtype.names[:len(keep)] == sparse.dtype.names    # the source's fields first, unchanged
    for name in keep:
        np.testing.assert_array_equal(rec[name], sparse[name][[0, 3, 5]])
    np.testing.assert_array_equal(rec["blob/sign"], -1.0)
    assert np.unique(rec["uid"]).size == 3 and rec["uid"].max() > 2**40


def test_labels_as_cryosparc_classes(tmp_path):
    data = _star(tmp_path)
    write_subset(data, [1, 2, 4], tmp_path / "lab.cs", labels=[3, 0, 3])
    rec = np.load(tmp_path / "lab.cs")
    np.testing.assert_array_equal(rec["alignments3D/class"], [3, 0, 3])
    np.testing.assert_array_equal(rec["alignments3D/class_posterior"], 1.0)
    # rows of a .cs source: the class replaced, nothing else
    write_cs(tmp_path / "src.cs", data)
    src = read_cs(tmp_path / "src.cs")
    write_subset(src, [5, 0], tmp_path / "rows.cs", labels=[2, 1])
    rows, orig = np.load(tmp_path / "rows.cs"), np.load(tmp_path / "src.cs")[[5, 0]]
    np.testing.assert_array_equal(rows["alignments3D/class"], [2, 1])
    assert rows.dtype == orig.dtype
    for name in orig.dtype.names:
        if name != "alignments3D/class":
            np.testing.assert_array_equal(rows[name], orig[name])
    # .star: rlnClassNumber = label + 1
    write_subset(data, [1, 2, 4], tmp_path / "lab.star", labels=[3, 0, 3])
    np.testing.assert_array_equal(read_star(tmp_path / "lab.star").table["rlnClassNumber"], [4, 1, 4])
    with pytest.raises(InputError, match="2 labels for 3 particles"):
        write_subset(data, [1, 2, 4], tmp_path / "bad.cs", labels=[1, 2])


def test_optics_the_cs_file_cannot_carry_are_reported(tmp_path):
    tilted = _star(tmp_path, optics_extra={"rlnBeamTiltX": [0.2, 0.0], "rlnMagMat00": [1.0, 1.01]})
    with pytest.warns(ParticleFileWarning, match="rlnBeamTiltX, rlnMagMat00 are not written"):
        write_cs(tmp_path / "t.cs", tilted)
    plain = _star(tmp_path, optics_extra={"rlnBeamTiltX": [0.0, 0.0], "rlnMagMat00": [1.0, 1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_cs(tmp_path / "p.cs", plain)


def test_ctf_scale_survives_a_cs_round_trip(tmp_path):
    """rlnCtfScalefactor -> ctf/scale -> read back: the same factors (they were read as 1)."""
    data = _star(tmp_path, extra_columns={"rlnCtfScalefactor": [0.5, 1.0, 0.8, 1.2, 0.5, 2.0]})
    np.testing.assert_allclose(data.ctf.scale, [0.5, 1.0, 0.8, 1.2, 0.5, 2.0])
    write_cs(tmp_path / "s.cs", data)
    back = read_cs(tmp_path / "s.cs")
    np.testing.assert_allclose(back.ctf.scale, data.ctf.scale, rtol=1e-6)
    # and on to a .star again
    write_subset(back, np.arange(N), tmp_path / "s.star")
    np.testing.assert_allclose(read_star(tmp_path / "s.star").ctf.scale, data.ctf.scale, rtol=1e-6)
    # a .cs without the field, or with an unset (0) scale, means no scaling
    rec = np.load(tmp_path / "s.cs")
    with open(tmp_path / "none.cs", "wb") as f:
        np.save(f, drop_fields(rec, ["ctf/scale"], usemask=False))
    np.testing.assert_array_equal(read_cs(tmp_path / "none.cs").ctf.scale, 1.0)
    rec["ctf/scale"] = 0.0
    with open(tmp_path / "zero.cs", "wb") as f:
        np.save(f, rec)
    with pytest.warns(ParticleFileWarning, match="ctf/scale"):
        np.testing.assert_array_equal(read_cs(tmp_path / "zero.cs").ctf.scale, 1.0)
