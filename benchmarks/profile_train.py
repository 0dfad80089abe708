"""Where a training step's time goes: torch.profiler over ~20 steps of the real trainer.

Runs ``gaussianem.train.loop.train`` unchanged on a small simulated dataset (made once and
kept in OUTDIR/sim, or ``--sim DIR``) under ``torch.profiler``. The profiler's schedule
advances on the trainer's own per-step progress events, so set-up (reading, fitting the
Gaussians to the consensus map) falls in the skipped first step and the table covers
``--warmup`` + ``--active`` training steps only (forward, backward, optimizer, data).
One profile per ``--num-gaussians`` value (default: the trainer's own choice for the
test protein, 64 Gaussians at box 64, and 1024, closer to a real protein's count).
Prints the top ops by self CPU time (and by self CUDA time on a GPU) and writes the
tables to ``benchmarks/results/profile_<device>.txt``.

  .venv/bin/python benchmarks/profile_train.py                 # box 64, 20 steps, CPU
  .venv/bin/python benchmarks/profile_train.py --threads 1 --active 20
  .venv/bin/python benchmarks/profile_train.py --device cuda --trace trace.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "engine"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, schedule  # noqa: E402

from gaussianem.progress import Progress  # noqa: E402


class ProfilerSteps(Progress):
    """Progress that advances the profiler at each training step and ends the run (by
    raising :class:`Done` out of train()) after ``stop_after`` steps."""

    class Done(Exception):
        pass

    def __init__(self, prof, stop_after: int):
        super().__init__("none")
        self.prof, self.stop_after, self.steps = prof, stop_after, 0
        self.t_first = None

    def event(self, event: str, **fields) -> None:
        if event != "step":
            return
        self.prof.step()
        self.steps += 1
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if self.steps >= self.stop_after:
            self.t_last = time.perf_counter()
            raise ProfilerSteps.Done()


def ensure_sim(simdir: str, n: int, box: int, apix: float) -> None:
    if os.path.exists(os.path.join(simdir, "particles.star")):
        return
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.io.models import write_model
    from gaussianem.sim.testprotein import build_test_model
    os.makedirs(simdir, exist_ok=True)
    write_model(os.path.join(simdir, "input_model.pdb"), build_test_model())
    simulate_from_model(os.path.join(simdir, "input_model.pdb"), simdir,
                        SimulationSpec(n=n, box=box, apix=apix, snr=0.5))


def profile_once(a, simdir: str, n: int, num_gaussians: int | None) -> str:
    """Profile ``--active`` steps of one training run; the report as text."""
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    need = 1 + a.warmup + a.active
    epochs = -(-need * a.batch_size // n) + 1
    device = torch.device(a.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sched = schedule(wait=1, warmup=a.warmup, active=a.active, repeat=1)
    run = tempfile.mkdtemp(prefix="run_", dir=os.path.abspath(a.outdir))
    cfg = TrainConfig(particles=os.path.join(simdir, "particles.star"), consensus=os.path.join(simdir, "consensus.mrc"),
                      outdir=run, epochs=epochs, batch_size=a.batch_size, zdim_conf=2, zdim_comp=2, loss="l2",
                      device=a.device, keep_checkpoints=False, num_gaussians=num_gaussians)
    with profile(activities=activities, schedule=sched, record_shapes=True) as prof:
        progress = ProfilerSteps(prof, need)
        try:
            train(cfg, progress=progress)
        except ProfilerSteps.Done:
            pass
    from gaussianem.model.gaussians import GaussianSet
    n_gauss = len(GaussianSet.load(os.path.join(run, "gaussians.pt")))
    per_step = (progress.t_last - progress.t_first) / max(progress.steps - 1, 1)
    head = (f"GaussianEM training step profile: {a.active} steps (after {a.warmup} warm-up), batch {a.batch_size}, "
            f"box {a.box}, {n_gauss} Gaussians, split latent 2+2, L2 loss, {n} particles in {simdir}\n"
            f"device {a.device}; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {per_step * 1e3:.1f} ms per step under the profiler "
            f"({a.batch_size / per_step:.0f} particles/s)\n")
    ka = prof.key_averages()
    tables = [head, "Top ops by self CPU time:\n", ka.table(sort_by="self_cpu_time_total", row_limit=a.top),
              "\nTop ops by total CPU time (includes children):\n",
              ka.table(sort_by="cpu_time_total", row_limit=a.top),
              "\nTop ops by self CPU time, grouped by input shape:\n",
              prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15)]
    if device.type == "cuda":
        tables += ["\nTop ops by self CUDA time:\n", ka.table(sort_by="self_cuda_time_total", row_limit=a.top)]
    if a.trace:
        prof.export_chrome_trace(a.trace.replace(".json", f"_{n_gauss}g.json"))
    return "\n".join(tables)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sim", help="simulated dataset to train on (default: OUTDIR/sim, made once)")
    p.add_argument("--outdir", default=os.path.join(HERE, "..", "bench_out", "profile"))
    p.add_argument("-n", type=int, default=2048, help="particles to simulate (default 2048)")
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-gaussians", type=int, nargs="+", default=[0, 1024],
                   help="one profile per value; 0 = the trainer's default (default: 0 1024)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--warmup", type=int, default=3, help="profiled-but-discarded steps (default 3)")
    p.add_argument("--active", type=int, default=20, help="recorded steps (default 20)")
    p.add_argument("--top", type=int, default=30, help="rows in the table (default 30)")
    p.add_argument("--trace", help="also write Chrome traces (NAME_<gaussians>g.json)")
    p.add_argument("-o", "--output", help="default benchmarks/results/profile_<device>.txt")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    simdir = a.sim or os.path.join(a.outdir, "sim")
    ensure_sim(simdir, a.n, a.box, a.apix)
    from gaussianem.io.particles import load_particles
    n = len(load_particles(os.path.join(simdir, "particles.star")))
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, ".gitignore"), "w") as f:
        f.write("*\n")
    sections = [profile_once(a, simdir, n, g or None) for g in a.num_gaussians]
    text = ("\n" + "=" * 100 + "\n\n").join(sections)
    print(text)
    out = a.output or os.path.join(HERE, "results", f"profile_{torch.device(a.device).type}.txt")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
