"""The engine on an NVIDIA GPU: the same numbers as on the CPU, float32 where it must be,
the fused renderer's kernels against float64, and the training paths (the real step at
full size with each renderer, train + resume, torchrun/NCCL) running.

Every test is marked ``cuda`` (``pytest -m cuda``) and skipped without a CUDA device.
``tools/gpu_check.py`` runs this file; with ``GAUSSIANEM_GPU_FIGURES`` set to a path,
the measured figures (step time, peak memory) are appended there as JSON lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gaussianem.analysis.result import load_result
from gaussianem.bench import real_step
from gaussianem.physics import ctf, poses, render, render_triton
from gaussianem.train.config import TrainConfig
from gaussianem.train.loop import train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def full_float32():
    """Comparisons with the CPU in true float32: no TF32 in matrix products or cuDNN."""
    old = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_float32_matmul_precision(old[0])
    torch.backends.cudnn.allow_tf32 = old[1]


def _record(name: str, **figures) -> None:
    print(f"\n[gpu figures] {name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in figures.items()))
    path = os.environ.get("GAUSSIANEM_GPU_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, **figures}) + "\n")


def _close(gpu: torch.Tensor, cpu: torch.Tensor, rel: float) -> None:
    """``gpu`` equals ``cpu`` within ``rel`` times the largest magnitude of ``cpu``."""
    gpu = gpu.detach().cpu()
    scale = float(cpu.abs().max()) or 1.0
    err = float((gpu - cpu).abs().max())
    assert err <= rel * scale, f"max |gpu - cpu| = {err:.3g}, {err / scale:.3g} of the largest value"


def _scene(B=4, N=5000, seed=0):
    """Gaussians, poses, shifts and CTFs; N above the CUDA chunk (4,096), so both the CPU
    and the CUDA renderer work in several chunks."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    return dict(centres=torch.randn(N, 3, generator=g) * 15, amplitudes=torch.rand(N, generator=g) + 0.5,
                widths=torch.rand(N, generator=g) * 1.5 + 2.0,
                rotations=torch.from_numpy(poses.random_rotations(B, rng)).float(),
                shifts=torch.randn(B, 2, generator=g) * 3,
                ctf=ctf.CTFParams.random(B, rng).as_tensor())


def _project_with_grads(scene: dict, device, box=64, apix=1.5):
    """Projections (CTF applied) and the gradients of a weighted sum of them with respect
    to centres, amplitudes, widths and the CTF parameters."""
    params = [scene[k].to(device).clone().requires_grad_(True) for k in ("centres", "amplitudes", "widths", "ctf")]
    img = render.project(params[0], params[1], params[2], scene["rotations"].to(device),
                         scene["shifts"].to(device), box, apix, ctf_params=params[3])
    weight = torch.rand(img.shape, generator=torch.Generator().manual_seed(1)).to(device)
    (img * weight).sum().backward()
    return img.detach().cpu(), [p.grad.cpu() for p in params]


def _ctf_images(params, box: int, apix, device) -> torch.Tensor:
    """CTF images (B, box, box//2+1) of ``params`` at pixel size ``apix`` (a scalar or one per particle)."""
    a = apix if np.ndim(apix) == 0 else torch.as_tensor(np.asarray(apix, dtype=np.float32))
    return ctf.evaluate(ctf.fourier_grid(box, a, device=device), params.as_tensor(device=device))


def _ctf_close(gpu: torch.Tensor, params, box: int, apix) -> None:
    """The GPU's float32 CTF is as close to a float64 evaluation as the CPU's float32 one.

    The phase reaches ~800 rad at the corner of a 1 A/pixel box (defocus 2.5 um), where one
    float32 rounding of the phase is ~6e-5: GPU and CPU sines differ by that much (H200,
    torch 2.11: 7.6e-5), so a fixed 1e-5 tolerance tests the float format, not the code.
    """
    cpu = _ctf_images(params, box, apix, "cpu")
    a = apix if np.ndim(apix) == 0 else torch.as_tensor(np.asarray(apix, dtype=np.float64))
    ref = ctf.evaluate(ctf.fourier_grid(box, a, dtype=torch.float64), params.as_tensor().double())
    cpu_err = float((cpu.double() - ref).abs().max())
    gpu_err = float((gpu.detach().cpu().double() - ref).abs().max())
    assert cpu_err < 1e-3                       # the float64 reference is the same CTF
    assert gpu_err <= 3 * cpu_err + 1e-6, f"GPU CTF off the float64 one by {gpu_err:.3g} (CPU: {cpu_err:.3g})"


