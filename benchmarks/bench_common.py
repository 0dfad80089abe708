"""Shared machinery of the GaussianEM / cryoDRGN comparison (compare_cryodrgn.py).

Running measured stages (StageLog, run_measured, child_env), the simulated dataset,
reuse of finished runs, the machine description, and the evaluation helpers used for
both methods: the metrics (evaluate_latents, conformation_latents, replay_fn) and the
check of a method's maps against the truth over the 48 axis permutations/flips.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if os.path.join(ROOT, "engine") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "engine"))

import numpy as np  # noqa: E402

from gaussianem.analysis import evaluate as ev  # noqa: E402


# ----------------------------------------------------------------------------- running

class StageLog:
    """Runs named stages; a failing stage's error goes into ``errors`` instead of up."""

    def __init__(self):
        self.errors = {}

    def run(self, name, fn, *args, **kw):
        t = time.time()
        print(f"== {name}", flush=True)
        try:
            out = fn(*args, **kw)
            print(f"   {name}: done in {time.time() - t:.1f} s", flush=True)
            return out
        except Exception as e:  # noqa: BLE001 (any failure is a result to record)
            tb = traceback.format_exc()
            self.errors[name] = {"error": f"{type(e).__name__}: {e}", "traceback": tb[-3000:]}
            print(f"   {name}: FAILED: {type(e).__name__}: {e}", flush=True)
            return None


def run_measured(cmd, log_path, env=None, cwd=None) -> dict:
    """Run ``cmd``; its wall time and peak RSS (ru_maxrss of that process tree's largest
    waited-for process, via os.wait4). Output goes to ``log_path``. Raises on failure."""
    with open(log_path, "w") as log:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"{shlex.join(cmd)} exited with {p.returncode}:\n{tail}")
    return {"wall_s": wall, "peak_rss_mb": ru.ru_maxrss / 1024.0, "command": shlex.join(cmd)}


def child_env(threads, engine=False):
    """Environment of a measured process: OMP_NUM_THREADS (torch's intra-op threads) when
    asked for; the engine's source on PYTHONPATH for ours, nothing of ours for cryoDRGN."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if engine:
        env["PYTHONPATH"] = os.path.join(ROOT, "engine")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


# ----------------------------------------------------------------------------- stages

def simulate(a, simdir) -> dict:
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.io.models import write_model
    from gaussianem.sim.testprotein import build_test_model
    spec = SimulationSpec(n=a.n, box=a.box, apix=a.apix, snr=a.snr, seed=a.seed)
    want = {"n": a.n, "box": a.box, "apix": a.apix, "snr": a.snr, "seed": a.seed, "model": "test-model"}
    stamp = os.path.join(simdir, "spec.json")
    if os.path.exists(stamp) and os.path.exists(os.path.join(simdir, "ground_truth.npz")):
        with open(stamp) as f:
            old = json.load(f)
        if {k: old.get(k) for k in want} == want:
            return {**old, "reused": True}
    os.makedirs(simdir, exist_ok=True)
    write_model(os.path.join(simdir, "input_model.pdb"), build_test_model())
    t = time.time()
    simulate_from_model(os.path.join(simdir, "input_model.pdb"), simdir, spec)
    out = {**want, "seconds": time.time() - t,
           "command": f"gaussianem simulate --test-model -o SIM -n {a.n} --box {a.box} "
                      f"--apix {a.apix} --snr {a.snr} --seed {a.seed}"}
    with open(stamp, "w") as f:
        json.dump(out, f)
    return out


def stage_json(run):
    return os.path.join(run, "benchmark_stage.json")


def reuse_or_clear(a, run, marker):
    """The recorded stage of a finished run in ``run`` (with --reuse), else None after
    clearing ``run`` for a fresh one."""
    if a.reuse and os.path.exists(os.path.join(run, marker)) and os.path.exists(stage_json(run)):
        with open(stage_json(run)) as f:
            return json.load(f)
    if os.path.exists(run):
        import shutil
        shutil.rmtree(run)
    return None


def epoch_summary(secs, n):
    if not secs:
        return {"s_per_epoch": float("nan"), "particles_per_s": float("nan")}
    med = float(np.median(secs))
    return {"s_per_epoch": med, "s_per_epoch_mean": float(np.mean(secs)), "particles_per_s": n / med}


def cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------- orientation

def _signed_perms():
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            yield perm, flips


def apply_transform(vol, perm, flips, shift=(0, 0, 0)):
    """Axes of the (z, y, x) array permuted by ``perm``, then mirrored about the centre
    voxel D//2 (i -> D - i mod D) where ``flips`` says, then rolled by ``shift``."""
    v = np.transpose(vol, perm)
    for ax, f in enumerate(flips):
        if f:
            v = np.roll(np.flip(v, ax), 1, ax)
    return np.roll(v, shift, (0, 1, 2)) if any(shift) else v


