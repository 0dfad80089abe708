"""benchmarks/realistic.py: the realistic simulator's conventions, checked against
independent computations (a real-space projection of the rotated atoms, a naive elastic
network, electron counts). Needs MDAnalysisTests (bash benchmarks/setup_robustness.sh);
skipped without it (found with importlib.util.find_spec, not imported: the package's
__init__ needs MDAnalysis, which the --no-deps install leaves out)."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

if importlib.util.find_spec("MDAnalysisTests") is None:
    pytest.skip("MDAnalysisTests is not installed (bash benchmarks/setup_robustness.sh)", allow_module_level=True)

import realistic as rs  # noqa: E402
import torch  # noqa: E402

from gaussianem.io.models import read_model  # noqa: E402
from gaussianem.io.mrc import read_map  # noqa: E402
from gaussianem.io.relion import read_star  # noqa: E402
from gaussianem.physics import ctf as ctf_mod  # noqa: E402
from gaussianem.sim.geometry import model_density

BOX, APIX = 48, 2.5


def _images(d):
    import mrcfile
    with mrcfile.open(os.path.join(d, "particles.mrcs"), permissive=True) as m:
        return np.asarray(m.data, np.float64)


def _spec(**kw):
    base = dict(structure="4E43.pdb", n=120, box=BOX, apix=APIX, snr=None, seed=3, motion="mode", states=3,
                eval_bins=3, absent="C", absent_fraction=0.4, scale_jitter=0.2, junk_fraction=0.15)
    base.update(kw)
    return rs.RealisticSpec(**base)


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory):
    """No noise, no pose or defocus error: images are exactly scaled projections."""
    d = str(tmp_path_factory.mktemp("realistic_clean"))
    rs.simulate(_spec(), d)
    return d


def _real_space_image(xyz, weights, rot, origin, ctf_row):
    """Independent of the Fourier-slice projector: the atoms turned by the RELION matrix,
    moved by -origin in the image plane, as density summed along z, then the CTF."""
    p = xyz @ rot.T
    p[:, :2] -= origin
    proj = model_density(p, BOX, APIX, weights=weights).sum(0).astype(np.float64)
    g = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(proj)))
    k = (np.arange(BOX) - BOX // 2) / BOX / APIX
    ky, kx = np.meshgrid(k, k, indexing="ij")
    freqs = torch.from_numpy(np.stack([kx, ky], -1)).float()
    c = ctf_mod.evaluate(freqs, torch.from_numpy(np.asarray(ctf_row, np.float32))[None])[0].numpy()
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(g * c))).real


def _lsq(img, ref):
    a = np.stack([ref.ravel(), np.ones(ref.size)], 1)
    (slope, icept), *_ = np.linalg.lstsq(a, img.ravel(), rcond=None)
    return slope, icept


def test_image_is_scaled_projection_of_truth_with_star_pose(clean_set):
    """image == image_scale * scale * FourierSlice(truth state, star pose, star CTF) + offset."""
    from gaussianem.physics import fourier_slice
    t = np.load(os.path.join(clean_set, "ground_truth.npz"))
    data = read_star(os.path.join(clean_set, "particles.star"))
    imgs = _images(clean_set)
    assert np.allclose(data.rotations, t["rotations"], atol=1e-5)
    assert np.allclose(data.shifts, t["shifts"], atol=1e-3)
    assert np.allclose(data.ctf.defocus_u, t["defocus_u"], atol=0.01)
    sel = np.flatnonzero(t["present"] & ~t["junk"])[:12]
    assert len(sel) >= 6
    for i in sel:
        k = int(np.argmin(np.abs(t["eval_motion"] - t["motion"][i])))
        assert abs(t["eval_motion"][k] - t["motion"][i]) < 1e-6        # 3 states = 3 truth maps
        vol, _, _ = read_map(os.path.join(clean_set, "truth", f"state_{k:02d}.mrc"))
        ref = fourier_slice.project_volume(torch.from_numpy(np.array(vol)), torch.from_numpy(data.rotations[[i]]).float(),
                                           torch.from_numpy(data.shifts[[i]]).float(), APIX,
                                           ctf_params=data.ctf.as_tensor([i]))[0].numpy()
        want = float(t["image_scale"]) * float(t["scale"][i]) * ref + float(t["image_offset"])
        assert np.abs(imgs[i] - want).max() < 1e-3 * np.abs(want - float(t["image_offset"])).max() + 1e-2


def test_real_space_projection_of_atoms_agrees(clean_set):
    """Middle-of-motion present particles (the unmoved model.pdb) against a real-space
    projection of the rotated atoms: same image, and the transposed rotation is worse."""
    t = np.load(os.path.join(clean_set, "ground_truth.npz"))
    data = read_star(os.path.join(clean_set, "particles.star"))
    imgs = _images(clean_set)
    model = read_model(os.path.join(clean_set, "model.pdb"))
    xyz = model.coords - (BOX // 2) * APIX
    w = model.atomic_numbers()
    sel = np.flatnonzero(t["present"] & ~t["junk"] & (np.abs(t["motion"] - 0.5) < 1e-6))[:8]
    assert len(sel) >= 4
    ctf_rows = data.ctf.as_tensor().numpy()
    right, transposed, flipped = [], [], []
    for i in sel:
        obs = (imgs[i] - float(t["image_offset"])).ravel()
        ref = _real_space_image(xyz, w, data.rotations[i], data.shifts[i], ctf_rows[i])
        right.append(np.corrcoef(obs, ref.ravel())[0, 1])
        transposed.append(np.corrcoef(obs, _real_space_image(xyz, w, data.rotations[i].T, data.shifts[i],
                                                             ctf_rows[i]).ravel())[0, 1])
        flipped.append(np.corrcoef(obs, _real_space_image(xyz, w, data.rotations[i], -data.shifts[i],
                                                          ctf_rows[i]).ravel())[0, 1])
        slope, _ = _lsq(obs, ref)
        assert slope == pytest.approx(float(t["image_scale"]) * float(t["scale"][i]), rel=0.05)
    assert min(right) > 0.975
    # a wrong convention (A transposed, or the origin's sign) would fit clearly worse
    assert np.mean(transposed) < np.mean(right) - 0.15
    assert np.mean(flipped) < np.mean(right) - 0.15


def test_absent_chain_is_absent(clean_set):
    """An absent particle's image is the projection without chain C; the consensus holds
    chain C's electrons in the present fraction only (consensus_scale undone)."""
    from gaussianem.physics import fourier_slice
    t = np.load(os.path.join(clean_set, "ground_truth.npz"))
    data = read_star(os.path.join(clean_set, "particles.star"))
    imgs = _images(clean_set)
    model = read_model(os.path.join(clean_set, "model.pdb"))
    xyz = model.coords - (BOX // 2) * APIX
    w = model.atomic_numbers().astype(float)
    c_chain = model.chain_ids == "C"
    assert c_chain.any()
    i = np.flatnonzero(~t["present"] & ~t["junk"] & (np.abs(t["motion"] - 0.5) < 1e-6))[0]
    ctf_row = data.ctf.as_tensor().numpy()[i]
    obs = imgs[i] - float(t["image_offset"])
    res = {}
    for name, keep in (("without", ~c_chain), ("with", np.ones(len(w), bool))):
        ref = _real_space_image(xyz[keep], w[keep], data.rotations[i], data.shifts[i], ctf_row)
        slope, icept = _lsq(obs, ref)
        res[name] = np.linalg.norm(obs - slope * ref - icept)
        # the same with the Fourier-slice projector of a density built here from model.pdb
        vol = torch.from_numpy(model_density(xyz[keep], BOX, APIX, weights=w[keep]))
        ref = fourier_slice.project_volume(vol, torch.from_numpy(data.rotations[[i]]).float(),
                                           torch.from_numpy(data.shifts[[i]]).float(), APIX,
                                           ctf_params=data.ctf.as_tensor([i]))[0].numpy()
        slope, icept = _lsq(obs, ref)
        res[name + "_fs"] = np.linalg.norm(obs - slope * ref - icept)
    assert res["without"] < 0.75 * res["with"]            # real space: projector mismatch ~1%
    assert res["without_fs"] < 0.05 * res["with_fs"]      # same projector: only chain C differs
    cons, apix, _ = read_map(os.path.join(clean_set, "consensus.mrc"))
    good = ~t["junk"]
    frac = t["present"][good].mean()
    want = w[~c_chain].sum() + frac * w[c_chain].sum()
    got = cons.sum() * apix ** 3 / float(t["consensus_scale"])
    assert got == pytest.approx(want, rel=2e-3)


def test_junk_flags_and_scales(clean_set):
    t = np.load(os.path.join(clean_set, "ground_truth.npz"))
    imgs = _images(clean_set)
    junk = t["junk"]
    assert 0 < junk.sum() < len(junk) * 0.4
    assert not t["present"][junk].any()                    # junk rows never count as present
    assert np.allclose(imgs[junk], float(t["image_offset"]), atol=1e-3)   # noise junk, no noise: blank
    assert (imgs[~junk].std(axis=(1, 2)) > 1).all()
    assert t["scale"].min() >= 0.8 and t["scale"].max() <= 1.2 and t["scale"].std() > 0.05


def test_scale_and_offset_by_least_squares(tmp_path):
    """With noise, the least-squares fit of each image on its clean projection gives back the
    truth's image_scale * scale and image_offset, and the noise level matches the SNR."""
    from gaussianem.physics import fourier_slice
    d = str(tmp_path)
    rs.simulate(_spec(n=60, snr=2.0, junk_fraction=0.0, absent=None, seed=5), d)
    t = np.load(os.path.join(d, "ground_truth.npz"))
    data = read_star(os.path.join(d, "particles.star"))
    imgs = _images(d)
    vols = [read_map(os.path.join(d, "truth", f"state_{k:02d}.mrc"))[0] for k in range(3)]
    resid_var, sig_var = [], []
    for i in range(20):
        k = int(np.argmin(np.abs(t["eval_motion"] - t["motion"][i])))
        ref = fourier_slice.project_volume(torch.from_numpy(np.array(vols[k])), torch.from_numpy(data.rotations[[i]]).float(),
                                           torch.from_numpy(data.shifts[[i]]).float(), APIX,
                                           ctf_params=data.ctf.as_tensor([i]))[0].numpy().astype(np.float64)
        slope, icept = _lsq(imgs[i], ref)
        assert slope == pytest.approx(float(t["image_scale"]) * float(t["scale"][i]), rel=0.05)
        # the intercept's error is about noise / sqrt(pixels), 2% of the noise sd here
        assert icept == pytest.approx(float(t["image_offset"]), abs=0.2 * float(t["image_scale"]) * float(t["noise_sd"]))
        resid_var.append(np.var(imgs[i] - slope * ref - icept))
        sig_var.append(np.var(float(t["scale"][i]) * ref))
    noise_var = np.mean(resid_var) / float(t["image_scale"]) ** 2
    assert noise_var == pytest.approx(float(t["noise_sd"]) ** 2, rel=0.05)
    assert float(t["signal_var"]) / noise_var == pytest.approx(2.0, rel=0.25)


def test_pose_and_defocus_errors_go_to_the_star_only(tmp_path):
    from gaussianem.physics import fourier_slice
    d = str(tmp_path)
    rs.simulate(_spec(n=300, junk_fraction=0.0, absent=None, pose_error_deg=3.0, shift_error_px=1.0,
                      defocus_error=300.0, states=1, eval_bins=1, seed=7), d)
    t = np.load(os.path.join(d, "ground_truth.npz"))
    data = read_star(os.path.join(d, "particles.star"))
    rel = np.einsum("nji,njk->nik", data.rotations, t["rotations"].astype(np.float64))
    ang = np.rad2deg(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert np.sqrt(np.mean(ang ** 2)) == pytest.approx(3.0, rel=0.15)
    dshift = np.linalg.norm(data.shifts - t["shifts"], axis=1) / APIX
    assert np.sqrt(np.mean(dshift ** 2)) == pytest.approx(1.0, rel=0.15)
    dd = data.ctf.defocus_u - t["defocus_u"]
    assert np.abs(dd).max() <= 300.01 and dd.std() > 100
    assert np.allclose(data.ctf.defocus_v - t["defocus_v"], dd, atol=0.02)
    # the images were made with the TRUE pose: the true projection fits better than the star's
    vol, _, _ = read_map(os.path.join(d, "truth", "state_00.mrc"))
    imgs = _images(d)
    i = np.argsort(-ang)[:3]
    true_ctf = data.ctf.subset(i)
    true_ctf.defocus_u, true_ctf.defocus_v = t["defocus_u"][i], t["defocus_v"][i]
    for rot, sh, c, name in ((t["rotations"][i], t["shifts"][i], true_ctf.as_tensor(), "true"),
                             (data.rotations[i], data.shifts[i], data.ctf.as_tensor(i), "star")):
        ref = fourier_slice.project_volume(torch.from_numpy(np.array(vol)), torch.from_numpy(np.asarray(rot)).float(),
                                           torch.from_numpy(np.asarray(sh)).float(), APIX, ctf_params=c).numpy()
        cc = [np.corrcoef(imgs[j].ravel(), ref[m].ravel())[0, 1] for m, j in enumerate(i)]
        if name == "true":
            true_cc = cc
            assert min(cc) > 0.999
        else:
            assert max(cc) < min(true_cc) - 0.01


def test_normal_mode_is_internal_and_has_the_asked_rmsd():
    model = rs.load_structure("4E43.pdb")
    ca = rs.ca_indices(model)
    xyz = model.coords[ca]
    w, modes = rs.anm_modes(xyz, 3)
    basis = rs.rigid_body_basis(xyz)
    for m in modes:
        assert np.linalg.norm(m) == pytest.approx(1.0, abs=1e-9)
        assert np.abs(basis @ m.ravel()).max() < 1e-6          # no translation, no rotation
    assert np.all(np.diff(w) >= -1e-12) and w[0] > 1e-6
    spec = rs.RealisticSpec(structure="4E43.pdb", rmsd_range=4.0)
    motion = rs.Motion(model.with_coords(model.coords - model.coords.mean(0)), spec)
    a, b = motion.coords(0.0), motion.coords(1.0)
    assert rs.rmsd(a, b) == pytest.approx(4.0, abs=1e-6)
    # after the best superposition (Kabsch) the motion keeps almost all of it: internal motion
    pa, pb = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(pa.T @ pb)
    dgn = np.diag([1, 1, np.sign(np.linalg.det(u @ vt))])
    fitted = pa @ (u @ dgn @ vt)
    assert rs.rmsd(fitted, pb) > 0.95 * 4.0


def test_anm_hessian_matches_a_naive_build():
    model = rs.load_structure("1hvr.pdb")
    xyz = model.coords[rs.ca_indices(model)][:40]
    h = rs.anm_hessian(xyz, 12.0)
    n = len(xyz)
    ref = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = xyz[j] - xyz[i]
            r2 = d @ d
            if r2 < 144.0:
                blk = -np.outer(d, d) / r2
                ref[3 * i:3 * i + 3, 3 * j:3 * j + 3] = blk
                ref[3 * i:3 * i + 3, 3 * i:3 * i + 3] -= blk
    assert np.allclose(h, ref, atol=1e-12)


def test_two_motions_and_hinge_truth(tmp_path):
    d = str(tmp_path / "two")
    out = rs.simulate(_spec(n=40, motion="two_modes", states2=3, junk_fraction=0.0), d)
    t = np.load(os.path.join(d, "ground_truth.npz"))
    assert set(np.unique(t["motion2"])) <= {0.0, 0.5, 1.0} and "motion2" in t
    assert float(t["rmsd_range"]) == pytest.approx(4.0, abs=1e-6)
    assert out["rmsd2_end_to_end_A"] == pytest.approx(4.0, abs=1e-6)
    d = str(tmp_path / "hinge")
    rs.simulate(_spec(n=40, motion="hinge", hinge_angle=20.0, junk_fraction=0.0), d)
    t = np.load(os.path.join(d, "ground_truth.npz"))
    assert np.allclose(t["angle"], (t["motion"] - 0.5) * 20.0, atol=1e-5)



def test_two_domains_turn_at_once_each_about_its_own_interface():
    """two_hinges: chain A's C-terminal third and chain B turn together with the motion,
    each rigidly about its own axis; the rest stays; the middle of the motion is the model."""
    m = rs.load_structure("1a28.pdb.gz")
    m = m.with_coords(m.coords - m.coords.mean(0))
    motion = rs.Motion(m, rs.RealisticSpec(structure="1a28.pdb.gz", motion="two_hinges", hinge2_angle=30.0))
    assert not (motion.mask & motion.mask2).any() and motion.mask.any() and motion.mask2.any()
    assert (m.chain_ids[motion.mask2] == "B").all()
    x0, x1 = motion.coords(0.0), motion.coords(1.0)
    assert np.allclose(motion.coords(0.5), m.coords)
    rest = ~(motion.mask | motion.mask2)
    assert np.allclose(x0[rest], x1[rest])
    for part in (motion.mask, motion.mask2):                 # rigid: distances within a part kept
        a, b = x0[part][::40], x1[part][::40]
        da = np.linalg.norm(a[:, None] - a[None], axis=-1)
        db = np.linalg.norm(b[:, None] - b[None], axis=-1)
        assert np.allclose(da, db, atol=1e-4)
        assert rs.rmsd(a, b) > 5.0


def test_staggered_domains_turn_one_after_the_other():
    """hinge_stagger 0.4: the first part turns over the first 60% of the motion and stands
    still after, the second stands still before 40% and turns over the rest; both reach
    the same ends as the synchronous motion."""
    m = rs.load_structure("1a28.pdb.gz")
    m = m.with_coords(m.coords - m.coords.mean(0))
    kw = dict(structure="1a28.pdb.gz", motion="two_hinges", hinge2_angle=30.0)
    both, one_then = rs.Motion(m, rs.RealisticSpec(**kw)), rs.Motion(m, rs.RealisticSpec(**kw, hinge_stagger=0.4))
    for t in (0.0, 1.0):
        assert np.allclose(both.coords(t), one_then.coords(t))
    a, b = one_then.mask, one_then.mask2
    assert np.allclose(one_then.coords(0.6)[a], one_then.coords(1.0)[a])       # the first is done at 60%
    assert np.allclose(one_then.coords(0.4)[b], one_then.coords(0.0)[b])       # the second starts at 40%
    assert rs.rmsd(one_then.coords(0.3)[a], one_then.coords(0.0)[a]) > 3.0
    with pytest.raises(ValueError, match="hinge_stagger"):
        rs.RealisticSpec(**kw, hinge_stagger=1.0).check()


def test_structures_read_and_reserved_refused():
    with pytest.raises(ValueError, match="reserved"):
        rs.structure_path("adk_open.pdb")
    m = rs.load_structure("1a28.pdb.gz")                  # gzip, read by gemmi
    assert m.chains() == ["A", "B"] and m.n_residues() == 500
    m = rs.load_structure("6msm.pdb.bz2")                 # bzip2, decompressed first
    assert m.chains()[0] == "A" and m.n_residues() > 1100