def test_projection_ctf_and_gradients_match_cpu():
    scene = _scene()
    img_cpu, grads_cpu = _project_with_grads(scene, "cpu")
    img_gpu, grads_gpu = _project_with_grads(scene, CUDA)
    _close(img_gpu, img_cpu, 1e-4)
    for name, gg, gc in zip(("centres", "amplitudes", "widths"), grads_gpu, grads_cpu):
        _close(gg, gc, 5e-4)
    # CTF parameters: each column (defocus, angle, voltage, ...) on its own scale
    gg, gc = grads_gpu[3], grads_cpu[3]
    for j in range(gc.shape[1]):
        _close(gg[:, j], gc[:, j], 1e-3)
    # the CTF itself, and the Fourier-space render without it
    params = ctf.CTFParams.random(6, np.random.default_rng(3))
    for apix in (1.5, np.array([1.0, 1.2, 1.5, 2.0, 2.5, 3.0])):
        _ctf_close(_ctf_images(params, 128, apix, CUDA), params, 128, apix)
    args = [scene[k] for k in ("centres", "amplitudes", "widths", "rotations", "shifts")]
    f_cpu = render.project_fourier(*args, 64, 1.5)
    f_gpu = render.project_fourier(*(a.to(CUDA) for a in args), 64, 1.5)
    assert f_gpu.dtype == torch.complex64
    _close(f_gpu, f_cpu, 1e-4)


def test_render_volume_matches_cpu():
    s = _scene(N=2000)
    w = s["widths"].clone()
    w[0] = 40.0                                  # one wide Gaussian: several window sizes, z slabs
    cpu = render.render_volume(s["centres"], s["amplitudes"], w, 96, 1.5, budget=200_000)
    gpu = render.render_volume(s["centres"].to(CUDA), s["amplitudes"].to(CUDA), w.to(CUDA), 96, 1.5,
                               budget=200_000)
    _close(gpu, cpu, 1e-5)


def test_projection_stays_float32_under_bf16_autocast():
    scene = {k: v.to(CUDA) for k, v in _scene().items()}
    c = scene["centres"].clone().requires_grad_(True)
    args = (scene["amplitudes"], scene["widths"], scene["rotations"], scene["shifts"], 64, 1.5)
    ref = render.project(c, *args, ctf_params=scene["ctf"])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        img = render.project(c, *args, ctf_params=scene["ctf"])
        f = render.project_fourier(c, *args)
        band = render.project(c, *args, ctf_params=scene["ctf"], lowpass=6.0)
    assert img.dtype == torch.float32 and band.dtype == torch.float32
    assert f.dtype == torch.complex64
    # computed in float32 inside the autocast region: the same numbers as outside it
    _close(img, ref.detach().cpu(), 1e-6)
    img.square().mean().backward()
    assert c.grad.dtype == torch.float32 and torch.isfinite(c.grad).all()


def _direct64(px, py, s, w, box):
    """The renderer's separable sum in float64, term by term (autograd gives its gradients)."""
    kx, ky = render._freqs_1d(box, px.device, torch.float64)
    px, py, s, w = (t.double() for t in (px, py, s, w))
    c = (-2 * np.pi ** 2) * (s * s)[..., None]
    fx = torch.exp(c * kx ** 2) * torch.exp(-2j * np.pi * px[..., None] * kx)
    fy = torch.exp(c * ky ** 2) * torch.exp(-2j * np.pi * py[..., None] * ky)
    return torch.einsum("bn,bny,bnx->byx", w.to(torch.complex128), fy, fx)


