"""Training: the loss goes down, outputs are complete and ordered, runs resume exactly,
two-process DDP (gloo) writes the same layout, bad inputs fail clearly."""

import json
import os
import signal
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import torch

from gaussianem.analysis.result import load_result
from gaussianem.errors import TrainingError
from gaussianem.io.particles import load_particles
from gaussianem.train.config import TrainConfig
from gaussianem.train.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def cfg_for(sim, out, **kw):
    base = dict(particles=str(sim / "particles.star"), consensus=str(sim / "consensus.mrc"), outdir=str(out),
                epochs=2, batch_size=32, zdim=3, fit_steps=40, device="cpu", seed=3, lowpass_start=None)
    base.update(kw)
    return TrainConfig(**base)


def read_log(out):
    return [json.loads(l) for l in open(os.path.join(out, "log.jsonl"))]


def test_outputs_and_loss_decrease(tiny_result, tiny_sim):
    out = tiny_result
    for f in ("config.json", "gaussians.pt", "checkpoint.pt", "latents.npz", "log.jsonl",
              "checkpoints/epoch_001.pt", "checkpoints/epoch_002.pt"):
        assert (out / f).exists(), f
    cfg = json.load(open(out / "config.json"))
    assert cfg["train"]["zdim_conf"] == 2 and cfg["grid"]["box"] == 32
    assert cfg["fit"]["correlation"] > 0.9
    lat = np.load(out / "latents.npz")
    assert lat["z"].shape == (256, 3) and lat["z"].dtype == np.float32
    assert lat["z_conf"].shape == (256, 2) and lat["z_comp"].shape == (256, 1)
    # the loss band widens from 15 A during the first epoch (lowpass_epochs=1), full after
    steps = [r for r in read_log(out) if r["kind"] == "step"]
    bands = [r["band"] for r in steps if r["epoch"] == 1]
    assert len(bands) == 4 and bands[0] < 15.0 and all(b1 < b0 for b0, b1 in zip(bands, bands[1:]))
    assert all(r["band"] is None for r in steps if r["epoch"] == 2)


def test_latents_are_in_particle_order(tiny_result, tiny_sim):
    r = load_result(tiny_result)
    for i in (0, 17, 255):
        assert np.allclose(r.encode([i])[0], r.z[i], atol=1e-5)
    assert np.allclose(r.encode([3, 5]), r.z[[3, 5]], atol=1e-5)


def test_resume_continues_exactly(tiny_sim, tmp_path):
    straight = train(cfg_for(tiny_sim, tmp_path / "a", epochs=2))
    train(cfg_for(tiny_sim, tmp_path / "b", epochs=1))
    train(cfg_for(tiny_sim, tmp_path / "b", epochs=2), resume=True)
    steps = [r for r in read_log(straight) if r["kind"] == "step"]
    assert steps[-1]["image"] < steps[0]["image"]          # full band throughout: the loss falls
    za = np.load(os.path.join(straight, "latents.npz"))["z"]
    zb = np.load(tmp_path / "b" / "latents.npz")["z"]
    assert np.allclose(za, zb, atol=1e-5)
    epochs = [r["epoch"] for r in read_log(tmp_path / "b") if r["kind"] == "epoch"]
    assert epochs == [1, 2]


def test_resume_is_exact_in_the_middle_of_the_loss_band_ramp(tiny_sim, tmp_path):
    kw = dict(lowpass_start=15.0, lowpass_epochs=1.5, zdim_conf=2, zdim_comp=1)
    straight = train(cfg_for(tiny_sim, tmp_path / "a", epochs=2, **kw))
    train(cfg_for(tiny_sim, tmp_path / "b", epochs=1, **kw))
    train(cfg_for(tiny_sim, tmp_path / "b", epochs=2, **kw), resume=True)
    za = np.load(os.path.join(straight, "latents.npz"))["z"]
    zb = np.load(tmp_path / "b" / "latents.npz")["z"]
    assert np.allclose(za, zb, atol=1e-5)
    bands = [r["band"] for r in read_log(tmp_path / "b") if r["kind"] == "step"]
    assert bands[-1] is None and any(b is not None for b in bands)   # the ramp crossed the resume


def test_existing_run_is_not_overwritten(tiny_result, tiny_sim):
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg_for(tiny_sim, tiny_result))


