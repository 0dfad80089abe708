"""Training that holds on data it was not tuned on: images in any units and offsets, a
consensus map in its own units, per-particle scale, inverted contrast, degenerate
solutions, and a run that fails saying so (issue: training that holds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import torch

from gaussianem.errors import GaussianEMError, TrainingError
from gaussianem.io.images import ParticleImages
from gaussianem.io.mrc import read_map
from gaussianem.io.particles import load_particles
from gaussianem.io.rundir import RunDir
from gaussianem.model import intensity, losses
from gaussianem.model.encoding import Physics
from gaussianem.model.gaussians import GaussianSet, init_from_map
from gaussianem.train import health

from known_decoder import KnownDecoder


def rescaled_copy(src, dst, image_factor=1.0, image_offset=0.0, map_factor=1.0, per_particle=None,
                  negate=False):
    """A copy of a simulated set whose images are ``image_factor * x + image_offset`` (times
    ``per_particle[i]`` for image i) and whose consensus map is ``map_factor`` times the original."""
    shutil.copytree(src, dst)
    with mrcfile.open(os.path.join(dst, "particles.mrcs"), "r+") as m:
        x = m.data.astype(np.float64)
        if per_particle is not None:
            x = x * np.asarray(per_particle)[:, None, None]
        m.data[:] = (-1 if negate else 1) * image_factor * x + image_offset
    with mrcfile.open(os.path.join(dst, "consensus.mrc"), "r+") as m:
        m.data[:] = m.data * map_factor
    return dst


def measured_scale(simdir, gaussians=None):
    data = load_particles(os.path.join(simdir, "particles.star"))
    vol, apix, _ = read_map(os.path.join(simdir, "consensus.mrc"))
    if gaussians is None:
        gaussians = init_from_map(vol, apix, n=60, seed=0)
    images = ParticleImages(data, box=data.box)
    phys = Physics(data, data.box, "cpu")
    std = intensity.image_std(images)
    return intensity.estimate(gaussians, images, phys, data.box, std, 15.0, "cpu"), std, images, gaussians


def test_scale_follows_the_units_of_images_and_map(tiny_sim, tmp_path):
    """x0.01 + 3 on the images and x0.05 on the map: the group scale moves by exactly
    0.01 / 0.05 relative to the original set (the same Gaussians, scaled with the map),
    offsets disappear from the normalised images, which are then identical."""
    ref, std0, images0, g = measured_scale(str(tiny_sim))
    a = rescaled_copy(tiny_sim, tmp_path / "a", image_factor=0.01, image_offset=3.0, map_factor=0.05)
    g_a = GaussianSet(g.centres, g.amplitudes * 0.05, g.widths)
    got, std_a, images_a, _ = measured_scale(str(a), g_a)
    # the image std is measured on mean-free images: the offset does not enter it
    assert std_a == pytest.approx(0.01 * std0, rel=1e-4)
    # normalised images are the same numbers
    x0 = intensity.normalise(images0.__getitems__([0, 5])["image"], std0)
    xa = intensity.normalise(images_a.__getitems__([0, 5])["image"], std_a)
    assert torch.allclose(x0, xa, atol=1e-3)
    assert got.group_scale[0] == pytest.approx(ref.group_scale[0] / 0.05, rel=1e-3)
    assert np.allclose(got.particle, ref.particle / 0.05, rtol=1e-3)
    assert got.correlation == pytest.approx(ref.correlation, abs=1e-4)
    assert ref.group_z[0] > 5 and 0.05 < ref.correlation < 1


def test_per_particle_scale_is_recovered(tiny_sim, tmp_path):
    """Images scaled by +-20% per particle (ice thickness): the estimated per-particle
    scales follow the true ones (the set's SNR is 1, so little shrinkage; its absent chain
    and hinge make the particles differ from the consensus too, hence not 1.0)."""
    rng = np.random.default_rng(0)
    s = rng.uniform(0.8, 1.2, 256)
    d = rescaled_copy(tiny_sim, tmp_path / "pp", per_particle=s)
    est, *_ = measured_scale(str(d))
    assert est.shrink > 0.5
    assert np.corrcoef(est.particle, s)[0, 1] > 0.75
    ref, *_ = measured_scale(str(tiny_sim))
    assert ref.shrink < est.shrink


def test_inverted_contrast_stops_and_suggests_invert(tiny_sim, tmp_path):
    d = rescaled_copy(tiny_sim, tmp_path / "neg", negate=True, image_factor=5.0)
    with pytest.raises(TrainingError, match=r"inverted contrast.*--invert"):
        measured_scale(str(d))


def test_images_unrelated_to_the_map_are_refused(tiny_sim, tmp_path):
    d = rescaled_copy(tiny_sim, tmp_path / "noise")
    with mrcfile.open(os.path.join(d, "particles.mrcs"), "r+") as m:
        m.data[:] = np.random.default_rng(1).normal(size=m.data.shape)
    with pytest.raises(TrainingError, match="do not match the consensus map"):
        measured_scale(str(d))
    assert issubclass(TrainingError, GaussianEMError)


def test_decoder_makes_no_common_translation(tiny_sim):
    """With centre_displacements (training's default) a common translation the decoder
    outputs is removed, by the mass-weighted mean (default) or the median."""
    from gaussianem.model.networks import HeterogeneityModel, ModelConfig
    torch.manual_seed(0)
    base = GaussianSet(torch.randn(40, 3) * 10, torch.rand(40) + 0.5, torch.rand(40) + 2)
    for centred, by in ((False, "median"), (True, "median"), (True, "mass")):
        model = HeterogeneityModel(ModelConfig(box=32, zdim=3, centre_displacements=centred, centre_by=by), base)
        last = model.decoder.body[-1]
        with torch.no_grad():
            last.bias[:3] = torch.tensor([50.0, -30.0, 20.0])        # a large common translation
        out = model.decode(torch.randn(5, 3))
        common = (out["displacement"].median(dim=1).values if by == "median"
                  else torch.einsum("bnk,n->bk", out["displacement"], model.mass_weights()))
        if centred:
            assert common.abs().max() < 1e-4
        else:
            assert common.abs().max() > 5


def test_a_moving_domain_keeps_its_motion_and_the_rest_stays():
    """A third of the Gaussians moves 6 A along x on top of a pose error of (2, -1, 3) A:
    the median removal leaves the third at +6 A and the rest at 0; the mass-weighted
    mean drags the rest by -2 A and keeps only 4 A of the domain's motion."""
    from gaussianem.model.networks import remove_translation
    n = 30
    domain = torch.zeros(n, dtype=torch.bool)
    domain[:10] = True
    disp = torch.tensor([2.0, -1.0, 3.0]).expand(1, n, 3).clone()
    disp[0, domain, 0] += 6.0
    mass = torch.full((n,), 1.0 / n)
    med = remove_translation(disp, "median", mass)[0]
    assert torch.allclose(med[~domain], torch.zeros(3), atol=1e-6)
    assert torch.allclose(med[domain], torch.tensor([6.0, 0, 0]), atol=1e-6)
    mean = remove_translation(disp, "mass", mass)[0]
    assert torch.allclose(mean[~domain], torch.tensor([-2.0, 0, 0]), atol=1e-5)
    assert torch.allclose(mean[domain], torch.tensor([4.0, 0, 0]), atol=1e-5)
    core = remove_translation(disp, "core", mass)[0]           # the domain counts 1/37 of the rest
    assert core[~domain].abs().max() < 0.15 and core[domain, 0].min() > 5.85
    assert torch.equal(remove_translation(disp, "none", mass), disp)
    with pytest.raises(GaussianEMError, match="mass, median, core or none"):
        remove_translation(disp, "mode", mass)


def test_core_translation_removes_a_rigid_shift_and_passes_its_gradient():
    """A rigid shift goes entirely; the gradient of the core translation reaches the
    displacements (its weights are held fixed)."""
    from gaussianem.model.networks import core_translation
    mass = torch.rand(20) + 0.5
    mass = mass / mass.sum()
    d = (torch.tensor([1.0, -2.0, 0.5]).expand(2, 20, 3) + 0.0).requires_grad_(True)
    t = core_translation(d, mass)
    assert torch.allclose(t, torch.tensor([[1.0, -2.0, 0.5]] * 2), atol=1e-6)
    t.sum().backward()
    assert torch.allclose(d.grad.sum(1), torch.ones(2, 3), atol=1e-5)


def test_amplitude_hinge_penalises_a_global_loss_of_density():
    mass = torch.full((10,), 0.1)
    assert float(losses.amplitude_loss(torch.ones(4, 10), mass)) == 0
    partly = torch.ones(4, 10)
    partly[:2, :3] = 0                                             # a part absent in half the batch
    assert float(losses.amplitude_loss(partly, mass)) == 0
    assert float(losses.amplitude_loss(torch.zeros(4, 10), mass)) == pytest.approx(0.36)


def test_health_checks_name_what_failed():
    ok = {"finite": True, "explained": 1.02, "amplitude_mean": 0.98, "near_bound": 0.0,
          "displacement_rms": 1.0, "kl_per_dim": [3.0], "l2_model": 1, "l2_consensus": 1, "l2_zero": 1.1}
    used = {"displacement_spread": 0.8, "amplitude_spread": 0.05, "particles": 64}
    assert health.diverged(ok) is None
    assert health.final_report(ok, used, [], None, False)["status"] == "healthy"
    empty = dict(ok, explained=0.02, amplitude_mean=0.0)
    assert "explains 2%" in health.diverged(empty)
    r = health.final_report(empty, used, [], None, False)
    assert r["status"] == "failed" and "amplitude" in r["summary"]
    assert "bound" in health.diverged(dict(ok, near_bound=0.9))
    unused = {"displacement_spread": 0.001, "amplitude_spread": 0.0001, "particles": 64}
    assert health.final_report(ok, unused, [], None, False)["status"] == "failed"
    assert health.final_report(ok, unused, [], None, False, judge_latent=False)["status"] == "warning"


def test_latent_usage_measures_how_far_particles_move_and_how_many_move_far():
    z = np.full((100, 1), 0.1, np.float32)
    z[:8] = 5.0                                   # 8% of the particles move 50 times further
    u = health.latent_usage(KnownDecoder(), z, n=100)
    assert u["displacement_median"] == pytest.approx(0.1)
    assert u["outlier_threshold"] == pytest.approx(0.5)          # the floor: 3 x 0.1 is below it
    assert u["displacement_outliers"] == pytest.approx(0.08)


def test_health_warns_when_no_particle_moves_or_a_minority_carries_the_motion():
    ok = {"finite": True, "explained": 1.02, "amplitude_mean": 0.98, "near_bound": 0.0,
          "displacement_rms": 1.0, "kl_per_dim": [3.0], "l2_model": 1, "l2_consensus": 1, "l2_zero": 1.1}
    base = {"displacement_spread": 0.8, "amplitude_spread": 0.05, "particles": 256, "outlier_threshold": 2.7}
    moving = dict(base, displacement_median=0.9, displacement_outliers=0.0)
    assert health.final_report(ok, moving, [], None, True)["status"] == "healthy"
    still = health.final_report(ok, dict(moving, displacement_median=0.04), [], None, True)
    assert still["status"] == "warning" and "found no motion" in still["summary"]
    few = health.final_report(ok, dict(moving, displacement_outliers=0.1), [], None, True)
    assert few["status"] == "warning" and "10% of the particles" in few["summary"] and "junk" in few["summary"]
    # runs measured before these numbers existed, and runs too short to judge: no such warnings
    assert health.final_report(ok, base, [], None, True)["status"] == "healthy"
    short = health.final_report(ok, dict(moving, displacement_median=0.04), [], None, True, judge_latent=False)
    assert short["status"] == "healthy"
    junk = health.final_report(ok, moving, [], {"low_signal_fraction": 0.12}, True)
    assert junk["status"] == "warning" and "12% of the particles" in junk["summary"] and "--low-signal" in junk["summary"]
    assert health.final_report(ok, moving, [], {"low_signal_fraction": 0.01}, True)["status"] == "healthy"


def test_low_signal_particles_are_those_at_half_their_groups_scale():
    from gaussianem.model.intensity import IntensityScale
    s = IntensityScale(groups=[1, 2], group_scale=[4.0, 10.0],
                       particle=np.array([2.0, 2.1, 5.0, 4.0, 6.0, 3.0], np.float32))
    groups = np.array([1, 1, 2, 1, 2, 3])                 # group 3 unknown: the median scale, 7
    np.testing.assert_array_equal(s.low_signal(groups), [True, False, True, False, False, True])
    assert not IntensityScale.legacy(3).low_signal(np.ones(3)).any()       # runs without scales: none


def test_a_run_that_cannot_recover_fails_with_nonzero_exit(tiny_sim, tmp_path):
    """A learning rate far too high: epochs diverge, are restored with lower learning rates
    (logged), and when that does not help the CLI exits non-zero, says why, never 'done',
    and health.json says failed."""
    out = tmp_path / "bad"
    r = subprocess.run([sys.executable, "-m", "gaussianem.cli.main", "train", str(tiny_sim / "particles.star"),
                        "--consensus", str(tiny_sim / "consensus.mrc"), "-o", str(out), "--epochs", "3",
                        "--lr", "300", "--progress", "json", "--threads", "1", "--consensus-rounds", "0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0, r.stdout[-2000:]
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert not any(e.get("event") == "done" for e in events)
    assert "diverged" in r.stderr + r.stdout
    rep = json.loads((out / "health.json").read_text())
    assert rep["status"] == "failed"
    assert len(rep["recoveries"]) == 3
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    lrs = [rec["lr"] for rec in logged if rec["kind"] == "recovery"]
    assert lrs == pytest.approx([300 * 0.3, 300 * 0.09, 300 * 0.027])


@pytest.fixture(scope="module")
def arbitrary_units_sim(tmp_path_factory):
    """1,500 particles at SNR 0.1 (box 32, 3 A/pixel, a 60-degree hinge and a chain absent
    in 30%), images x0.01 + 3, consensus map x0.05: nothing near 1."""
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.io.models import write_model
    from gaussianem.sim.testprotein import build_test_model
    d = tmp_path_factory.mktemp("units")
    write_model(str(d / "input_model.pdb"), build_test_model())
    simulate_from_model(str(d / "input_model.pdb"), str(d / "sim"),
                        SimulationSpec(n=1500, box=32, apix=3.0, snr=0.1, seed=3, hinge_angle=60.0))
    return rescaled_copy(d / "sim", d / "units", image_factor=0.01, image_offset=3.0, map_factor=0.05)


def test_default_training_on_arbitrary_units_follows_the_motion(arbitrary_units_sim, tmp_path):
    """The regression test of the collapse: the default command (no tuning flags) on a
    low-SNR set in arbitrary units learns a latent that follows the motion, keeps its maps
    and reports itself healthy."""
    from gaussianem.analysis.evaluate import load_truth, motion_probe
    from gaussianem.progress import Progress
    from gaussianem.analysis.result import load_result
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    d = arbitrary_units_sim
    out = tmp_path / "run"
    events = []
    prog = Progress("none")
    prog.event = lambda kind, **kw: events.append((kind, kw))
    train(TrainConfig(particles=str(d / "particles.star"), consensus=str(d / "consensus.mrc"), outdir=str(out),
                      epochs=12, threads=1), progress=prog)
    assert events[-1][0] == "done" and events[-1][1]["health"] == "healthy"
    rep = health.read(RunDir(out))
    assert rep["status"] == "healthy"
    assert rep["intensity"]["group_scale"]["1"] > 1        # the map is 20x too weak for the images
    res = load_result(str(out))
    truth = load_truth(str(d))
    assert motion_probe(res.z, truth["motion"]) > 0.8
    vol = res.volume(np.median(res.z, 0))
    cons, _, _ = read_map(str(d / "consensus.mrc"))
    assert vol.std() > 0.3 * cons.std()
    assert np.corrcoef(vol.ravel(), cons.ravel())[0, 1] > 0.8


def test_training_is_the_same_in_any_units(tiny_sim, tmp_path):
    """The same particles with images x0.01 and x100 (and offsets), the map x0.05 and x20:
    two short trainings give the same latents (up to float rounding through the fit)."""
    from gaussianem.analysis.result import load_result
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    zs = []
    for name, a, b, c in (("small", 0.01, 3.0, 0.05), ("large", 100.0, -500.0, 20.0)):
        d = rescaled_copy(tiny_sim, tmp_path / name, image_factor=a, image_offset=b, map_factor=c)
        out = tmp_path / f"run_{name}"
        train(TrainConfig(particles=str(d / "particles.star"), consensus=str(d / "consensus.mrc"),
                          outdir=str(out), epochs=2, batch_size=32, fit_steps=60, threads=1, device="cpu"))
        zs.append(load_result(str(out)).z)
    corr = [abs(np.corrcoef(zs[0][:, k], zs[1][:, k])[0, 1]) for k in range(zs[0].shape[1])]
    assert min(corr) > 0.95, corr


def test_shift_errors_in_the_star_file_are_corrected(tiny_sim):
    """Origins off by 1 pixel RMS per axis (a refinement's search step): the posterior
    shift corrections measured before training bring them at least halfway back, and on
    the exact origins they stay small."""
    data = load_particles(str(tiny_sim / "particles.star"))
    vol, apix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    g = init_from_map(vol, apix, n=60, seed=0)
    true = data.shifts.copy()

    def corrected(shifts):
        data.shifts = shifts
        images = ParticleImages(data, box=data.box)
        phys = Physics(data, data.box, "cpu")
        est = intensity.estimate(g, images, phys, data.box, intensity.image_std(images), 15.0, "cpu")
        assert torch.allclose(phys.shift, torch.from_numpy((shifts + est.shift_correction).astype(np.float32)),
                              atol=1e-4)
        return shifts + est.shift_correction

    err = np.random.default_rng(0).normal(0, apix, true.shape)
    rms = lambda x: float(np.sqrt((x ** 2).mean()))  # noqa: E731
    assert rms(corrected(true + err) - true) < 0.5 * rms(err)
    assert rms(corrected(true.copy()) - true) < 0.4 * apix


def test_encoding_particles_of_another_file_scales_them_as_training_did(tiny_result, tiny_sim, tmp_path):
    """Result.encode of a particle file other than the training one measures those
    particles' scales (with the run's group scales and shrinkage, no shift correction):
    the training particles given as another file encode close to their own latents."""
    from gaussianem.analysis.result import load_result
    other = tmp_path / "other.star"
    shutil.copy(tiny_sim / "particles.star", other)
    shutil.copy(tiny_sim / "particles.mrcs", tmp_path / "particles.mrcs")
    res = load_result(str(tiny_result))
    z = res.encode(np.arange(256), particles=str(other))
    assert z.shape == res.z.shape and np.all(np.isfinite(z))
    _, phys = res.particle_source(str(other))
    assert torch.allclose(phys.shift, phys.star_shift)              # no shift correction for new files
    scales = phys.scale.numpy()
    assert np.corrcoef(scales, res.intensity.particle)[0, 1] > 0.9
    corr = [np.corrcoef(z[:, k], res.z[:, k])[0, 1] for k in range(z.shape[1])]
    assert min(corr) > 0.9, corr


def test_robust_distance_loss_is_squared_for_small_strain_and_linear_for_large():
    # two Gaussians 5 A apart; the edge stretched by s: an independent evaluation of the
    # Charbonnier penalty 2 eps^2 (sqrt(1 + (s/eps)^2) - 1)
    base = torch.tensor([[0.0, 0, 0], [5.0, 0, 0]])
    edges = torch.tensor([[0, 1]])
    eps = 0.1
    for s in (0.01, 0.5, 4.0):
        deformed = torch.tensor([[[0.0, 0, 0], [5.0 + s, 0, 0]]])
        plain = float(losses.distance_loss(base, deformed, edges))
        robust = float(losses.distance_loss(base, deformed, edges, robust=eps))
        assert plain == pytest.approx(s * s, rel=1e-4)
        assert robust == pytest.approx(2 * eps ** 2 * (np.sqrt(1 + (s / eps) ** 2) - 1), rel=1e-4)
    small = float(losses.distance_loss(base, torch.tensor([[[0.0, 0, 0], [5.01, 0, 0]]]), edges, robust=eps))
    assert small == pytest.approx(0.01 ** 2, rel=0.01)                    # squared below eps
    big = float(losses.distance_loss(base, torch.tensor([[[0.0, 0, 0], [9.0, 0, 0]]]), edges, robust=eps))
    assert big == pytest.approx(2 * eps * 4.0, rel=0.03)                  # 2 eps |s| above: a torn edge
    assert big < 0.1 * 4.0 ** 2                                           # costs far less than its square