@pytest.mark.skipif(not render_triton.AVAILABLE, reason="Triton is not installed")
@pytest.mark.parametrize("B,N,box", [(2, 300, 67), (2, 1000, 128)], ids=["odd67", "box128"])
def test_fused_renderer_matches_float64_and_the_torch_renderer(B, N, box):
    """The compiled kernels (TF32 off: the fixture) against float64 and the batched products,
    values and gradients, with negative weights and positions beyond the box."""
    g = torch.Generator().manual_seed(box)
    px = torch.rand(B, N, generator=g) * 1.4 * box - 0.2 * box
    py = torch.rand(B, N, generator=g) * 1.4 * box - 0.2 * box
    s = torch.rand(B, N, generator=g) * 2 + 0.6
    w = torch.randn(B, N, generator=g) * 3
    ins = [t.to(CUDA).requires_grad_(True) for t in (px, py, s, w)]
    kx, ky = render._freqs_1d(box, CUDA, torch.float32)
    fused = render_triton.FusedSum.apply(*ins, box)
    batched = render._SeparableSum.apply(*ins, kx, ky, 4096)
    ref = _direct64(*ins, box)
    target = torch.randn(ref.shape, dtype=torch.complex128, generator=g).to(CUDA)

    def loss(f):
        return (f * target.to(f.dtype)).real.sum() + 1e-3 * f.abs().square().sum()
    rel = lambda a, b: float((a.detach().double() - b.detach().double()).abs().max()  # noqa: E731
                             / b.detach().double().abs().max())
    assert rel(fused, ref) < 1e-5 and rel(fused, batched) < 1e-5
    got = torch.autograd.grad(loss(fused), ins)
    want = torch.autograd.grad(loss(ref), ins)
    other = torch.autograd.grad(loss(batched), ins)
    for name, a, b, c in zip(("px", "py", "s", "w"), got, want, other):
        assert rel(a, b) < 5e-5, f"{name}: {rel(a, b):.2e} from float64"
        assert rel(a, c) < 5e-5, f"{name}: {rel(a, c):.2e} from the batched renderer"


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "batched"])
@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16"])
def test_training_step_full_size(amp, fused, monkeypatch):
    """The real training step (train.step.compute_losses: every loss, the health statistics;
    backward, clipping, AdamW: gaussianem.bench.real_step) at batch 256 x 20,000 Gaussians
    placed in a map that holds them x box 128, the consensus projections cached, with the
    fused renderer and with the batched products (GAUSSIANEM_FUSED=0). Records seconds per
    step, images/s and peak memory; asserts that it ran and stayed finite."""
    B, N, box = 256, 20000, 128
    total_gb = torch.cuda.get_device_properties(CUDA).total_memory / 2 ** 30
    if total_gb < 48:
        pytest.skip(f"{total_gb:.0f} GiB of GPU memory; batch 256 at box 128 needs about 40 GiB")
    if fused and not render_triton.AVAILABLE:
        pytest.skip("Triton is not installed")
    monkeypatch.setenv("GAUSSIANEM_FUSED", "1" if fused else "0")
    torch.backends.cuda.matmul.allow_tf32 = True            # as training sets it
    try:
        step, p = real_step(B, N, box, CUDA, amp)
        step()                                              # warm-up (allocator, kernels, the cache)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(CUDA)
        t = time.perf_counter()
        repeats = 3
        vals = [float(step()) for _ in range(repeats)]
        torch.cuda.synchronize()
        sec = (time.perf_counter() - t) / repeats
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    peak = torch.cuda.max_memory_allocated(CUDA) / 2 ** 30
    _record(f"training_step_{'fused' if fused else 'batched'}_{'bf16' if amp else 'float32'}", batch=B,
            gaussians=len(p["model"].centres), box=box, fused=render.use_fused(CUDA), seconds_per_step=sec,
            images_per_s=B / sec, peak_memory_gb=peak)
    assert render.use_fused(CUDA) == fused
    assert len(p["model"].centres) == N
    assert all(np.isfinite(vals))
    assert all(torch.isfinite(q).all() for q in p["model"].parameters())


def _config(tiny_sim, outdir, **kw) -> TrainConfig:
    d = dict(particles=str(tiny_sim / "particles.star"), consensus=str(tiny_sim / "consensus.mrc"),
             outdir=str(outdir), model=str(tiny_sim / "model.pdb"), epochs=1, batch_size=32,
             zdim_conf=2, zdim_comp=1, fit_steps=30, device="cuda", lowpass_epochs=1, log_every=2)
    return TrainConfig(**{**d, **kw})


