"""What RELION, Warp and cryoSPARC write that the plain readers' tests do not cover: bare
image names, Warp's negative rlnCtfBfactor and rlnCtfScalefactor, pixel sizes in MRC
headers, boxes checked when the images are read, and cryoSPARC files from 2D
classification and heterogeneous refinement (built field by field as cryoSPARC writes
them)."""

import os
import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from numpy.lib.recfunctions import drop_fields

from gaussianem.errors import ParticleFileError
from gaussianem.io.images import ParticleImages
from gaussianem.io.particle_data import ParticleFileWarning
from gaussianem.io.particles import load_particles
from gaussianem.io.relion import read_star
from gaussianem.io.relion_write import write_star
from gaussianem.physics import ctf as ctf_mod


def _stack(path, n, box=16, apix=1.5):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, box, box), np.float32))
        m.set_image_stack()
        m.voxel_size = apix


def _star(folder, names, apix=1.5, box=16, extra=None):
    n = len(names)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnImagePixelSize": [apix], "rlnImageSize": [box],
                           "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    particles = pd.DataFrame({"rlnImageName": names, "rlnAngleRot": np.zeros(n),
                              "rlnAngleTilt": np.zeros(n), "rlnAnglePsi": np.zeros(n),
                              "rlnDefocusU": np.full(n, 1e4), "rlnDefocusV": np.full(n, 1e4),
                              "rlnDefocusAngle": np.zeros(n), "rlnOpticsGroup": np.ones(n, int)})
    for k, v in (extra or {}).items():
        particles[k] = v
    path = os.path.join(folder, "particles.star")
    starfile.write({"optics": optics, "particles": particles}, path)
    return path


def _warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, ParticleFileWarning)]


# ---------------------------------------------------------------- 1. bare image names

def test_bare_names_follow_relions_single_image_rule(tmp_path):
    d = str(tmp_path)
    for k in range(3):
        _stack(os.path.join(d, f"one{k}.mrc"), 1)
    _stack(os.path.join(d, "three.mrcs"), 3)
    # a bare name is its file's only image
    data, msgs = _warnings(read_star, _star(d, ["one0.mrc", "one2.mrc", "1@one1.mrc"]))
    np.testing.assert_array_equal(data.image_indices, [0, 0, 0])
    assert not [m for m in msgs if "without image numbers" in m]
    # one bare row naming a 3-image stack: RELION would read a single-image file
    path = _star(d, ["one0.mrc", "three.mrcs"])
    with pytest.raises(ParticleFileError) as e:
        read_star(path)
    msg = str(e.value)
    assert path in msg and "rlnImageName, row 2" in msg and "three.mrcs" in msg
    assert "holds 3 images" in msg and "one image" in msg and "N@three.mrcs" in msg
    # ... also found when the image check is skipped? Only files named by several bare rows
    # are looked at then: a single bare row keeps image 1 unchecked.
    assert read_star(path, check_images=False).image_indices.tolist() == [0, 0]
    # as many bare rows as images: the rows are the images in row order, with a warning
    data, msgs = _warnings(read_star, _star(d, ["three.mrcs", "one0.mrc", "three.mrcs", "three.mrcs"]))
    np.testing.assert_array_equal(data.image_indices, [0, 0, 1, 2])
    assert len([m for m in msgs if "in row order" in m and "three.mrcs" in m]) == 1
    images = ParticleImages(data)
    assert [float(images[i]["image"][0, 0]) for i in range(4)] == [0.0, 0.0, 1.0, 2.0]
    for names in (["three.mrcs", "three.mrcs"],                      # fewer rows than images
                  ["three.mrcs", "three.mrcs", "2@three.mrcs", "three.mrcs"]):  # mixed forms
        with pytest.raises(ParticleFileError, match="named without an image number"):
            read_star(_star(d, names), check_images=False)


# ---------------------------------------------------------------- 2. Warp's B-factor and scale

def _ctf_images(params, box, apix):
    """CTF images (B, H, W) as the renderer evaluates them (``evaluate`` on ``fourier_grid``)."""
    return ctf_mod.evaluate(ctf_mod.fourier_grid(box, float(apix)), params.as_tensor()).double().numpy()