def _ncc_best_shift(v, ref):
    """Normalized circular cross-correlation of v with ref: (best value, its shift)."""
    a = (v - v.mean()) / (v.std() + 1e-30)
    b = (ref - ref.mean()) / (ref.std() + 1e-30)
    cc = np.fft.irfftn(np.fft.rfftn(b) * np.conj(np.fft.rfftn(a)), s=a.shape) / a.size
    i = np.unravel_index(np.argmax(cc), cc.shape)
    D = np.array(a.shape)
    shift = tuple(int(s) if s <= d // 2 else int(s - d) for s, d in zip(i, D))
    return float(cc[i]), shift, float(np.min(cc))


def orientation_check(vols, refs) -> dict:
    """Which of the 48 axis permutations/flips (at its best integer shift) makes the maps
    agree best with the truth, summed over conformations."""
    rows = []
    for perm, flips in _signed_perms():
        scores, shifts, mins = [], [], []
        for v, r in zip(vols, refs):
            s, sh, mn = _ncc_best_shift(apply_transform(v, perm, flips), r)
            scores.append(s)
            shifts.append(sh)
            mins.append(mn)
        rows.append({"perm": list(perm), "flips": list(flips), "ncc": float(np.mean(scores)),
                     "shift": list(max(set(shifts), key=shifts.count)), "min_ncc": float(np.mean(mins))})
    rows.sort(key=lambda r: -r["ncc"])
    ident = next(r for r in rows if r["perm"] == [0, 1, 2] and not any(r["flips"]))
    zero = [float(np.corrcoef(v.ravel(), r.ravel())[0, 1]) for v, r in zip(vols, refs)]
    best = rows[0]
    return {"best": best, "identity": ident, "identity_corr_no_shift": float(np.mean(zero)),
            "runner_up": rows[1], "top5": rows[:5],
            "inverted_contrast": bool(abs(best["min_ncc"]) > best["ncc"]),
            "needs_transform": bool(best["perm"] != [0, 1, 2] or any(best["flips"])
                                    or any(best["shift"])) and best["ncc"] > ident["ncc"] + 0.02}


# ----------------------------------------------------------------------------- evaluation

def evaluate_latents(z, truth, volume_fn, apix, z_conf=None, z_comp=None) -> dict:
    """Metrics from gaussianem.evaluate, the same calls for every method."""
    m = {"motion_spearman_full_z": ev.motion_spearman(z, truth["motion"]),
         "motion_linear_probe_full_z": ev.motion_probe(z, truth["motion"])}
    p = ev.presence_accuracy(z, truth["present"])
    m["presence_linear_probe_full_z"], m["presence_kmeans_full_z"] = p["linear_probe"], p["kmeans"]
    if z_conf is not None:
        m["motion_spearman_conf"] = ev.motion_spearman(z_conf, truth["motion"])
        p = ev.presence_accuracy(z_comp, truth["present"])
        m["presence_linear_probe_comp"], m["presence_kmeans_comp"] = p["linear_probe"], p["kmeans"]
    if volume_fn is not None:
        fscs = ev.per_conformation_fsc(z, truth, volume_fn, apix)
        m["per_conformation"] = fscs
        m["fsc_auc_mean"] = float(np.mean([r["fsc_auc"] for r in fscs]))
        m["fsc05_mean"] = float(np.mean([r["fsc05"] for r in fscs]))
        m["corr_mean"] = float(np.mean([r["corr"] for r in fscs]))
    return m


def conformation_latents(z, truth) -> list:
    """The latents per_conformation_fsc will ask volumes for, in its order (found by
    running it with a recording volume_fn, so the selection code is not copied)."""
    seen = []
    ref_shape = (truth["box"],) * 3

    def record(zk):
        seen.append(np.asarray(zk, dtype=np.float32))
        return np.random.default_rng(len(seen)).normal(size=ref_shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev.per_conformation_fsc(z, truth, record, 1.0)
    return seen


def replay_fn(vols, zs):
    """A volume_fn giving back precomputed maps in call order (checking the latents)."""
    it = iter(zip(zs, vols))

    def fn(zk):
        z0, v = next(it)
        if not np.allclose(z0, zk, atol=1e-6):
            raise RuntimeError("per_conformation_fsc asked for latents in another order")
        return v
    return fn


# ----------------------------------------------------------------------------- machine

def machine_info(device) -> dict:
    import torch
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg_at_start": list(os.getloadavg())}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except Exception:  # noqa: BLE001
        pass
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        out = subprocess.run([sys.executable, "-c", "import gaussianem; print(gaussianem.__version__)"],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "engine")})
        info["gaussianem"] = out.stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    return info