def _epochs_logged(outdir) -> list[dict]:
    with open(os.path.join(outdir, "log.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("kind") == "epoch"]


def _latents(outdir, n: int, zdim: int) -> np.ndarray:
    z = np.load(os.path.join(outdir, "latents.npz"))["z"]
    assert z.shape == (n, zdim) and np.isfinite(z).all()
    return z


def test_train_one_epoch_then_resume(tiny_sim, tmp_path):
    out = tmp_path / "run"
    cfg = _config(tiny_sim, out)
    train(cfg)
    _latents(out, 256, 3)
    assert [r["epoch"] for r in _epochs_logged(out)] == [1]
    train(dataclasses.replace(cfg, epochs=2), resume=True)
    recs = _epochs_logged(out)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(np.isfinite(r["total"]) for r in recs if "total" in r)
    assert recs[-1].get("peak_memory_gb", 0) > 0
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert int(ck["epoch"]) == 2
    _latents(out, 256, 3)
    _record("tiny_train_resume", particles_per_s=float(recs[-1]["particles_per_s"]),
            peak_memory_gb=float(recs[-1]["peak_memory_gb"]))


def test_result_encode_and_volume_match_cpu(tiny_result):
    cpu, gpu = load_result(tiny_result, device="cpu"), load_result(tiny_result, device="cuda")
    idx = np.arange(40)
    z_cpu, z_gpu = cpu.encode(idx), gpu.encode(idx)
    assert z_gpu.dtype == np.float32
    np.testing.assert_allclose(z_gpu, z_cpu, rtol=1e-3, atol=1e-3 * float(np.abs(z_cpu).max()))
    z = cpu.trajectory(pc=1, steps=3)
    v_cpu, v_gpu = cpu.volume(z), gpu.volume(z)
    assert v_gpu.shape == v_cpu.shape and v_gpu.dtype == np.float32
    np.testing.assert_allclose(v_gpu, v_cpu, rtol=0, atol=1e-4 * float(np.abs(v_cpu).max()))


def test_reconstruction_matches_cpu(tiny_result):
    """Deformable reconstruction on CUDA (loader workers, batches of 2^25 samples) equals
    the CPU's: the same maps, the same halves."""
    from gaussianem.analysis.reconstruct import reconstruct
    idx = np.arange(120)
    cpu = reconstruct(load_result(tiny_result, device="cpu"), idx)
    gpu = reconstruct(load_result(tiny_result, device="cuda"), idx)
    assert gpu.n_half == cpu.n_half and gpu.info["device"].startswith("cuda")
    for kind in ("deformed", "rigid"):
        m = float(np.abs(cpu.maps[kind]).max())
        np.testing.assert_allclose(gpu.maps[kind], cpu.maps[kind], rtol=0, atol=1e-3 * m)


def _torchrun() -> list[str] | None:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    return [exe] if exe else None


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


_NCCL_SCRIPT = """
import os, torch, torch.distributed as dist
torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
dist.init_process_group("nccl")
rank = dist.get_rank()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2).cuda(),
                                                  device_ids=[torch.cuda.current_device()])
model(torch.randn(4, 8, device="cuda")).square().sum().backward()
out = [torch.zeros(3, device="cuda") for _ in range(dist.get_world_size())]
dist.all_gather(out, torch.full((3,), float(rank), device="cuda"))
assert dist.get_backend() == "nccl" and all(torch.isfinite(p.grad).all() for p in model.parameters())
assert all(float(t[0]) == r for r, t in enumerate(out))
dist.barrier()
dist.destroy_process_group()
print("nccl ok")
"""


def test_ddp_nccl_world_size_one_through_latents(tiny_sim, tmp_path):
    """``torchrun --nproc_per_node 1`` through to latents.npz. At world size 1 training
    makes no process group (gaussianem.train: one process trains alone), so NCCL and
    DistributedDataParallel themselves are exercised by a minimal DDP step first."""
    torchrun = _torchrun()
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    if not torch.distributed.is_available() or not torch.distributed.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    script = tmp_path / "nccl_step.py"
    script.write_text(_NCCL_SCRIPT)
    p = _run(torchrun + ["--standalone", "--nproc_per_node", "1", str(script)], timeout=120)
    assert "nccl ok" in p.stdout
    out = tmp_path / "ddp"
    t = time.perf_counter()
    _run(torchrun + ["--standalone", "--nproc_per_node", "1", "-m", "gaussianem.cli.main", "train",
                     str(tiny_sim / "particles.star"), "--consensus", str(tiny_sim / "consensus.mrc"),
                     "--model", str(tiny_sim / "model.pdb"), "-o", str(out), "--epochs", "1",
                     "--batch-size", "32", "--zdim-conf", "2", "--zdim-comp", "1", "--device", "cuda",
                     "--progress", "none"])
    _latents(out, 256, 3)
    _record("torchrun_world_1", seconds=time.perf_counter() - t)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs (NCCL allows one rank per GPU)")
def test_ddp_nccl_two_gpus_through_latents(tiny_sim, tmp_path):
    torchrun = _torchrun()
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    out = tmp_path / "ddp2"
    _run(torchrun + ["--standalone", "--nproc_per_node", "2", "-m", "gaussianem.cli.main", "train",
                     str(tiny_sim / "particles.star"), "--consensus", str(tiny_sim / "consensus.mrc"),
                     "--model", str(tiny_sim / "model.pdb"), "-o", str(out), "--epochs", "1",
                     "--batch-size", "32", "--zdim-conf", "2", "--zdim-comp", "1", "--device", "cuda",
                     "--progress", "none"])
    _latents(out, 256, 3)