def test_negative_bfactor_never_amplifies_and_scale_applies(tmp_path):
    d = str(tmp_path)
    _stack(os.path.join(d, "s.mrcs"), 4)
    # Warp 1.x tilt-series particles: B = -4 x cumulative dose (3.25 to 126.75 e/A^2),
    # scale = cos(tilt); one positive B among them stays as it is
    scale = np.cos(np.deg2rad([0.0, 3.0, 30.0, 60.0]))
    bfac = np.array([-13.0, 25.0, -240.0, -507.0])
    path = _star(d, [f"{i + 1}@s.mrcs" for i in range(4)],
                 extra={"rlnCtfBfactor": bfac, "rlnCtfScalefactor": scale})
    data, msgs = _warnings(read_star, path)
    np.testing.assert_allclose(data.ctf.bfactor, [0, 25, 0, 0])
    np.testing.assert_allclose(data.ctf.scale, scale, rtol=1e-6)
    env = [m for m in msgs if "rlnCtfBfactor" in m]
    assert len(env) == 1, msgs                                # once per file
    assert path in env[0] and "3 of 4" in env[0] and "-507 to -13 A^2" in env[0] and "B = 0" in env[0]
    # the CTF: RELION's scale * -sin(chi) * exp(-B k^2 / 4), never above the scale factor
    c = _ctf_images(data.ctf, data.box, data.apix[0])
    assert np.all(np.abs(c) <= scale[:, None, None] + 1e-6)
    unscaled = ctf_mod.CTFParams(**{f: getattr(data.ctf, f) for f in
                                    ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs",
                                     "amp_contrast", "phase_shift", "bfactor")})
    np.testing.assert_array_equal(unscaled.scale, 1.0)
    c1 = _ctf_images(unscaled, data.box, data.apix[0])
    np.testing.assert_allclose(c, c1 * scale[:, None, None], atol=1e-6)
    # an (B, 8) parameter tensor (no scale column) still evaluates, unscaled
    freqs = ctf_mod.fourier_grid(data.box, data.apix[0])
    np.testing.assert_allclose(ctf_mod.evaluate(freqs, unscaled.as_tensor()[:, :8]).numpy(), c1, atol=1e-6)
    # written back with the scale factor (and the B-factor used)
    write_star(os.path.join(d, "out.star"), data)
    back = read_star(os.path.join(d, "out.star"))
    np.testing.assert_allclose(back.ctf.scale, scale, rtol=1e-6)
    np.testing.assert_allclose(back.ctf.bfactor, [0, 25, 0, 0])
    # no scale factor column -> 1, and none written
    plain = read_star(_star(d, ["1@s.mrcs"]))
    np.testing.assert_array_equal(plain.ctf.scale, [1.0])
    write_star(os.path.join(d, "plain_out.star"), plain)
    assert "rlnCtfScalefactor" not in starfile.read(os.path.join(d, "plain_out.star"))["particles"]
    with pytest.raises(ParticleFileError, match=r"rlnCtfScalefactor, row 2: 0; expected a positive"):
        read_star(_star(d, ["1@s.mrcs", "2@s.mrcs"], extra={"rlnCtfScalefactor": [1.0, 0.0]}))


# ---------------------------------------------------------------- 3. box checked when reading images

def test_box_mismatch_when_the_image_check_was_skipped(tmp_path):
    d = str(tmp_path)
    _stack(os.path.join(d, "s.mrcs"), 2, box=24)
    path = _star(d, ["1@s.mrcs", "2@s.mrcs"], box=16)
    data = read_star(path, check_images=False)              # the box comes from rlnImageSize
    images = ParticleImages(data)
    with pytest.raises(ParticleFileError) as e:
        images[0]
    msg = str(e.value)
    assert os.path.join(d, "s.mrcs") in msg and "24 x 24" in msg and "16 x 16" in msg and path in msg
    path = _star(d, ["1@s.mrcs", "5@s.mrcs"], box=24)
    images = ParticleImages(read_star(path, check_images=False))
    with pytest.raises(ParticleFileError, match=r"particle 2 asks for image 5 .* holds only 2"):
        images.__getitems__([0, 1])