def test_interrupt_leaves_resumable_checkpoint(tiny_sim, tmp_path):
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "gaussianem.cli.main", "train", str(tiny_sim / "particles.star"),
           "--consensus", str(tiny_sim / "consensus.mrc"), "-o", str(out), "--epochs", "50",
           "--batch-size", "16", "--progress", "json", "--device", "cpu", "--consensus-rounds", "0"]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "engine"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        ev = json.loads(line)
        if ev["event"] == "step" and ev["step"] >= 3:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130
    assert '"event": "stopped"' in rest
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 0 and ck["step"] >= 3
    # resume to the end of a short run
    r = subprocess.run(cmd[:9] + ["--epochs", "1", "--batch-size", "16", "--resume", "--progress", "none",
                                  "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert np.load(out / "latents.npz")["z"].shape[0] == 256


def test_ddp_two_gloo_processes(tiny_sim, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "engine"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "gaussianem.cli.main", "train", str(tiny_sim / "particles.star"),
           "--consensus", str(tiny_sim / "consensus.mrc"), "-o", str(out), "--epochs", "1",
           "--batch-size", "32", "--zdim", "3", "--progress", "none", "--device", "cpu", "--consensus-rounds", "0"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    z = np.load(out / "latents.npz")["z"]
    assert z.shape == (256, 3) and np.all(np.isfinite(z))
    res = load_result(out)
    assert np.allclose(res.encode([0, 128, 255]), z[[0, 128, 255]], atol=1e-5)
    # both processes trained on half of the particles each: one epoch saw all of them once
    ep = [x for x in read_log(out) if x["kind"] == "epoch"]
    assert len(ep) == 1


def _workers(parent: int) -> dict:
    """LOCAL_RANK -> pid of torchrun's worker processes (read from /proc)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if b"LOCAL_RANK" in env:
            out[int(env[b"LOCAL_RANK"])] = int(pid)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
def test_ddp_stop_signal_to_one_rank_stops_every_rank(tiny_sim, tmp_path):
    """SIGTERM to rank 1 alone (as a cluster may deliver it): both ranks stop at the same
    step (they agree at each step), rank 0 writes the checkpoint, nothing hangs."""
    out = tmp_path / "ddp_stop"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "gaussianem.cli.main", "train", str(tiny_sim / "particles.star"),
           "--consensus", str(tiny_sim / "consensus.mrc"), "-o", str(out), "--epochs", "50",
           "--batch-size", "16", "--zdim", "3", "--progress", "json", "--device", "cpu", "--consensus-rounds", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("{") and json.loads(line).get("event") == "step":
                break
        workers = _workers(proc.pid)
        assert set(workers) == {0, 1}, workers
        os.kill(workers[1], signal.SIGTERM)
        rest = proc.stdout.read()
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code != 0 and '"event": "stopped"' in rest
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] < 50 and not (out / "latents.npz").exists()     # stopped, resumable


def test_process_group_backend_takes_cpu_tensors_on_gpu_machines(monkeypatch):
    from gaussianem.train import distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.backend_for("cuda") == "cpu:gloo,cuda:nccl"       # latents gathered on the CPU
    assert distributed.backend_for("cpu") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.backend_for("auto") == "gloo"


def test_pixel_size_mismatch_is_a_clear_error(tiny_sim, tmp_path):
    bad = tmp_path / "bad.mrc"
    with mrcfile.open(tiny_sim / "consensus.mrc") as m:
        data = m.data.copy()
    with mrcfile.new(bad) as m:
        m.set_data(data)
        m.voxel_size = 2.0
    with pytest.raises(TrainingError, match=r"pixel size mismatch.*bad\.mrc.*2\.0000.*3\.0000"):
        train(cfg_for(tiny_sim, tmp_path / "o", consensus=str(bad)))


def test_missing_images_are_a_clear_error(tiny_sim, tmp_path):
    import starfile
    star = starfile.read(tiny_sim / "particles.star")
    star["particles"].loc[5, "rlnImageName"] = "000999@particles.mrcs"
    os.symlink(tiny_sim / "particles.mrcs", tmp_path / "particles.mrcs")
    starfile.write(star, tmp_path / "particles.star")
    with pytest.raises(ValueError, match=r"row 6.*999.*particles\.mrcs.*256"):
        train(cfg_for(tiny_sim, tmp_path / "o", particles=str(tmp_path / "particles.star")))


def test_bad_options():
    with pytest.raises(TrainingError, match="go together"):
        TrainConfig(particles="p", consensus="c", outdir="o", zdim_conf=2)
    with pytest.raises(TrainingError, match="even"):
        TrainConfig(particles="p", consensus="c", outdir="o", downsample=33)
    with pytest.raises(TrainingError, match="--fine-gaussians"):
        TrainConfig(particles="p", consensus="c", outdir="o", fine_gaussians=-5)
    with pytest.raises(TrainingError, match="--coarse-epochs"):
        TrainConfig(particles="p", consensus="c", outdir="o", coarse_epochs=0)


def test_nan_images_are_refused(tiny_sim, tmp_path):
    import mrcfile
    import shutil
    shutil.copy(tiny_sim / "particles.star", tmp_path / "particles.star")
    with mrcfile.open(tiny_sim / "particles.mrcs") as m:
        data = m.data.copy()
    data[:] = np.nan
    with mrcfile.new(tmp_path / "particles.mrcs") as m:
        m.set_data(data)
        m.voxel_size = 3.0
    with pytest.raises(TrainingError, match="not finite"):
        train(cfg_for(tiny_sim, tmp_path / "o", particles=str(tmp_path / "particles.star")))


def test_gaussians_from_the_atomic_model(tiny_sim, tmp_path):
    from gaussianem.model.gaussians import GaussianSet
    from gaussianem.io.models import read_model
    m = read_model(str(tiny_sim / "model.pdb"))
    out = train(cfg_for(tiny_sim, tmp_path / "m", epochs=1, init="model", model=str(tiny_sim / "model.pdb"),
                        atoms_per_gaussian=10))
    g = GaussianSet.load(os.path.join(out, "gaussians.pt"))
    heavy = int(np.sum(m.elements != "H"))
    assert abs(len(g) - int(np.ceil(heavy / 10))) <= len(m.chains()) + 2      # pruning may drop a few
    with pytest.raises(TrainingError, match="needs --model"):
        train(cfg_for(tiny_sim, tmp_path / "n", epochs=1, init="model"))


def test_loss_band_widens_from_start_to_nyquist():
    from gaussianem.train.step import loss_band
    cfg = TrainConfig(particles="p.star", consensus="c.mrc", outdir="o", epochs=40,
                      lowpass_start=15.0, lowpass_epochs=10)
    apix = 2.0                                            # Nyquist 4 A
    bands = [loss_band(cfg, t, apix) for t in np.linspace(0, 9.99, 50)]
    assert bands[0] == pytest.approx(15.0)
    assert all(b1 < b0 for b0, b1 in zip(bands, bands[1:]))       # strictly sharper
    assert bands[-1] == pytest.approx(4.0, rel=0.01)
    assert loss_band(cfg, 10.0, apix) is None                       # full band after the ramp
    # linear in spatial frequency: half-way is the mean of 1/15 and 1/4
    assert 1 / loss_band(cfg, 5.0, apix) == pytest.approx((1 / 15 + 1 / 4) / 2)
    short = TrainConfig(particles="p.star", consensus="c.mrc", outdir="o", epochs=6)
    assert short.lowpass_epochs == 3.0 and short.lowpass_start == 15.0   # defaults: half of a short run
    assert loss_band(short, 2.9, apix) is not None and loss_band(short, 3.0, apix) is None
    cfg.lowpass_start = None
    assert loss_band(cfg, 0.0, apix) is None
    cfg.lowpass_start = 3.0                                          # finer than Nyquist: nothing to do
    assert loss_band(cfg, 0.0, apix) is None


def test_residual_encoder_sees_image_minus_consensus_projection():
    from gaussianem.model.gaussians import GaussianSet
    from gaussianem.model.networks import HeterogeneityModel, ModelConfig
    torch.manual_seed(0)
    base = GaussianSet(torch.randn(20, 3) * 5, torch.rand(20) + 0.5, torch.full((20,), 3.0))
    m_res = HeterogeneityModel(ModelConfig(box=16, zdim=4, encoder_input="residual", gaussian_features=False), base)
    m_img = HeterogeneityModel(ModelConfig(box=16, zdim=4, encoder_input="image", gaussian_features=False), base)
    m_img.load_state_dict(m_res.state_dict())
    x, ref = torch.randn(3, 16, 16), torch.randn(3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(m_res.encode(x, ref)[0], m_img.encode(x - ref)[0], atol=1e-6)
        assert not torch.allclose(m_res.encode(x, ref)[0], m_img.encode(x)[0], atol=1e-3)
    with pytest.raises(ValueError, match="consensus projection"):
        m_res.encode(x)
    both = HeterogeneityModel(ModelConfig(box=16, zdim=4, encoder_input="both", gaussian_features=False), base)
    assert both.image_encoder.net[0].in_features == 2 * 16 * 16
    with pytest.raises(TrainingError, match="encoder input"):
        TrainConfig(particles="p", consensus="c", outdir="o", encoder_input="images")


def test_init_from_carries_networks_to_another_gaussian_set(tiny_result, tiny_sim, tmp_path):
    from gaussianem.model.gaussians import GaussianSet
    from gaussianem.model.networks import HeterogeneityModel
    from gaussianem.train.prepare import load_networks
    parent = load_result(tiny_result)
    finer = GaussianSet(torch.randn(2 * len(parent.base), 3) * 5, torch.rand(2 * len(parent.base)) + 0.1,
                        torch.full((2 * len(parent.base),), 1.5))
    child = HeterogeneityModel(parent.model_config, finer)
    load_networks(child, str(tiny_result), "cpu")
    for k, v in parent.model.state_dict().items():
        if k in ("centres", "amplitudes", "widths"):
            assert child.state_dict()[k].shape[0] == 2 * len(parent.base)     # its own Gaussians
        else:
            assert torch.equal(child.state_dict()[k], v), k                     # the parent's networks
    # a run started from it trains, with its own count
    out = train(cfg_for(tiny_sim, tmp_path / "fine", epochs=1, zdim_conf=2, zdim_comp=1,
                        num_gaussians=40, init_from=str(tiny_result)))
    assert len(load_result(out).base) <= 40
    # networks that do not fit are a clear error
    with pytest.raises(TrainingError, match="do not fit"):
        train(cfg_for(tiny_sim, tmp_path / "bad", epochs=1, zdim=5, init_from=str(tiny_result)))


def test_residual_correlations_point_at_the_missing_gaussian(tiny_sim):
    """With ``gaussian_features`` the encoder reads, per Gaussian, the residual's
    correlation with its projection (pose and CTF of each particle): for images that
    lack one Gaussian, that Gaussian's value is the most negative in every pose."""
    from gaussianem.physics import render
    from gaussianem.model.gaussians import GaussianSet
    from gaussianem.model.networks import HeterogeneityModel, ModelConfig
    from gaussianem.model.encoding import Physics, encoder_inputs, residual_correlations
    torch.manual_seed(0)
    n, box = 30, 32
    base = GaussianSet(torch.randn(n, 3) * 12, torch.rand(n) + 0.5, torch.full((n,), 3.0))
    model = HeterogeneityModel(ModelConfig(box=box, zdim=2, gaussian_features=True), base)
    phys = Physics(load_particles(str(tiny_sim / "particles.star")), box, "cpu")
    idx = torch.arange(12)
    for k in (0, 7, 29):
        amps = base.amplitudes.clone()
        amps[k] = 0
        images = render.project(base.centres, amps, base.widths, phys.rot[idx], phys.shift[idx], box,
                                phys.apix[idx], ctf_params=phys.ctf[idx])
        ref, g = residual_correlations(model, images, idx, phys, box)
        assert g.shape == (12, n, 4)                      # amplitude, then x, y, z of the centre
        assert torch.equal(g[..., 0].argmin(1), torch.full((12,), k))
        # (the consensus projection is mean-free, as the normalised images are)
        missing = render.project(base.centres[k:k + 1], base.amplitudes[k:k + 1], base.widths[k:k + 1],
                                 phys.rot[idx], phys.shift[idx], box, phys.apix[idx], ctf_params=phys.ctf[idx])
        mean_free = lambda x: x - x.mean((-2, -1), keepdim=True)  # noqa: E731
        assert torch.allclose(ref - mean_free(images), mean_free(missing), atol=1e-4)
    # one Gaussian moved: its centre gradient is the largest and points the way it moved
    k, d = 7, torch.tensor([0.0, 0.0, 1.5])
    moved = base.centres.clone()
    moved[k] += d
    images = render.project(moved, base.amplitudes, base.widths, phys.rot[idx], phys.shift[idx], box,
                            phys.apix[idx], ctf_params=phys.ctf[idx])
    _, g = residual_correlations(model, images, idx, phys, box)
    # (a projection sees only the move's in-plane part: R's first two rows)
    r2 = phys.rot[idx][:, :2]
    d_plane = torch.einsum("bij,bi->bj", r2, torch.einsum("bij,j->bi", r2, d))
    seen = d_plane.norm(dim=1) > 0.75
    assert seen.sum() >= 6
    # (the largest in nearly every pose: another Gaussian overlapping it in projection may win)
    assert (g[seen][..., 1:].norm(dim=-1).argmax(1) == k).float().mean() >= 0.8
    assert bool((torch.nn.functional.cosine_similarity(g[seen][:, k, 1:], d_plane[seen], dim=1) > 0.8).all())
    _, feats = encoder_inputs(model, images, idx, phys, box)
    assert feats.shape == (12, 4 * model.cfg.emb_dim) and feats.requires_grad  # trains the embedding
    assert model.image_encoder.net[0].in_features == box * box + 4 * model.cfg.emb_dim


def test_training_with_gaussian_features_encodes_as_it_trained(tiny_sim, tmp_path):
    out = train(cfg_for(tiny_sim, tmp_path / "gf", epochs=1, zdim_conf=2, zdim_comp=1, gaussian_features=True))
    r = load_result(out)
    assert r.model_config.gaussian_features
    assert np.allclose(r.encode([0, 100, 255]), r.z[[0, 100, 255]], atol=1e-5)


def test_fine_consensus_map_is_fitted_at_the_training_pixel_size(tiny_sim, tmp_path, monkeypatch):
    """A consensus map over FIT_BOX voxels is Fourier-cropped to the training pixel size
    before the Gaussians are fitted (a box-256 map at full size took 24 GB); they stay in
    the consensus map's frame, and maps are still generated on its full grid. (FIT_BOX is
    128; lowered here to 8.)"""
    from gaussianem.progress import Progress
    from gaussianem.train import prepare
    monkeypatch.setattr(prepare, "FIT_BOX", 8)
    out = tmp_path / "ds"
    msgs = []
    progress = Progress("none")
    progress.message = msgs.append
    train(cfg_for(tiny_sim, out, epochs=1, downsample=16), progress=progress)
    assert any("Fourier-cropped to 16^3" in m for m in msgs), msgs
    res = load_result(out)
    assert res.grid.box == 32                                       # the consensus grid
    assert res.base.centres.abs().max() < 16 * 3.0                  # inside the box, in Angstrom
    with open(out / "config.json") as f:
        assert json.load(f)["fit"]["correlation"] > 0.8
    assert res.volume(res.z[:1]).shape[-3:] == (32, 32, 32)


def test_more_gaussians_than_the_map_holds_is_said(tiny_sim, tmp_path):
    """--num-gaussians beyond the voxels above the threshold cannot all be placed: the
    run says how many it uses instead of silently using fewer (an H200 run asked for
    20,000 and fitted 2,870 without a word)."""
    from gaussianem.io.mrc import read_map
    from gaussianem.progress import Progress
    from gaussianem.train.prepare import build_base_gaussians
    from gaussianem.physics.grid import Grid
    vol, apix, origin = read_map(str(tiny_sim / "consensus.mrc"))
    msgs = []
    progress = Progress("none")
    progress.message = msgs.append
    cfg = cfg_for(tiny_sim, tmp_path / "many", num_gaussians=10 ** 6, fit_steps=2)
    base, _ = build_base_gaussians(cfg, vol, Grid(vol.shape[0], apix, origin), "cpu", progress)
    assert len(base) < 10 ** 6
    assert any(m.startswith("warning: --num-gaussians 1000000") and f"using {len(base)}" in m for m in msgs), msgs


def _torchrun(args, timeout=400):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "gaussianem.cli.main", "train"] + args
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]


def test_resume_on_another_number_of_processes(tiny_sim, tmp_path):
    """The global batches do not depend on the number of processes: 1 epoch on 2
    processes then 1 on one, or 1 on one then 1 on 2, ends where 2 epochs on one do
    (up to floating-point rounding in the gradient average)."""
    args = lambda out, epochs: [str(tiny_sim / "particles.star"), "--consensus", str(tiny_sim / "consensus.mrc"),
                                "-o", str(out), "--epochs", str(epochs), "--batch-size", "32", "--zdim", "3",
                                "--seed", "3", "--lowpass-start", "0", "--device", "cpu", "--progress", "none",
                                "--consensus-rounds", "0", "--cut-graph", "0"]   # their schedules follow --epochs
    from gaussianem.cli.main import main
    a, b, c = tmp_path / "one", tmp_path / "two_then_one", tmp_path / "one_then_two"
    assert main(["train"] + args(a, 2)) == 0
    _torchrun(args(b, 1))
    assert main(["train"] + args(b, 2) + ["--resume"]) == 0
    assert main(["train"] + args(c, 1)) == 0
    _torchrun(args(c, 2) + ["--resume"])
    za = np.load(a / "latents.npz")["z"]
    wa = torch.load(a / "checkpoint.pt", weights_only=False)["model"]
    for run in (b, c):
        z = np.load(run / "latents.npz")["z"]
        w = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
        assert np.abs(z - za).max() < 1e-3 * np.abs(za).max() + 1e-5, np.abs(z - za).max()
        worst = max(float((w[k].float() - wa[k].float()).abs().max()) for k in wa)
        assert worst < 1e-3, worst


def test_training_from_cryodrgn_inputs_matches_the_star(tiny_sim, tmp_path):
    """gaussianem train IMAGES.mrcs --poses pose.pkl --ctf ctf.pkl (cryoDRGN's parsed
    inputs, written here the way cryoDRGN's parse_pose_star/parse_ctf_star do) trains the
    run the .star gives."""
    import pickle

    from gaussianem.cli.main import main
    from gaussianem.io.particles import load_particles
    d = load_particles(tiny_sim / "particles.star")
    with open(tmp_path / "pose.pkl", "wb") as f:
        pickle.dump((d.rotations, d.shifts / d.apix[:, None] / d.box), f)       # RELION A; origin px / D
    c = d.ctf
    ctf = np.stack([np.full(len(d), d.box), d.apix, c.defocus_u, c.defocus_v, c.defocus_angle, c.voltage, c.cs,
                    c.amp_contrast, c.phase_shift], axis=1)
    with open(tmp_path / "ctf.pkl", "wb") as f:
        pickle.dump(ctf.astype(np.float32), f)
    common = ["--consensus", str(tiny_sim / "consensus.mrc"), "--epochs", "1", "--batch-size", "32", "--zdim", "2",
              "--device", "cpu", "--progress", "none", "--lowpass-start", "0"]
    assert main(["train", str(tiny_sim / "particles.star"), "-o", str(tmp_path / "star")] + common) == 0
    assert main(["train", str(tiny_sim / "particles.mrcs"), "--poses", str(tmp_path / "pose.pkl"), "--ctf",
                 str(tmp_path / "ctf.pkl"), "-o", str(tmp_path / "pkl")] + common) == 0
    za = np.load(tmp_path / "star" / "latents.npz")["z"]
    zb = np.load(tmp_path / "pkl" / "latents.npz")["z"]
    assert np.abs(za - zb).max() < 1e-2 * np.abs(za).max(), np.abs(za - zb).max()
    assert (tmp_path / "pkl" / "z.pkl").exists()


def test_unsmear_and_segments_train_and_reload(tiny_sim, tmp_path):
    """--unsmear refits the base after an epoch (logged, gaussians.pt rewritten with the
    base the networks trained on) and --segments trains; the result reloads with both,
    its decoded states from its own base."""
    from gaussianem.model.gaussians import GaussianSet
    out = train(cfg_for(tiny_sim, tmp_path / "us", epochs=2, zdim_conf=2, zdim_comp=1, unsmear=1, segments=3))
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    passes = [r for r in log if r.get("kind") == "unsmear"]
    assert [p["epoch"] for p in passes] == [1]
    assert passes[0]["misfit_after"] <= passes[0]["misfit_before"]
    r = load_result(out)
    assert r.model_config.segments == 3
    saved = GaussianSet.load(os.path.join(out, "gaussians.pt"))
    assert torch.equal(saved.centres, r.model.centres.cpu()) and torch.equal(saved.widths, r.model.widths.cpu())
    assert r.decode(r.z[:2])["rigid"].shape == (2, len(saved), 3)
