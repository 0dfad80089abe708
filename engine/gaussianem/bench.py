"""Benchmarks on the current device: projection throughput, the real training step
(:func:`real_step`), training throughput and memory, and volume-generation latency.
``gaussianem bench`` or ``make bench``.

Numbers, not pass/fail: each section prints a table and the whole run is returned as a
dict (written as JSON by the CLI) with the device's name.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

import numpy as np
import torch

from gaussianem.io.models import write_model
from gaussianem.io.rundir import RunDir
from gaussianem.model.encoding import Physics
from gaussianem.model.gaussians import init_from_map
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.physics import poses, render
from gaussianem.physics.ctf import CTFParams
from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
from gaussianem.sim.testprotein import build_test_model
from gaussianem.train.config import TrainConfig
from gaussianem.train.loop import train
from gaussianem.train.step import Batch, NeighbourGraph, Schedule, compute_losses


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyntheticParticles:
    """Random poses, shifts (sd 2 A) and CTFs of ``n`` particles at ``box`` and ``apix``:
    what :class:`~gaussianem.model.encoding.Physics` reads of a particle set, for timing
    a training step without images on disk."""

    def __init__(self, n: int, box: int, apix: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.rotations = poses.random_rotations(n, rng)
        self.shifts = rng.normal(scale=2.0, size=(n, 2))
        self.ctf = CTFParams.random(n, rng)
        self.apix = np.full(n, apix)
        self.box = box

    def __len__(self) -> int:
        return len(self.apix)


def timeit(fn, device, repeats: int = 3, warmup: int = 1) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls, the device synchronised."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / repeats


def bench_projection(device, sizes=None, amp: bool = False) -> list[dict]:
    """Images/s of CTF-multiplied projections (forward only, and forward + backward)."""
    if sizes is None:
        sizes = [(64, 1000, 64), (64, 5000, 64), (128, 5000, 128)] if device.type == "cpu" else \
                [(256, 5000, 64), (256, 20000, 128), (64, 20000, 256)]
    rows = []
    g = torch.Generator().manual_seed(0)
    for B, N, box in sizes:
        c = (torch.randn(N, 3, generator=g) * box * 0.25).to(device)
        a = torch.rand(N, generator=g).to(device) + 0.5
        w = torch.full((N,), 2.0, device=device)
        R = torch.linalg.qr(torch.randn(B, 3, 3, generator=g))[0].to(device)
        sh = torch.zeros(B, 2, device=device)
        ctf = CTFParams.constant(B).as_tensor(device=device)
        def fwd():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                render.project(c, a, w, R, sh, box, 1.5, ctf_params=ctf)
        cc = c.clone().requires_grad_(True)
        def fwd_bwd():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                render.project(cc, a, w, R, sh, box, 1.5, ctf_params=ctf).square().mean().backward()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t1 = timeit(fwd, device)
        t2 = timeit(fwd_bwd, device, repeats=2)
        row = {"batch": B, "gaussians": N, "box": box, "forward_images_per_s": B / t1,
               "train_images_per_s": B / t2}
        if device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        rows.append(row)
    return rows


def blob_map(box: int, apix: float, seed: int = 0) -> np.ndarray:
    """A protein-like density that holds tens of thousands of Gaussians: 1.5 A-wide "atoms"
    at random in a ball of radius 0.35 box, at about a protein's density of heavy atoms (0.05
    per A^3: at box 128 and 1 A/pixel, 18,800 atoms in 377,000 A^3, a ~300 kDa complex)."""
    rng = np.random.default_rng(seed)
    radius = 0.35 * box * apix
    n = int(0.05 * 4 / 3 * np.pi * radius ** 3)
    xyz = rng.normal(size=(n, 3))
    xyz *= (radius * rng.random(n) ** (1 / 3) / np.linalg.norm(xyz, axis=1))[:, None]
    vol = render.render_volume(torch.from_numpy(xyz).float(), torch.ones(n), torch.full((n,), 1.5), box, apix)
    return vol.numpy()


def real_step(B: int, N: int, box: int, device, amp: bool = False, apix: float | None = None,
              references: bool = True, seed: int = 0):
    """One real training step (``train.step.compute_losses``: every loss and the health
    statistics, backward, gradient clipping, AdamW) at batch ``B`` x ``N`` Gaussians x
    ``box``, with the default model and losses, the Gaussians placed in a map that holds
    that many (:func:`blob_map`), ``B`` synthetic particles (their images: the consensus
    projection and noise). Returns ``step()`` (the loss, a tensor) and the pieces
    (``model``, ``batch``, ``graph``, ``schedule``). ``references``: the consensus
    projections read from the ReferenceCache (the loop's default) or rendered each step."""
    device = torch.device(device)
    apix = apix or 128.0 / box
    base = init_from_map(blob_map(box, apix, seed), apix, n=N, iterations=5, seed=seed, device=device)
    cfg = TrainConfig(particles="", consensus="", outdir="")
    mcfg = ModelConfig(box=box, zdim=cfg.zdim, zdim_conf=cfg.zdim_conf, zdim_comp=cfg.zdim_comp, window=cfg.window,
                       max_displacement=cfg.max_displacement, encoder_input=cfg.encoder_input,
                       width_change=cfg.width_change, gaussian_features=cfg.gaussian_features,
                       centre_by=cfg.centre_by, segments=cfg.segments)
    model = HeterogeneityModel(mcfg, base).to(device).train()
    phys = Physics(SyntheticParticles(B, box, apix, seed), box, device)
    idx = torch.arange(B, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        clean = phys.project(model.centres, model.amplitudes, model.widths, idx, box)
        clean = clean / clean.std()
        images = clean + 3 * torch.randn(clean.shape, generator=g, device=device)
    batch = Batch(images / images.std(), idx, phys, box, references=references)
    graph = NeighbourGraph.build(base, cfg.radius, device)
    schedule = Schedule.at(cfg, cfg.lowpass_epochs, apix)            # full band, KL warmed up half way
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            total, _, _ = compute_losses(model, batch, graph, schedule)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        return total.detach()
    return step, dict(model=model, batch=batch, graph=graph, schedule=schedule)


def bench_step(device, sizes=None, amp: bool = False, repeats: int = 5) -> list[dict]:
    """Seconds per real training step (:func:`real_step`), the consensus projections
    rendered each step (as before the ReferenceCache) and read from it: the two steps
    alternate, ``repeats`` times each, and each keeps its fastest (others' load on a
    shared machine only adds time)."""
    if sizes is None:
        sizes = [(32, 2000, 64), (16, 5000, 128)] if device.type == "cpu" else [(256, 20000, 128)]
    rows = []
    for B, N, box in sizes:
        steps = {name: real_step(B, N, box, device, amp, references=name == "cached")[0]
                 for name in ("rendered", "cached")}
        best = {name: timeit(fn, device, repeats=1) for name, fn in steps.items()}     # after a warm-up
        for _ in range(repeats - 1):
            for name, fn in steps.items():
                best[name] = min(best[name], timeit(fn, device, repeats=1, warmup=0))
        rows.append({"batch": B, "gaussians": N, "box": box,
                     **{name: {"seconds": sec, "images_per_s": B / sec} for name, sec in best.items()}})
    return rows


def bench_volume(device, sizes=((128, 2000), (128, 5000), (64, 2000))) -> list[dict]:
    """Milliseconds to render one volume from a Gaussian set (the slider's cost)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for box, N in sizes:
        c = (torch.randn(N, 3, generator=g) * box * 0.2).to(device)
        a = torch.rand(N, generator=g).to(device)
        w = torch.full((N,), 2.5, device=device)
        t = timeit(lambda: render.render_volume(c, a, w, box, 1.5), device, repeats=3)
        rows.append({"box": box, "gaussians": N, "ms_per_volume": 1e3 * t})
    return rows


def bench_training(device, n: int = 2000, box: int = 64, epochs: int = 1, amp: bool = False) -> dict:
    """Particles/s and peak memory of `train` on a simulated dataset (box ``box``)."""
    with tempfile.TemporaryDirectory() as d:
        write_model(os.path.join(d, "m.pdb"), build_test_model())
        simulate_from_model(os.path.join(d, "m.pdb"), d, SimulationSpec(n=n, box=box, apix=128.0 / box, states=10))
        out = os.path.join(d, "run")
        t = time.perf_counter()
        train(TrainConfig(particles=os.path.join(d, "particles.star"), consensus=os.path.join(d, "consensus.mrc"),
                          outdir=out, epochs=epochs, device=str(device), amp=amp, fit_steps=50))
        total = time.perf_counter() - t
        recs = RunDir(out).read_log()
        ep = [r for r in recs if r["kind"] == "epoch"][-1]
        return {"particles": n, "box": box, "seconds_per_epoch": ep["seconds"],
                "particles_per_s": ep["particles_per_s"], "total_seconds": total,
                "peak_memory_gb": ep.get("peak_memory_gb"),
                "process_peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float | None:
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def run_all(device=None, quick: bool = False, amp: bool = False) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = {"device": device_name(device), "torch": torch.__version__, "amp": amp}
    out["projection"] = bench_projection(device, amp=amp)
    out["step"] = bench_step(device, amp=amp)
    out["volume"] = bench_volume(device)
    out["training"] = bench_training(device, n=512 if quick else 2000, amp=amp)
    return out


def print_report(res: dict) -> None:
    print(f"device: {res['device']}  (torch {res['torch']}, amp={res['amp']})")
    print("\nprojection (CTF-multiplied, Fourier-space renderer)")
    print(f"{'batch':>6} {'gaussians':>10} {'box':>5} {'fwd img/s':>12} {'fwd+bwd img/s':>14}")
    for r in res["projection"]:
        print(f"{r['batch']:>6} {r['gaussians']:>10} {r['box']:>5} {r['forward_images_per_s']:>12.0f} "
              f"{r['train_images_per_s']:>14.0f}")
    print("\nreal training step (compute_losses, backward, clipping, AdamW): consensus projections "
          "rendered each step -> cached")
    for r in res.get("step", []):
        a, b = r["rendered"], r["cached"]
        print(f"  batch {r['batch']} x {r['gaussians']} Gaussians x box {r['box']}: {a['seconds'] * 1e3:.0f} -> "
              f"{b['seconds'] * 1e3:.0f} ms/step ({a['images_per_s']:.0f} -> {b['images_per_s']:.0f} images/s)")
    print("\nvolume generation (one map from a Gaussian set)")
    for r in res["volume"]:
        print(f"  box {r['box']:>4}, {r['gaussians']:>6} Gaussians: {r['ms_per_volume']:8.1f} ms")
    t = res["training"]
    print(f"\ntraining ({t['particles']} particles, box {t['box']}): {t['particles_per_s']:.0f} particles/s, "
          f"{t['seconds_per_epoch']:.1f} s/epoch, peak GPU memory {t['peak_memory_gb']} GB, "
          f"process peak RSS {t['process_peak_rss_mb']:.0f} MB")