# ---------------------------------------------------------------- 6. pixel size in the MRC header

def test_header_pixel_size_against_metadata(tmp_path):
    d = str(tmp_path)
    _stack(os.path.join(d, "same.mrcs"), 2, apix=1.5)
    _, msgs = _warnings(read_star, _star(d, ["1@same.mrcs"], apix=1.5))
    assert msgs == []
    # a real, different pixel size: reported, the metadata's used
    _stack(os.path.join(d, "binned.mrcs"), 2, apix=3.0)
    path = _star(d, ["1@binned.mrcs", "2@same.mrcs"], apix=1.5)
    data, msgs = _warnings(read_star, path)
    np.testing.assert_allclose(data.apix, 1.5)
    assert len(msgs) == 1 and path in msgs[0] and "binned.mrcs" in msgs[0]
    assert "header 3 A" in msgs[0] and "metadata 1.5 A" in msgs[0] and "1 of 2 stacks" in msgs[0]
    # the placeholder 1.0: the metadata is trusted
    _stack(os.path.join(d, "placeholder.mrcs"), 2, apix=1.0)
    data, msgs = _warnings(read_star, _star(d, ["1@placeholder.mrcs"], apix=1.5))
    assert len(msgs) == 1 and "1.0 A" in msgs[0] and "trusted (1.5 A)" in msgs[0]
    # no header pixel size at all: nothing to say
    _stack(os.path.join(d, "none.mrcs"), 2, apix=0.0)
    assert _warnings(read_star, _star(d, ["1@none.mrcs"], apix=1.5))[1] == []
    # a stack binned 2x under metadata that still give the old box: the error says so
    _stack(os.path.join(d, "small.mrcs"), 2, box=8, apix=3.0)
    with pytest.raises(ParticleFileError, match=r"image size of 16 px but .* hold 8 px images; "
                                                r"their header gives 3 A pixels where the metadata "
                                                r"say 1.5 A: were the stacks binned"):
        read_star(_star(d, ["1@small.mrcs"], apix=1.5, box=16))


# ---------------------------------------------------------------- 4, 5. cryoSPARC

def _cs(fields, n=3):
    return np.zeros(n, dtype=fields)


def _save(path, rec):
    with open(path, "wb") as f:
        np.save(f, rec)
    return str(path)


