#!/usr/bin/env python3
"""Where a GPU training step spends its time, and what the renderer's variants cost.

One training step at the scale-out issue's size (batch 256 x 20,000 Gaussians x box 128,
the residual encoder with Gaussian features, as ``tests/engine/test_cuda.py`` runs it),
timed in float32 and bf16 with TF32 on (as training sets it), then profiled op by op; the
renderer alone (forward, forward + backward) at the same size, with its GPU chunk size
and TF32 on and off. Prints a table and writes JSON (``-o``).

    python benchmarks/profile_gpu.py -o profile_gpu.json            # on a CUDA node
    python benchmarks/profile_gpu.py --small --device cpu           # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from gaussianem.bench import SyntheticParticles, timeit
from gaussianem.model import losses
from gaussianem.model.encoding import Physics, encoder_inputs
from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.physics import poses, render


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(B: int, N: int, box: int, device, amp: bool):
    g = torch.Generator().manual_seed(0)
    base = GaussianSet(torch.randn(N, 3, generator=g) * box / 5, torch.rand(N, generator=g) + 0.5,
                       torch.rand(N, generator=g) + 1.5)
    cfg = ModelConfig(box=box, zdim=9, zdim_conf=8, zdim_comp=1, encoder_input="residual",
                      gaussian_features=True, centre_displacements=True)
    model = HeterogeneityModel(cfg, base).to(device).train()
    phys = Physics(SyntheticParticles(B, box, 1.0), box, device)
    images = torch.randn(B, box, box, generator=g).to(device)
    idx = torch.arange(B, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            emb = model.embed()
            ref, feats = encoder_inputs(model, images, idx, phys, box, emb)
            mu, logvar = model(images, ref, feats)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            out = model.decode(z, emb)
            pred = phys.project(out["centres"], out["amplitudes"], out["widths"], idx, box) * model.scale
            loss = losses.image_loss(pred, images, "l2") + 1e-6 * losses.kl_divergence(mu.float(), logvar.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def features_only():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            encoder_inputs(model, images, idx, phys, box, model.embed().detach())

    return step, features_only


def render_inputs(B: int, N: int, box: int, device):
    g = torch.Generator().manual_seed(1)
    c = (torch.randn(B, N, 3, generator=g) * box / 5).to(device).requires_grad_(True)
    a = (torch.rand(B, N, generator=g) + 0.5).to(device).requires_grad_(True)
    w = (torch.rand(B, N, generator=g) + 1.5).to(device).requires_grad_(True)
    rot = torch.from_numpy(poses.random_rotations(B, np.random.default_rng(2)).astype(np.float32)).to(device)
    sh = torch.zeros(B, 2, device=device)
    return c, a, w, rot, sh


def _real_factors(px, py, s, kx, ky):
    c = (-2 * math.pi ** 2) * (s * s)[..., None]
    ax, ay = (-2 * math.pi * px)[..., None] * kx, (-2 * math.pi * py)[..., None] * ky
    ex, ey = torch.exp(c * (kx * kx)), torch.exp(c * (ky * ky))
    return (torch.stack([ex * torch.cos(ax), ex * torch.sin(ax)], -1),
            torch.stack([ey * torch.cos(ay), ey * torch.sin(ay)], -1))


def compiled_factors(res, B, N, box, device, repeats, c, a, w, rot, sh):
    """The factors as one fused kernel per axis (torch.compile), written straight into a
    complex layout: compile time, renderer and training-step time, error."""
    fn = torch.compile(_real_factors, dynamic=True)
    eager = render._factors

    def fused(px, py, s, kx, ky):
        fx, fy = fn(px, py, s, kx, ky)
        return torch.view_as_complex(fx), torch.view_as_complex(fy)
    with torch.no_grad():
        ref = render.project_fourier(c, a, w, rot, sh, box, 1.0)
    t = time.perf_counter()
    render._factors = fused
    try:
        with torch.no_grad():
            f = render.project_fourier(c, a, w, rot, sh, box, 1.0)
        _sync(device)
        out = {"first_call_s": time.perf_counter() - t,
               "max_error": float((f - ref).abs().max() / ref.abs().max())}

        def fwd_bwd():
            f = render.project_fourier(c, a, w, rot, sh, box, 1.0)
            torch.autograd.grad(f.abs().square().sum(), (c, a, w))
        out["forward_backward_s"] = timeit(fwd_bwd, device, repeats)
        step, _ = training_step(B, N, box, device, True)
        out["step_bf16_s"] = sec = timeit(step, device, repeats)
        out["images_per_s"] = B / sec
    finally:
        render._factors = eager
    res["compiled"] = out
    print(f"compiled factors: {json.dumps(out)}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--out", default="profile_gpu.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="batch 8 x 500 Gaussians x box 32 (a smoke run)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compiled", action="store_true",
                   help="also time the renderer's factors built by one torch.compile'd kernel")
    p.add_argument("--top", type=int, default=25, help="ops listed by the profiler")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    B, N, box = (8, 500, 32) if args.small else (256, 20000, 128)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "batch": B, "gaussians": N, "box": box, "steps": {}, "render": {}}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    for amp in (False, True):
        step, feats = training_step(B, N, box, device, amp)
        name = "bf16" if amp else "float32"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sec = timeit(step, device, args.repeats)
        res["steps"][name] = {"seconds": sec, "images_per_s": B / sec,
                              "features_seconds": timeit(feats, device, args.repeats)}
        if device.type == "cuda":
            res["steps"][name]["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        print(f"step {name}: {sec * 1e3:.1f} ms ({B / sec:.0f} images/s), features pass "
              f"{res['steps'][name]['features_seconds'] * 1e3:.1f} ms", flush=True)
    # op-by-op profile of the bf16 step
    step, _ = training_step(B, N, box, device, True)
    step()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                    if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(2):
            step()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=args.top)
    print(table, flush=True)
    res["profile_table"] = table
    # the renderer alone
    c, a, w, rot, sh = render_inputs(B, N, box, device)
    chunks = (4096, 8192, N) if device.type == "cuda" else (512,)
    for tf32 in ((True, False) if device.type == "cuda" else (False,)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for chunk in chunks:
            def fwd():
                with torch.no_grad():
                    render.project_fourier(c, a, w, rot, sh, box, 1.0, chunk=chunk)

            def fwd_bwd():
                f = render.project_fourier(c, a, w, rot, sh, box, 1.0, chunk=chunk)
                torch.autograd.grad(f.abs().square().sum(), (c, a, w))
            key = f"chunk{chunk}_tf32" if tf32 else f"chunk{chunk}"
            res["render"][key] = {"forward_s": timeit(fwd, device, args.repeats),
                                  "forward_backward_s": timeit(fwd_bwd, device, args.repeats)}
            print(f"render {key}: forward {res['render'][key]['forward_s'] * 1e3:.1f} ms, forward+backward "
                  f"{res['render'][key]['forward_backward_s'] * 1e3:.1f} ms", flush=True)
    if args.compiled:
        try:
            compiled_factors(res, B, N, box, device, args.repeats, c, a, w, rot, sh)
        except Exception as e:                      # an experiment: report, never fail the profile
            res["compiled"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            print(f"compiled factors: {res['compiled']['error']}", flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
