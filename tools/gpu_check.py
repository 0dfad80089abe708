#!/usr/bin/env python3
"""GPU check: everything the engine does on an NVIDIA GPU, in one run (``make gpu-check``).

Run with the node's own Python (the one whose torch has CUDA); under 8 minutes on an
H100 (204 s on an H200). Steps, each recorded as ok / failed / skipped with its seconds,
output tail and key figures in the JSON report (default ``gpu_check_out/report.json``):

1. install: the engine into this Python if it is not importable from this checkout
   (``pip install --no-deps -e engine``, then the missing requirements of
   requirements/engine.txt except torch, with this Python's torch and numpy held fixed;
   tolerant of no package index: what failed is printed, and the engine falls back to
   ``PYTHONPATH=engine``);
2. environment: GPU, driver, torch, CUDA, bf16 support, NCCL, Python, numpy;
3. cpu_tests: ``pytest tests/engine/physics`` (the renderer's CPU reference tests);
4. cuda_tests: ``pytest -m cuda tests/engine/test_cuda.py`` (GPU = CPU numbers, the fused
   renderer = float64, bf16 autocast, the real step at batch 256 x 20,000 Gaussians x box
   128 with each renderer, timed, train + resume, torchrun/NCCL);
5. simulate / train / resume: ``gaussianem simulate`` at box 128, ``gaussianem train
   --amp --epochs 2`` on the GPU, then ``--resume --epochs 3``; particles/s, peak memory;
   then ``gaussianem reconstruct`` of that run and ``gaussianem generate --kmeans 2
   --fit-domains`` (rigid domains fitted to the particles, on the GPU; seconds per state);
6. bench: ``gaussianem bench --device cuda --amp``.

Without a GPU it runs what it can (install check, environment, CPU tests and a tiny CPU
training with resume), records the GPU steps as skipped, and exits 0 unless something
that could run failed. ``--skip-install``, ``--skip-tests`` and ``--skip-train`` leave
steps out; ``--budget`` bounds the whole run (steps that no longer fit are skipped).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_check_steps import (PROBE, bench_figures, fit_figures, junit, jsonl,  # noqa: E402
                             pytest_counts, recon_figures, run_figures)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(REPO, "engine")
REQUIREMENTS = os.path.join(REPO, "requirements", "engine.txt")
TAIL = 4000                      # characters of output kept per step in the report
ESSENTIAL = ["numpy", "scipy", "mrcfile", "starfile", "gemmi", "tqdm", "pandas", "pytest"]

# ----------------------------------------------------------------------------- steps


class Check:
    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.out)
        self.py = sys.executable
        self.steps: list[dict] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.t0 = time.time()
        self.deadline = self.t0 + args.budget
        self.probe: dict = {}

    # -- bookkeeping
    def record(self, name: str, status: str, seconds: float = 0.0, reason: str = "", output: str = "",
               figures: dict | None = None, command: str | None = None) -> dict:
        step = {"name": name, "status": status, "seconds": round(seconds, 1)}
        if reason:
            step["reason"] = reason
        if command:
            step["command"] = command
        if figures:
            step["figures"] = figures
        if output:
            step["output_tail"] = output[-TAIL:]
        self.steps.append(step)
        line = f"[gpu-check] {name}: {status.upper()}" + (f" ({step['seconds']} s)" if seconds else "")
        print(line + (f": {reason}" if reason else ""), flush=True)
        if figures:
            print(f"[gpu-check]   {json.dumps(figures)}", flush=True)
        if status == "failed" and output:
            print(output[-1500:], flush=True)
        return step

    def skip(self, name: str, reason: str) -> dict:
        return self.record(name, "skipped", reason=reason)

    def remaining(self) -> float:
        return self.deadline - time.time()

    def run(self, cmd: list[str], timeout: float, cwd: str | None = None, env: dict | None = None):
        """(return code, output, seconds); return code None when the command timed out."""
        t = time.time()
        timeout = max(1.0, min(timeout, self.remaining()))
        try:
            p = subprocess.run(cmd, cwd=cwd or REPO, env=env or self.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
            return p.returncode, p.stdout, time.time() - t
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return None, out + f"\n(timed out after {timeout:.0f} s)", time.time() - t
        except OSError as e:
            return 127, f"{type(e).__name__}: {e}", time.time() - t

    def command(self, name: str, cmd: list[str], timeout: float, figures=None, min_seconds: float = 15,
                env: dict | None = None, verify=None):
        """Run one command as a step; ``figures(output)`` adds key figures when it succeeds,
        ``verify(figures)`` may still fail it (returns a reason, or None). Returns True when
        the step passed."""
        if self.remaining() < min_seconds:
            self.skip(name, f"out of the time budget ({self.args.budget:.0f} s)")
            return False
        rc, out, sec = self.run(cmd, timeout, env=env)
        shown = " ".join(cmd).replace(self.py, "python")
        if rc != 0:
            why = "timed out" if rc is None else f"exit status {rc}"
            self.record(name, "failed", sec, why, out, command=shown)
            return False
        figs = None
        if figures:
            try:
                figs = figures(out)
            except Exception as e:                  # figures are extra: never fail the step
                figs = {"figures_error": f"{type(e).__name__}: {e}"}
        why = verify(figs or {}) if verify else None
        self.record(name, "failed" if why else "ok", sec, why or "", output=out, figures=figs, command=shown)
        return not why

    def engine(self, *args: str) -> list[str]:
        return [self.py, "-m", "gaussianem.cli.main", *args]

    # -- 1. install
    def requirements(self) -> list[tuple[str, str]]:
        """(distribution name, requirement as written) of requirements/engine.txt, torch left out."""
        out = []
        for line in open(REQUIREMENTS):
            spec = line.split("#")[0].strip()
            if not spec:
                continue
            name = re.split(r"[<>=!~\[;\s]", spec, maxsplit=1)[0]
            if name.lower() != "torch":
                out.append((name, spec))
        return out

    def do_probe(self) -> dict:
        reqs = [n for n, _ in self.requirements()] + ["torch"]
        rc, out, _ = self.run([self.py, "-c", PROBE, json.dumps(reqs), json.dumps(ESSENTIAL)], 120, cwd=self.out)
        for line in out.splitlines():
            if line.startswith("PROBE"):
                return json.loads(line[5:])
        return {"probe_error": out[-2000:] or f"exit status {rc}"}

    def engine_from_here(self, probe: dict) -> bool:
        path = probe.get("gaussianem_path") or ""
        return os.path.realpath(path).startswith(os.path.realpath(ENGINE) + os.sep)

    def install(self) -> None:
        t = time.time()
        probe = self.probe = self.do_probe()
        if "probe_error" in probe:
            self.record("install", "failed", time.time() - t, "this Python could not be probed", probe["probe_error"])
            return
        if not probe.get("torch"):
            self.record("install", "failed", time.time() - t,
                        f"torch is not importable in {self.py} ({probe.get('torch_error')}): install this node's "
                        f"CUDA build of torch first (https://pytorch.org/get-started/locally/), or run with "
                        f"GPU_PY=/path/to/python")
            return
        missing = [(n, s) for n, s in self.requirements() if probe["distributions"].get(n) is None]
        need_engine = not self.engine_from_here(probe)
        if not need_engine and not missing:
            self.record("install", "skipped", time.time() - t,
                        f"the engine is importable from this checkout ({probe['gaussianem_path']}) and every "
                        f"requirement is installed")
            return
        todo = (["engine (editable)"] if need_engine else []) + [s for _, s in missing]
        if self.args.skip_install:
            self.fallback_path(probe)
            self.record("install", "skipped", time.time() - t, f"--skip-install; not installed: {', '.join(todo)}")
            return
        log, failed = [], []
        pip = [self.py, "-m", "pip", "install", "--disable-pip-version-check"]
        if need_engine:
            for extra in (["--no-build-isolation"], []):
                rc, out, _ = self.run(pip + ["--no-deps", *extra, "-e", ENGINE], 300)
                log.append(out)
                if rc == 0:
                    break
            else:
                failed.append("engine (editable install)")
        # hold this Python's torch and numpy where they are: the node's torch is built for them
        constraints = os.path.join(self.out, "constraints.txt")
        with open(constraints, "w") as f:
            for name in ("torch", "numpy"):
                if probe["distributions"].get(name):
                    f.write(f"{name}=={probe['distributions'][name]}\n")
        for name, spec in missing:
            for attempt in ([spec], [name]) if spec != name else ([spec],):
                rc, out, _ = self.run(pip + ["-c", constraints, *attempt], 300)
                log.append(out)
                if rc == 0:
                    break
            else:
                failed.append(spec)
        probe = self.probe = self.do_probe()
        if not self.engine_from_here(probe):
            self.fallback_path(probe)
        still = probe.get("missing_modules", [])
        figures = {"installed": [s for s in todo if s not in failed], "pip_failed": failed,
                   "missing_modules": still, "engine_path": probe.get("gaussianem_path")}
        if failed:
            print(f"[gpu-check] pip could not install: {', '.join(failed)}", flush=True)
        ok = probe.get("gaussianem") and not still
        self.record("install", "ok" if ok else "failed", time.time() - t,
                    "" if ok else f"still missing: {', '.join(still) or 'the engine'}", "\n".join(log),
                    figures=figures)

    def fallback_path(self, probe: dict) -> None:
        """Run this checkout's engine through PYTHONPATH when it is not what is installed."""
        if self.engine_from_here(probe):
            return
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (ENGINE, self.env.get("PYTHONPATH")) if p)
        self.probe = self.do_probe()

    # -- 2. environment
    def environment(self) -> bool:
        """Prints and records the environment; returns whether a CUDA device is usable."""
        t = time.time()
        p = self.probe = self.do_probe() if not self.probe or "probe_error" in self.probe else self.probe
        smi = None
        if shutil.which("nvidia-smi"):
            rc, out, _ = self.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                   "--format=csv,noheader"], 30)
            smi = out.strip() if rc == 0 else None
        figs = {k: p.get(k) for k in ("python", "executable", "platform", "torch", "torch_cuda", "cuda_available",
                                      "gpus", "bf16_supported", "cudnn", "nccl_available", "numpy", "gaussianem",
                                      "gaussianem_path") if k in p}
        figs["nvidia_smi"] = smi
        print("[gpu-check] environment:")
        for k, v in figs.items():
            print(f"    {k:16s} {v}")
        gpu = bool(p.get("cuda_available"))
        if "probe_error" in p or not p.get("torch"):
            self.record("environment", "failed", time.time() - t, "torch is not importable", p.get("probe_error", ""),
                        figures=figs)
            return False
        if smi and not gpu:
            self.record("environment", "failed", time.time() - t,
                        f"nvidia-smi sees a GPU but this torch ({p.get('torch')}) cannot use it: install a CUDA "
                        f"build of torch for this node", figures=figs)
            return False
        self.record("environment", "ok", time.time() - t, figures=figs)
        return gpu

    # -- 3, 4. tests
    def tests(self, gpu: bool) -> None:
        pytest = [self.py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
        if self.args.skip_tests:
            self.skip("cpu_tests", "--skip-tests")
        else:
            self.command("cpu_tests", pytest + ["tests/engine/physics"], 180, figures=pytest_counts)
        if not gpu or self.args.skip_tests:
            self.skip("cuda_tests", "no CUDA device" if not gpu else "--skip-tests")
            return
        xml = os.path.join(self.out, "cuda_tests.xml")
        figs_path = os.path.join(self.out, "cuda_figures.jsonl")
        if os.path.exists(figs_path):
            os.remove(figs_path)
        env = dict(self.env, GAUSSIANEM_GPU_FIGURES=figs_path)
        self.command("cuda_tests", pytest + ["-s", "-m", "cuda", "tests/engine/test_cuda.py", f"--junitxml={xml}"],
                     330, figures=lambda out: {**junit(xml), "measured": jsonl(figs_path)}, env=env,
                     verify=lambda f: None if f.get("passed") else "a CUDA device is present but no CUDA test ran")

    # -- 5. training
    def training(self, gpu: bool) -> None:
        names = ("simulate_box128", "train_box128_amp", "resume_box128_amp", "reconstruct_box128",
                 "fit_domains_box128")
        if not gpu or self.args.skip_train:
            for n in names:
                self.skip(n, "no CUDA device" if not gpu else "--skip-train")
        if self.args.skip_train:
            self.skip("cpu_train_smoke", "--skip-train")
        elif gpu:
            self.skip("cpu_train_smoke", "a GPU is present: the box-128 training covers it")
        else:
            self.cpu_smoke()
        if not gpu or self.args.skip_train:
            return
        sim, run = os.path.join(self.out, "sim128"), os.path.join(self.out, "run128")
        shutil.rmtree(run, ignore_errors=True)
        if not self.command("simulate_box128", self.engine(
                "simulate", "--test-model", "-o", sim, "-n", str(self.args.particles), "--box", "128",
                "--apix", "1.0", "--snr", "0.1", "--states", "10"), 150):
            self.skip("train_box128_amp", "the simulation failed")
            self.skip("resume_box128_amp", "the simulation failed")
            return
        common = [os.path.join(sim, "particles.star"), "--consensus", os.path.join(sim, "consensus.mrc"),
                  "-o", run, "--device", "cuda", "--amp", "--batch-size", str(self.args.batch_size)]
        if not self.command("train_box128_amp", self.engine("train", *common, "--epochs", "2"), 240,
                            figures=lambda out: run_figures(self, run, 2), min_seconds=60):
            self.skip("resume_box128_amp", "the training failed")
            return
        if not self.command("resume_box128_amp", self.engine("train", *common, "--resume", "--epochs", "3"), 150,
                            figures=lambda out: run_figures(self, run, 3), min_seconds=40):
            self.skip("reconstruct_box128", "the training failed")
            return
        recon = os.path.join(self.out, "recon128", "all.mrc")
        self.command("reconstruct_box128", self.engine("reconstruct", run, "--box", "128", "--device", "cuda",
                                                       "-o", recon, "--force", "--progress", "none"), 150,
                     figures=lambda out: recon_figures(recon), min_seconds=20)
        gen = os.path.join(self.out, "fit128")
        self.command("fit_domains_box128", self.engine(
            "generate", run, "--kmeans", "2", "-o", gen, "--force", "--model", os.path.join(sim, "model.pdb"),
            "--fit-domains", "--device", "cuda"), 150, figures=lambda out: fit_figures(gen), min_seconds=20)

    def cpu_smoke(self) -> None:
        """No GPU: the same commands on a tiny set on the CPU (simulate, train, resume)."""
        sim, run = os.path.join(self.out, "sim_cpu"), os.path.join(self.out, "run_cpu")
        shutil.rmtree(run, ignore_errors=True)
        t = time.time()
        env = dict(self.env, OMP_NUM_THREADS=self.env.get("OMP_NUM_THREADS", "1"))
        train = self.engine("train", os.path.join(sim, "particles.star"), "--consensus",
                            os.path.join(sim, "consensus.mrc"), "-o", run, "--device", "cpu", "--batch-size", "32",
                            "--zdim-conf", "2", "--zdim-comp", "1")
        cmds = [self.engine("simulate", "--test-model", "-o", sim, "-n", "128", "--box", "32", "--apix", "3.0",
                            "--states", "4"),
                train + ["--epochs", "1"], train + ["--resume", "--epochs", "2"]]
        log = []
        for cmd in cmds:
            if self.remaining() < 20:
                self.skip("cpu_train_smoke", f"out of the time budget ({self.args.budget:.0f} s)")
                return
            rc, out, _ = self.run(cmd, 150, env=env)
            log.append("$ " + " ".join(cmd).replace(self.py, "python") + "\n" + out)
            if rc != 0:
                self.record("cpu_train_smoke", "failed", time.time() - t,
                            "timed out" if rc is None else f"exit status {rc}", "\n".join(log))
                return
        self.record("cpu_train_smoke", "ok", time.time() - t, output="\n".join(log),
                    figures=run_figures(self, run, 2))

    # -- 6. bench
    def bench(self, gpu: bool) -> None:
        if not gpu or self.args.skip_train:
            self.skip("bench", "no CUDA device" if not gpu else "--skip-train")
            return
        path = os.path.join(self.out, "bench.json")
        self.command("bench", self.engine("bench", "--device", "cuda", "--amp", "-o", path), 240,
                     figures=lambda out: bench_figures(path), min_seconds=60)

    # -- all
    def main(self) -> int:
        os.makedirs(self.out, exist_ok=True)
        started = datetime.datetime.now().isoformat(timespec="seconds")
        self.install()
        gpu = self.environment()
        if not (self.probe.get("torch") and self.probe.get("gaussianem")):
            why = "torch is not importable" if not self.probe.get("torch") else "the engine is not importable"
            for n in ("cpu_tests", "cuda_tests", "simulate_box128", "train_box128_amp", "resume_box128_amp",
                      "reconstruct_box128", "cpu_train_smoke", "bench"):
                self.skip(n, why)
        else:
            self.tests(gpu)
            self.training(gpu)
            self.bench(gpu)
        failed = [s["name"] for s in self.steps if s["status"] == "failed"]
        report = {"started": started, "seconds": round(time.time() - self.t0, 1), "python": self.py,
                  "gpu": gpu, "ok": not failed, "failed": failed,
                  "skipped": [s["name"] for s in self.steps if s["status"] == "skipped"],
                  "steps": self.steps}
        path = self.args.report or os.path.join(self.out, "report.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
        print(f"[gpu-check] {'all steps that could run passed' if not failed else 'FAILED: ' + ', '.join(failed)}"
              f"; skipped: {', '.join(report['skipped']) or 'none'}; report: {path} "
              f"({report['seconds']:.0f} s)", flush=True)
        return 1 if failed else 0


# ----------------------------------------------------------------------------- figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check_out", help="working folder (default gpu_check_out)")
    p.add_argument("--report", help="report path (default OUT/report.json)")
    p.add_argument("--skip-install", action="store_true", help="never pip install")
    p.add_argument("--skip-tests", action="store_true", help="leave out the pytest steps")
    p.add_argument("--skip-train", action="store_true", help="leave out simulation, training and bench")
    p.add_argument("--particles", type=int, default=2000, help="particles in the box-128 set (default 2000)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--budget", type=float, default=470, help="seconds for the whole run (default 470)")
    return Check(p.parse_args(argv)).main()


if __name__ == "__main__":
    sys.exit(main())