BLOB_CTF = [("uid", "<u8"), ("blob/path", "S32"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
            ("blob/psize_A", "<f4"), ("blob/sign", "<f4"), ("blob/import_sig", "<u8"),
            ("ctf/type", "S1"), ("ctf/exp_group_id", "<u4"), ("ctf/accel_kv", "<f4"),
            ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"),
            ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4"),
            ("ctf/scale", "<f4"), ("ctf/scale_const", "<f4"), ("ctf/shift_A", "<f4", (2,)),
            ("ctf/tilt_A", "<f4", (2,)), ("ctf/trefoil_A", "<f4", (2,)), ("ctf/tetra_A", "<f4", (4,)),
            ("ctf/anisomag", "<f4", (4,)), ("ctf/bfactor", "<f4")]
ALIGN = ["split", "shift", "pose", "psize_A", "error", "error_min", "resid_pow", "slice_pow",
         "image_pow", "cross_cor", "alpha", "alpha_min", "weight", "pose_ess", "shift_ess",
         "class_posterior", "class", "class_ess"]


def _align_fields(prefix, names=ALIGN):
    shape = {"shift": (2,), "pose": (3,)}
    dtype = {"split": "<u4", "class": "<u4"}
    return [(f"{prefix}/{a}", dtype.get(a, "<f4"), shape[a]) if a in shape
            else (f"{prefix}/{a}", dtype.get(a, "<f4")) for a in names]


def _fill_blob_ctf(rec, box, psize):
    n = len(rec)
    rec["uid"] = np.arange(n) + 1000
    rec["blob/path"] = b"J2/imported/particles.mrcs"
    rec["blob/idx"] = np.arange(n)
    rec["blob/shape"] = box
    rec["blob/psize_A"] = psize
    rec["blob/sign"] = -1
    rec["ctf/type"] = b"i"
    rec["ctf/exp_group_id"] = 1
    rec["ctf/accel_kv"], rec["ctf/cs_mm"], rec["ctf/amp_contrast"] = 300, 2.7, 0.1
    rec["ctf/df1_A"], rec["ctf/df2_A"] = 12000, 11500
    rec["ctf/scale"], rec["ctf/anisomag"] = 1, [1, 0, 0, 1]


def test_cs_from_2d_classification_says_so(tmp_path):
    _stack(str(tmp_path / "J2" / "imported" / "particles.mrcs"), 3, box=64, apix=1.0)
    rec = _cs(BLOB_CTF + _align_fields("alignments2D", ["split", "shift", "pose", "psize_A",
                                                              "error", "class_posterior", "class"]))
    _fill_blob_ctf(rec, 64, 1.0)
    path = _save(tmp_path / "J9_020_particles.cs", rec)
    with pytest.raises(ParticleFileError) as e:
        load_particles(path)
    msg = str(e.value)
    assert path in msg and "'alignments3D/pose'" in msg and "2D classification" in msg
    for job in ("homogeneous", "non-uniform", "heterogeneous refinement", "3D classification"):
        assert job in msg


@pytest.mark.parametrize("particle_box,refine_box", [(256, 128), (300, 128)])
def test_heterogeneous_refinement_shifts(tmp_path, particle_box, refine_box):
    # Heterogeneous refinement aligns downsampled images (its "Refinement box size"):
    # alignments3D/shift is in pixels of that box, whose pixel size it records in
    # alignments3D/psize_A; blob/ keeps the extracted particles' box and pixel size.
    # The all-classes output also carries alignments_class_K/ for every class.
    psize = 1.06
    refine_psize = psize * particle_box / refine_box
    _stack(str(tmp_path / "J2" / "imported" / "particles.mrcs"), 3, box=particle_box, apix=psize)
    fields = (BLOB_CTF + _align_fields("alignments3D")
              + _align_fields("alignments_class_0", ALIGN[:3] + ["psize_A", "class_posterior"])
              + _align_fields("alignments_class_1", ALIGN[:3] + ["psize_A", "class_posterior"]))
    rec = _cs(fields)
    _fill_blob_ctf(rec, particle_box, psize)
    shift_px = np.array([[3.0, -1.5], [0.25, 7.0], [-4.0, 0.0]], np.float32)
    rec["alignments3D/shift"] = shift_px
    rec["alignments3D/pose"] = [[0.1, 0.2, 0.3], [0, 0, 1], [1, 0, 0]]
    rec["alignments3D/psize_A"] = refine_psize
    rec["alignments3D/class"] = [0, 1, 1]
    rec["alignments3D/class_posterior"] = [0.9, 0.8, 1.0]
    for k in (0, 1):
        rec[f"alignments_class_{k}/shift"] = shift_px * (k + 2)
        rec[f"alignments_class_{k}/psize_A"] = refine_psize
    path = _save(tmp_path / "J10_particles_all_classes.cs", rec)
    data = load_particles(path)
    np.testing.assert_allclose(data.shifts, shift_px * np.float32(refine_psize), rtol=1e-6)
    np.testing.assert_allclose(data.apix, psize, rtol=1e-6)
    # cryoDRGN's parse_pose_csparc --hetrefine: trans = 2 * shift / D, then
    # trans * D pixels of blob/psize_A: right only when D = 2 * refinement box
    cryodrgn = 2 * shift_px / particle_box * particle_box * psize
    np.testing.assert_allclose(data.shifts, cryodrgn * (particle_box / refine_box / 2), rtol=1e-5)
    assert (particle_box == 2 * refine_box) == np.allclose(data.shifts, cryodrgn, rtol=1e-5)
    # without alignments3D/psize_A the shifts are taken in blob pixels, with a warning
    old = _save(tmp_path / "old.cs", drop_fields(rec, "alignments3D/psize_A", usemask=False))
    data, msgs = _warnings(load_particles, old)
    np.testing.assert_allclose(data.shifts, shift_px * np.float32(psize), rtol=1e-6)
    assert len(msgs) == 1 and "alignments3D/psize_A" in msgs[0] and "Refinement box size" in msgs[0]
