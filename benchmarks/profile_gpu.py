#!/usr/bin/env python3
"""The real training step on a GPU: its time against the roofline, and where it goes.

The step is the trainer's own (``gaussianem.bench.real_step``: ``train.step.compute_losses``
with every loss and the health statistics, backward, gradient clipping, AdamW), at batch
256 x 20,000 Gaussians (placed in a map that holds that many) x box 128, TF32 on as
training sets it. It is timed with the fused renderer (``render_triton``, when Triton is
installed) and with the batched products (``GAUSSIANEM_FUSED=0``), the consensus
projections cached (the trainer's default) and rendered each step, in float32 and bf16;
then the renderer alone (forward; forward + backward) both ways, the fused kernels
checked against the batched products first, and an op-by-op profile of the step. Each
time is set beside the roofline of :func:`roofline` (docs/benchmarks.md, "Roofline").
Prints a table and writes JSON (``-o``).

    python benchmarks/profile_gpu.py -o profile_gpu.json            # on a CUDA node
    python benchmarks/profile_gpu.py --small --device cpu           # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

import numpy as np
import torch

from gaussianem.bench import real_step, timeit
from gaussianem.physics import poses, render, render_triton

#: peak rates used for the roofline: (bytes/s of HBM, FLOP/s of fp32 FMA without tensor
#: cores, FLOP/s of dense TF32 tensor cores), NVIDIA's SXM datasheets (docs/benchmarks.md)
PEAKS = {"H100": (3.35e12, 67e12, 495e12), "H200": (4.8e12, 67e12, 495e12)}


def _tiles(n: int, block: int) -> int:
    return -(-n // block)


def roofline(N: int, box: int, fused: bool) -> dict:
    """FLOPs and bytes of global memory per Gaussian and image for one renderer pass
    (forward; backward), counted from the code (docs/benchmarks.md, "Roofline").

    H = box, W = box//2+1. Products (real FLOPs): forward ``fy^T (w fx)``, 8 H W; backward
    ``fx conj(G)^T`` and ``fy conj(G)``, 16 H W; the fused kernels work on whole tiles
    (``render_triton``'s blocks), so padded rows and columns count. Factor entries (an exp
    and a sincos each, on the SFU: reported apart): H + W per pass in the batched path; in
    the fused one, each program makes those of its own tile. Bytes: the batched path
    builds each factor from three float32 temporaries and a complex64 (write 20 B, read
    12 B per entry), scales fx in place (16 B per W entry) and reads both into the product
    (forward: 40 (H + W) + 16 W); its backward builds them again, and writes, multiplies in
    place and reduces the products' outputs RA (H) and RB (W) (80 (H + W)). The fused
    kernels read 16 B of inputs per Gaussian and program and the backward writes 16 B of
    sums; the image or its gradient (8 H W per image, shared by all Gaussians) is read
    from L2 by each backward program (``l2_bytes``)."""
    H, W = box, box // 2 + 1
    if not fused:
        return {"product_flops": (8 * H * W, 16 * H * W), "factor_entries": (H + W, H + W),
                "bytes": (40 * (H + W) + 16 * W, 80 * (H + W)), "l2_bytes": (0, 0)}
    (bn, fy, fx), (bnb, by, bx) = render_triton.FORWARD_BLOCKS, render_triton.BACKWARD_BLOCKS
    ty, tx = _tiles(H, fy), _tiles(W, fx)
    tyb, txb = _tiles(H, by), _tiles(W, bx)
    return {"product_flops": (8 * ty * fy * tx * fx, 16 * tyb * by * txb * bx),
            "factor_entries": (ty * tx * (fy + fx), tyb * by + tyb * txb * bx),
            "bytes": (16 * ty * tx, 12 + 16), "l2_bytes": (0, 8 * H * W / bnb)}


def step_bound(N: int, box: int, fused: bool, gpu: str, cached: bool = True) -> dict:
    """What the renderer's passes in one step (the prediction's forward and backward, the
    features' backward, and their forward unless the consensus projections are cached)
    allow on ``gpu`` (H100 or H200): images/s at the memory roof and at the fp32 and TF32
    roofs of the products."""
    r = roofline(N, box, fused)
    passes = (2 if not cached else 1, 2)                     # forwards, backwards
    flops = N * sum(k * f for k, f in zip(passes, r["product_flops"]))
    nbytes = N * sum(k * b for k, b in zip(passes, r["bytes"]))
    bw, fp32, tf32 = PEAKS[gpu]
    return {"product_flops_per_image": flops, "bytes_per_image": nbytes,
            "factor_entries_per_image": N * sum(k * e for k, e in zip(passes, r["factor_entries"])),
            "memory_bound_images_per_s": bw / nbytes, "fp32_bound_images_per_s": fp32 / flops,
            "tf32_bound_images_per_s": tf32 / flops}


@contextlib.contextmanager
def fused_setting(on: bool):
    old = os.environ.get("GAUSSIANEM_FUSED")
    os.environ["GAUSSIANEM_FUSED"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["GAUSSIANEM_FUSED"]
        else:
            os.environ["GAUSSIANEM_FUSED"] = old


def render_inputs(B: int, N: int, box: int, device):
    g = torch.Generator().manual_seed(1)
    c = (torch.randn(B, N, 3, generator=g) * box / 5).to(device).requires_grad_(True)
    a = (torch.rand(B, N, generator=g) + 0.5).to(device).requires_grad_(True)
    w = (torch.rand(B, N, generator=g) + 1.5).to(device).requires_grad_(True)
    rot = torch.from_numpy(poses.random_rotations(B, np.random.default_rng(2)).astype(np.float32)).to(device)
    sh = torch.zeros(B, 2, device=device)
    return c, a, w, rot, sh


def check_fused(device, B=4, N=5000, box=128) -> dict:
    """The fused kernels against the batched products (TF32 off): values and gradients."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        c, a, w, rot, sh = render_inputs(B, N, box, device)
        out = {}
        for fused in (False, True):
            f = render.project_fourier(c, a, w, rot, sh, box, 1.0, fused=fused)
            out[fused] = (f.detach(), torch.autograd.grad(f.abs().square().sum(), (c, a, w)))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    rel = lambda x, y: float((x - y).abs().max() / y.abs().max())  # noqa: E731
    res = {"values": rel(out[True][0], out[False][0])}
    for name, x, y in zip(("centres", "amplitudes", "widths"), out[True][1], out[False][1]):
        res[name] = rel(x, y)
    res["ok"] = all(v < 1e-4 for v in res.values())
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--out", default="profile_gpu.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="batch 8 x 500 Gaussians x box 32 (a smoke run)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps-only", action="store_true", help="the fused check and the step times only "
                                                             "(no renderer table, no profile)")
    p.add_argument("--top", type=int, default=25, help="ops listed by the profiler")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    B, N, box = (8, 500, 32) if args.small else (256, 20000, 128)
    cuda = device.type == "cuda"
    fused_ok = render.use_fused(device)
    gpu = "H200" if cuda and "H200" in torch.cuda.get_device_name(device) else "H100"
    res = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
           "batch": B, "gaussians": N, "box": box, "fused_available": fused_ok, "steps": {}, "render": {},
           "roofline": {f"{'fused' if f else 'batched'}_{g}": step_bound(N, box, f, g) for f in (False, True)
                        for g in PEAKS}}
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if fused_ok:
        res["fused_check"] = check_fused(device)
        print(f"fused renderer against the batched products: {json.dumps(res['fused_check'])}", flush=True)
    variants = [(f, c, amp) for f in ((True, False) if fused_ok else (False,)) for c in (True, False)
                for amp in ((False, True) if cuda else (False,))]
    for fused, cached, amp in variants:
        name = f"{'fused' if fused else 'batched'}_{'cached' if cached else 'rendered'}_{'bf16' if amp else 'float32'}"
        with fused_setting(fused):
            step, _ = real_step(B, N, box, device, amp, references=cached)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            sec = timeit(step, device, args.repeats)
        bound = step_bound(N, box, fused, gpu, cached)
        row = res["steps"][name] = {"seconds": sec, "images_per_s": B / sec,
                                    "of_memory_bound": B / sec / bound["memory_bound_images_per_s"],
                                    "of_fp32_bound": B / sec / bound["fp32_bound_images_per_s"]}
        if cuda:
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        print(f"step {name}: {sec * 1e3:.1f} ms ({B / sec:.0f} images/s; {row['of_memory_bound']:.0%} of the "
              f"{gpu} memory roof, {row['of_fp32_bound']:.0%} of its fp32 roof for the renderer's passes)", flush=True)
    if not args.steps_only:
        c, a, w, rot, sh = render_inputs(B, N, box, device)
        for fused in ((True, False) if fused_ok else (False,)):
            def fwd():
                with torch.no_grad():
                    render.project_fourier(c, a, w, rot, sh, box, 1.0, fused=fused)

            def fwd_bwd():
                f = render.project_fourier(c, a, w, rot, sh, box, 1.0, fused=fused)
                torch.autograd.grad(f.abs().square().sum(), (c, a, w))
            key = "fused" if fused else "batched"
            r = roofline(N, box, fused)
            row = res["render"][key] = {"forward_s": timeit(fwd, device, args.repeats),
                                        "forward_backward_s": timeit(fwd_bwd, device, args.repeats)}
            row["forward_backward_tflops"] = B * N * sum(r["product_flops"]) / row["forward_backward_s"] / 1e12
            row["forward_backward_tb_per_s"] = B * N * sum(r["bytes"]) / row["forward_backward_s"] / 1e12
            print(f"render {key}: forward {row['forward_s'] * 1e3:.1f} ms, forward+backward "
                  f"{row['forward_backward_s'] * 1e3:.1f} ms ({row['forward_backward_tflops']:.1f} TFLOP/s, "
                  f"{row['forward_backward_tb_per_s']:.2f} TB/s by the roofline's counts)", flush=True)
        step, _ = real_step(B, N, box, device, True)
        step()
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(2):
                step()
            if cuda:
                torch.cuda.synchronize(device)
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        res["profile_table"] = table = prof.key_averages().table(sort_by=key, row_limit=args.top)
        print(table, flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0 if res.get("fused_check", {"ok": True})["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
