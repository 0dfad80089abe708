"""GaussianEM against cryoDRGN on the same simulated dataset, side by side.

Stages (each one's failure is recorded in the JSON and the rest goes on):

1. simulate: the built-in two-domain test protein (hinge motion + a chain absent in 30%
   of the particles) with ``gaussianem.sim.simulate.simulate_from_model``; default N=10000,
   box 64, 2.0 A/px, SNR 0.5 (``--box128``: box 128 at 1.0 A/px, the same field of view).
2. train: ``gaussianem train`` (split latent 2 + 2, L2 loss, as benchmarks/validate.py)
   and ``cryodrgn train_vae`` (zdim 4), the same number of epochs, each in its own
   process: seconds per epoch (median over epochs, from each program's own log),
   particles/s, whole-process wall time and peak resident memory (``os.wait4``'s
   ``ru_maxrss`` of that process). cryoDRGN reads poses and CTF parsed from the SAME
   particles.star by its own ``cryodrgn parse_star`` (-D box, --Apix apix).
3. evaluate: the same code for both (``gaussianem.analysis.evaluate``): |Spearman| of latent PC1
   against the true motion, presence accuracy (linear probe, 2-means) and per-conformation
   FSC against the true maps, with volumes from ``Result.volume(z)`` for ours and
   ``cryodrgn eval_vol --zfile`` for cryoDRGN. Before the FSC, every method's maps are
   checked against the truth over the 48 axis permutations/flips (each at its best
   integer shift): the transform found is applied and reported, not assumed.
4. volume latency: ours ``Result.volume`` (10 latents one at a time, and as one batch;
   loading the result timed apart) against ``cryodrgn eval_vol`` (one volume per process,
   process start included, and 10 volumes from one ``--zfile`` call).

Writes ``benchmarks/results/compare_<box>_<device>.json`` and prints a Markdown table.
Needs ``.venv-cryodrgn`` (``bash benchmarks/setup_cryodrgn.sh``).

  .venv/bin/python benchmarks/compare_cryodrgn.py                       # N=10000, box 64
  .venv/bin/python benchmarks/compare_cryodrgn.py -n 3000 --epochs 10 \\
      --cdrgn-dim 256                                                   # small CPU run
  .venv/bin/python benchmarks/compare_cryodrgn.py --box128 --device cuda
  .venv/bin/python benchmarks/compare_cryodrgn.py --reuse ...           # keep finished runs

This file holds GaussianEM's side (train_ours, evaluate_ours, latency_ours) and main();
the rest lives beside it in benchmarks/: bench_common.py (running and measuring stages,
the simulation, machine info, evaluation and orientation helpers shared by both methods),
cryodrgn_runner.py (parse_star, train_vae, eval_vol, cryoDRGN's evaluation and latency)
and compare_report.py (ratios and the Markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "engine"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from bench_common import (StageLog, cuda_available, epoch_summary, reuse_or_clear, stage_json,  # noqa: E402
                          apply_transform, child_env, conformation_latents, evaluate_latents, machine_info,
                          orientation_check, replay_fn, run_measured, simulate)
from compare_report import markdown, ratios  # noqa: E402
from cryodrgn_runner import (cryodrgn_bin, evaluate_cryodrgn, latency_cryodrgn, parse_star_cryodrgn,  # noqa: E402
                             train_cryodrgn)
from gaussianem.analysis import evaluate as ev  # noqa: E402
from gaussianem.io.rundir import RunDir  # noqa: E402


# ----------------------------------------------------------------------------- ours

def train_ours(a, simdir, run, epochs) -> dict:
    old = reuse_or_clear(a, run, "latents.npz")
    if old:
        return {**old, "reused": True}
    cmd = [sys.executable, "-m", "gaussianem.cli.main", "train", os.path.join(simdir, "particles.star"),
           "--consensus", os.path.join(simdir, "consensus.mrc"), "-o", run, "--epochs", str(epochs),
           "--zdim-conf", "2", "--zdim-comp", "2", "--loss", "l2", "--device", a.device,
           "--progress", "none", "--seed", str(a.seed)] + a.ours_extra
    os.makedirs(os.path.dirname(run), exist_ok=True)
    m = run_measured(cmd, run + ".log", env=child_env(a.threads, engine=True))
    # a coarse-to-fine run logs its first stage in run/coarse: every epoch counts
    logs = [RunDir(run).coarse.log, RunDir(run).log]
    epochs = [json.loads(line) for path in logs if os.path.exists(path) for line in open(path)]
    secs = [e["seconds"] for e in epochs if e.get("kind") == "epoch"]
    m.update(epoch_seconds=secs, **epoch_summary(secs, a.n),
             peak_gpu_memory_gb=max([e.get("peak_memory_gb", 0) for e in epochs if e.get("kind") == "epoch"] or [0]),
             settings={"zdim_conf": 2, "zdim_comp": 2, "loss": "l2", "batch_size": 64, "extra": a.ours_extra})
    plan = RunDir(run).plan
    if os.path.exists(plan):   # two rates (coarse, fine): the mean epoch is the honest summary
        with open(plan) as f:
            m["stages"] = json.load(f)
        m["s_per_epoch"] = m["s_per_epoch_mean"]
        m["particles_per_s"] = a.n / m["s_per_epoch_mean"]
    with open(stage_json(run), "w") as f:
        json.dump(m, f, indent=2)
    return m


def evaluate_ours(a, simdir, run, truth) -> dict:
    from gaussianem.io.mrc import read_map
    from gaussianem.analysis.result import load_result
    res = load_result(run)
    mc = res.model_config
    z = res.z
    zs = conformation_latents(z, truth)
    vols = [res.volume(zk) for zk in zs]
    refs = [read_map(p)[0] for p in truth["truth_maps"][:len(zs)]]
    orient = orientation_check(vols, refs)
    if orient["needs_transform"]:
        b = orient["best"]
        vols = [apply_transform(v, b["perm"], b["flips"], b["shift"]) for v in vols]
    m = evaluate_latents(z, truth, replay_fn(vols, zs), res.grid.apix,
                         z[:, :mc.zdim_conf] if mc.split else None, z[:, mc.zdim_conf:] if mc.split else None)
    m["orientation"] = orient
    m["epochs"], m["n_particles"] = res.epoch, res.n_particles
    return m


# ----------------------------------------------------------------------------- latency

def latency_ours(a, run, n=10) -> dict:
    import torch
    from gaussianem.analysis.result import load_result
    t = time.perf_counter()
    res = load_result(run, device="cuda" if a.device == "cuda" else "cpu")
    load_s = time.perf_counter() - t
    zs = res.z[np.random.default_rng(0).choice(len(res.z), n, replace=False)]
    res.volume(zs[0])                                  # warm-up (first-call allocation)
    each = []
    for zz in zs:
        t = time.perf_counter()
        res.volume(zz)
        if torch.cuda.is_available() and a.device == "cuda":
            torch.cuda.synchronize()
        each.append(time.perf_counter() - t)
    t = time.perf_counter()
    res.volume(zs)
    batch = time.perf_counter() - t
    return {"load_result_s": load_s, "per_volume_s": float(np.mean(each)), "per_volume_all_s": each,
            "batch_of_10_per_volume_s": batch / n, "box": res.grid.box}


# ----------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=10000, help="particles (default 10000)")
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=None, help="default 2.0 (1.0 with --box128)")
    p.add_argument("--box128", action="store_true", help="box 128 at 1.0 A/px")
    p.add_argument("--snr", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--ours-long-epochs", type=int, default=0,
                   help="also train ours for this many epochs (an equal-or-less wall time view; 0: off)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (ours; cryoDRGN takes CUDA when there is one)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every measured process (OMP_NUM_THREADS; default: torch's own). "
                        "Use 1 on a shared machine: 2 threads on 2 busy cores ran up to 80x slower")
    p.add_argument("--cdrgn-dim", type=int, default=None,
                   help="cryoDRGN encoder/decoder width (default: its own, 1024)")
    p.add_argument("--cdrgn-layers", type=int, default=None, help="cryoDRGN encoder/decoder depth (default 3)")
    p.add_argument("--cdrgn-extra", default="", help="more cryodrgn train_vae arguments, quoted")
    p.add_argument("--ours-extra", default="", help="more gaussianem train arguments, quoted")
    p.add_argument("--cryodrgn-venv", default=os.path.join(ROOT, ".venv-cryodrgn"))
    p.add_argument("--workdir", default=os.path.join(ROOT, "bench_out", "compare"),
                   help="simulation and runs (default bench_out/compare)")
    p.add_argument("--reuse", action="store_true", help="keep finished training runs in WORKDIR")
    p.add_argument("--skip", default="", help="comma-separated: ours,cryodrgn,latency")
    p.add_argument("-o", "--output", help="default benchmarks/results/compare_<box>_<device>.json")
    a = p.parse_args(argv)
    if a.box128:
        a.box = 128
    if a.apix is None:
        a.apix = 1.0 if a.box == 128 else 2.0
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    if a.device == "auto":
        a.device = "cuda" if cuda_available() else "cpu"
    a.cdrgn_extra = shlex.split(a.cdrgn_extra)
    a.ours_extra = shlex.split(a.ours_extra)
    skip = set(filter(None, a.skip.split(",")))
    tag = f"{a.box}_{a.device}"
    work = os.path.join(a.workdir, f"box{a.box}_n{a.n}")
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(a.workdir, ".gitignore"), "w") as f:
        f.write("*\n")
    simdir = os.path.join(work, "sim")
    out_json = a.output or os.path.join(HERE, "results", f"compare_{tag}.json")
    log = StageLog()
    t_all = time.time()
    res = {"benchmark": "GaussianEM vs cryoDRGN", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "machine": machine_info(a.device),
           "settings": {k: v for k, v in vars(a).items()}, "ours": {}, "cryodrgn": {}}

    res["dataset"] = log.run("simulate", simulate, a, simdir)
    truth = None
    if res["dataset"] is not None:
        truth = ev.load_truth(simdir)
        truth["box"] = a.box
    ours_run = os.path.join(work, "gaussianem_run")
    cd_run = os.path.join(work, "cryodrgn_run")
    cd_work = os.path.join(work, "cryodrgn_work")
    if truth is not None and "ours" not in skip:
        tr = log.run("ours.train", train_ours, a, simdir, ours_run, a.epochs)
        if tr:
            res["ours"]["train"] = tr
            res["ours"]["metrics"] = log.run("ours.evaluate", evaluate_ours, a, simdir, ours_run, truth)
            if "latency" not in skip:
                res["ours"]["latency"] = log.run("ours.latency", latency_ours, a, ours_run)
        if a.ours_long_epochs:
            run = f"{ours_run}_e{a.ours_long_epochs}"
            tr = log.run("ours_long.train", train_ours, a, simdir, run, a.ours_long_epochs)
            if tr:
                res["ours_long"] = {"epochs": a.ours_long_epochs, "train": tr,
                                    "metrics": log.run("ours_long.evaluate", evaluate_ours, a, simdir, run, truth)}
    if truth is not None and "cryodrgn" not in skip:
        if not os.path.exists(cryodrgn_bin(a)):
            log.errors["cryodrgn"] = {"error": f"{cryodrgn_bin(a)} not found: run bash benchmarks/setup_cryodrgn.sh"}
        else:
            res["cryodrgn"]["version"] = subprocess.run(
                [os.path.join(a.cryodrgn_venv, "bin", "python"), "-c", "import cryodrgn; print(cryodrgn.__version__)"],
                capture_output=True, text=True).stdout.strip()
            parsed = log.run("cryodrgn.parse_star", parse_star_cryodrgn, a, simdir, cd_work)
            res["cryodrgn"]["parse_star"] = parsed
            if parsed:
                tr = log.run("cryodrgn.train", train_cryodrgn, a, simdir, cd_run, parsed)
                if tr:
                    res["cryodrgn"]["train"] = tr
                    res["cryodrgn"]["metrics"] = log.run("cryodrgn.evaluate", evaluate_cryodrgn, a, simdir,
                                                         cd_run, truth, cd_work)
                    if "latency" not in skip:
                        res["cryodrgn"]["latency"] = log.run("cryodrgn.latency", latency_cryodrgn, a, cd_run, cd_work)
    res["ratios"] = ratios(res)
    if res.get("ours_long"):
        res["ratios_long"] = ratios(res, "ours_long")
    res["errors"] = log.errors
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    res["total_wall_s"] = time.time() - t_all
    res["table_markdown"] = markdown(res)
    os.makedirs(os.path.dirname(out_json), exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(res, f, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    print()
    print(f"GaussianEM vs cryoDRGN {res['cryodrgn'].get('version', '')}: N={a.n}, box {a.box}, "
          f"{a.apix} A/px, SNR {a.snr}, {a.epochs} epochs, device {a.device}")
    print(res["table_markdown"])
    if log.errors:
        print(f"\nstages that failed: {', '.join(log.errors)} (details in the JSON)")
    print(f"\nwrote {out_json} ({res['total_wall_s']:.0f} s)")
    return 1 if log.errors else 0


if __name__ == "__main__":
    sys.exit(main())
