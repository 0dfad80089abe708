"""GaussianEM against cryoDRGN on the same simulated dataset, side by side.

Stages (each one's failure is recorded in the JSON and the rest goes on):

1. simulate: the built-in two-domain test protein (hinge motion + a chain absent in 30%
   of the particles) with ``gaussianem.simulate.simulate_from_model``; default N=10000,
   box 64, 2.0 A/px, SNR 0.5 (``--box128``: box 128 at 1.0 A/px, the same field of view).
2. train: ``gaussianem train`` (split latent 2 + 2, L2 loss, as benchmarks/validate.py)
   and ``cryodrgn train_vae`` (zdim 4), the same number of epochs, each in its own
   process: seconds per epoch (median over epochs, from each program's own log),
   particles/s, whole-process wall time and peak resident memory (``os.wait4``'s
   ``ru_maxrss`` of that process). cryoDRGN reads poses and CTF parsed from the SAME
   particles.star by its own ``cryodrgn parse_star`` (-D box, --Apix apix).
3. evaluate: the same code for both (``gaussianem.evaluate``): |Spearman| of latent PC1
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
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "engine"))

import numpy as np  # noqa: E402

from gaussianem import evaluate as ev  # noqa: E402


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
    from gaussianem.simulate import SimulationSpec, simulate_from_model
    from gaussianem.structure import write_model
    from gaussianem.testprotein import build_test_model
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


def _stage_json(run):
    return os.path.join(run, "benchmark_stage.json")


def _reuse_or_clear(a, run, marker):
    """The recorded stage of a finished run in ``run`` (with --reuse), else None after
    clearing ``run`` for a fresh one."""
    if a.reuse and os.path.exists(os.path.join(run, marker)) and os.path.exists(_stage_json(run)):
        with open(_stage_json(run)) as f:
            return json.load(f)
    if os.path.exists(run):
        import shutil
        shutil.rmtree(run)
    return None


def train_ours(a, simdir, run, epochs) -> dict:
    old = _reuse_or_clear(a, run, "latents.npz")
    if old:
        return {**old, "reused": True}
    cmd = [sys.executable, "-m", "gaussianem.cli.main", "train", os.path.join(simdir, "particles.star"),
           "--consensus", os.path.join(simdir, "consensus.mrc"), "-o", run, "--epochs", str(epochs),
           "--zdim-conf", "2", "--zdim-comp", "2", "--loss", "l2", "--device", a.device,
           "--progress", "none", "--seed", str(a.seed)] + a.ours_extra
    os.makedirs(os.path.dirname(run), exist_ok=True)
    m = run_measured(cmd, run + ".log", env=child_env(a.threads, engine=True))
    epochs = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    secs = [e["seconds"] for e in epochs if e.get("kind") == "epoch"]
    m.update(epoch_seconds=secs, **_epoch_summary(secs, a.n),
             peak_gpu_memory_gb=max([e.get("peak_memory_gb", 0) for e in epochs if e.get("kind") == "epoch"] or [0]),
             settings={"zdim_conf": 2, "zdim_comp": 2, "loss": "l2", "batch_size": 64, "extra": a.ours_extra})
    with open(_stage_json(run), "w") as f:
        json.dump(m, f, indent=2)
    return m


def _epoch_summary(secs, n):
    if not secs:
        return {"s_per_epoch": float("nan"), "particles_per_s": float("nan")}
    med = float(np.median(secs))
    return {"s_per_epoch": med, "s_per_epoch_mean": float(np.mean(secs)), "particles_per_s": n / med}


def cryodrgn_bin(a):
    return os.path.join(a.cryodrgn_venv, "bin", "cryodrgn")


def parse_star_cryodrgn(a, simdir, work) -> dict:
    os.makedirs(work, exist_ok=True)
    ctf, poses = os.path.join(work, "ctf.pkl"), os.path.join(work, "poses.pkl")
    cmd = [cryodrgn_bin(a), "parse_star", os.path.join(simdir, "particles.star"), "--ctf", ctf,
           "--poses", poses, "-D", str(a.box), "--Apix", str(a.apix), "--overwrite"]
    m = run_measured(cmd, os.path.join(work, "parse_star.log"), env=child_env(a.threads))
    # the parsed poses must be the simulation's: rotations as R (cryoDRGN: R_from_relion) and
    # translations as fractions of the box
    truth = ev.load_truth(simdir)
    with open(poses, "rb") as f:
        rot, trans = pickle.load(f)
    m["pose_check"] = {
        "max_abs_rot_diff_vs_truth": float(np.abs(rot - truth["rotations"]).max()),
        "max_abs_rot_diff_vs_truth_transposed": float(np.abs(rot - truth["rotations"].transpose(0, 2, 1)).max()),
        "max_abs_trans_px_diff_vs_truth": float(np.abs(trans * a.box - truth["shifts"] / a.apix).max()),
    }
    with open(ctf, "rb") as f:
        c = pickle.load(f)
    m["ctf_check"] = {"columns": "D, Apix, dfU, dfV, dfang, kV, Cs, w, phase",
                      "max_abs_defocus_u_diff_vs_truth": float(np.abs(c[:, 2] - truth["defocus_u"]).max())
                      if "defocus_u" in truth else None, "first_row": [float(v) for v in c[0]]}
    m.update(ctf=ctf, poses=poses)
    return m


def train_cryodrgn(a, simdir, run, parsed) -> dict:
    old = _reuse_or_clear(a, run, "z.pkl")
    if old:
        return {**old, "reused": True}
    cmd = [cryodrgn_bin(a), "train_vae", os.path.join(simdir, "particles.star"), "--datadir", simdir,
           "--poses", parsed["poses"], "--ctf", parsed["ctf"], "--zdim", "4", "-n", str(a.epochs),
           "-o", run, "--no-analysis", "--seed", str(a.seed), "--checkpoint", str(a.epochs)]
    if a.cdrgn_dim:
        cmd += ["--enc-dim", str(a.cdrgn_dim), "--dec-dim", str(a.cdrgn_dim)]
    if a.cdrgn_layers:
        cmd += ["--enc-layers", str(a.cdrgn_layers), "--dec-layers", str(a.cdrgn_layers)]
    if a.device == "cpu" or not _cuda_available():
        cmd += ["--no-amp"]                      # AMP is CUDA-only in cryoDRGN
    cmd += a.cdrgn_extra
    os.makedirs(os.path.dirname(run), exist_ok=True)
    m = run_measured(cmd, run + ".log", env=child_env(a.threads))
    secs = []
    with open(os.path.join(run, "run.log")) as f:
        for line in f:
            g = re.search(r"=====> Epoch: \d+ .*Finished in (\d+):(\d+):([\d.]+)", line)
            if g:
                secs.append(int(g[1]) * 3600 + int(g[2]) * 60 + float(g[3]))
    m.update(epoch_seconds=secs, **_epoch_summary(secs, a.n),
             settings={"zdim": 4, "enc_dim": a.cdrgn_dim or 1024, "dec_dim": a.cdrgn_dim or 1024,
                       "layers": a.cdrgn_layers or 3, "batch_size": 16})
    with open(_stage_json(run), "w") as f:
        json.dump(m, f, indent=2)
    return m


def _cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def load_cryodrgn_z(run) -> np.ndarray:
    with open(os.path.join(run, "z.pkl"), "rb") as f:
        return np.asarray(pickle.load(f), dtype=np.float32)


def eval_vol(a, run, zs, out) -> tuple:
    """``cryodrgn eval_vol`` for latents ``zs`` (one -> -z, several -> --zfile); returns
    (list of maps as read by gaussianem.mrc.read_map, measured)."""
    from gaussianem.mrc import read_map
    zs = np.atleast_2d(zs)
    cmd = [cryodrgn_bin(a), "eval_vol", os.path.join(run, "weights.pkl"), "-c", os.path.join(run, "config.yaml"),
           "--Apix", str(a.apix)]
    if len(zs) == 1:
        path = out + ".mrc"
        cmd += ["-o", path, "-z"] + [repr(float(v)) for v in zs[0]]
    else:
        zfile = out + ".txt"
        np.savetxt(zfile, zs)
        cmd += ["-o", out, "--zfile", zfile]
    m = run_measured(cmd, out + ".log", env=child_env(a.threads))
    paths = [path] if len(zs) == 1 else [os.path.join(out, f"vol_{i:03d}.mrc") for i in range(1, len(zs) + 1)]
    maps = [read_map(p) for p in paths]
    m["apix_in_header"] = float(maps[0][1])
    m["origin_in_header"] = [float(v) for v in maps[0][2]]
    m["shape"] = list(maps[0][0].shape)
    return [mp[0] for mp in maps], m


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
    m = {"motion_spearman_full_z": ev.motion_spearman(z, truth["motion"])}
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


def evaluate_ours(a, simdir, run, truth) -> dict:
    from gaussianem.mrc import read_map
    from gaussianem.result import load_result
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


def evaluate_cryodrgn(a, simdir, run, truth, work) -> dict:
    from gaussianem.mrc import read_map
    z = load_cryodrgn_z(run)
    zs = conformation_latents(z, truth)
    vols, meas = eval_vol(a, run, np.stack(zs), os.path.join(work, "eval_conformations"))
    refs = [read_map(p)[0] for p in truth["truth_maps"][:len(zs)]]
    orient = orientation_check(vols, refs)
    raw = evaluate_latents(z, truth, replay_fn(vols, zs), a.apix)
    m = dict(raw)
    if orient["needs_transform"]:
        b = orient["best"]
        tv = [apply_transform(v, b["perm"], b["flips"], b["shift"]) for v in vols]
        m = evaluate_latents(z, truth, replay_fn(tv, zs), a.apix)
        m["fsc_without_transform"] = {k: raw[k] for k in ("fsc_auc_mean", "fsc05_mean", "corr_mean")}
    m["orientation"] = orient
    m["eval_vol_output"] = {k: meas[k] for k in ("apix_in_header", "origin_in_header", "shape")}
    return m


# ----------------------------------------------------------------------------- latency

def latency_ours(a, run, n=10) -> dict:
    import torch
    from gaussianem.result import load_result
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


def latency_cryodrgn(a, run, work, n=10, repeats=3) -> dict:
    z = load_cryodrgn_z(run)
    zs = z[np.random.default_rng(0).choice(len(z), n, replace=False)]
    single = []
    for i in range(repeats):
        _, m = eval_vol(a, run, zs[i:i + 1], os.path.join(work, f"latency_single_{i}"))
        single.append(m["wall_s"])
    _, m10 = eval_vol(a, run, zs, os.path.join(work, "latency_batch"))
    one = float(np.median(single))
    return {"single_volume_process_s": one, "single_volume_process_all_s": single,
            "zfile_10_wall_s": m10["wall_s"], "zfile_10_per_volume_s": m10["wall_s"] / n,
            "zfile_marginal_per_volume_s": (m10["wall_s"] - one) / (n - 1),
            "peak_rss_mb_eval_vol_10": m10["peak_rss_mb"]}


# ----------------------------------------------------------------------------- report

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


def _g(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt(v, spec=".3g"):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return format(v, spec)


ROWS = [  # label, path in each side, format, higher is better
    ("seconds / epoch", ("train", "s_per_epoch"), ".1f", False),
    ("particles / s (training)", ("train", "particles_per_s"), ".1f", True),
    ("training process wall time (s)", ("train", "wall_s"), ".0f", False),
    ("peak RSS, training (MB)", ("train", "peak_rss_mb"), ".0f", False),
    ("Spearman (abs) PC1 vs motion (full z)", ("metrics", "motion_spearman_full_z"), ".3f", True),
    ("presence, linear probe (full z)", ("metrics", "presence_linear_probe_full_z"), ".3f", True),
    ("presence, 2-means (full z)", ("metrics", "presence_kmeans_full_z"), ".3f", True),
    ("per-conformation FSC AUC (mean)", ("metrics", "fsc_auc_mean"), ".3f", True),
    ("per-conformation FSC=0.5 (Å, mean)", ("metrics", "fsc05_mean"), ".2f", False),
    ("per-conformation real-space corr (mean)", ("metrics", "corr_mean"), ".3f", True),
]


def ratios(res, ours_key="ours") -> dict:
    o, c = res.get(ours_key) or {}, res.get("cryodrgn", {})
    out = {}
    for label, path, _, _ in ROWS:
        x, y = _g(o, *path), _g(c, *path)
        if x is not None and y is not None and y:
            out[path[-1]] = x / y
    lo, lc = o.get("latency", {}), c.get("latency", {})
    if lo and lc:
        out["volume_latency_per_volume_vs_eval_vol_process"] = lo["per_volume_s"] / lc["single_volume_process_s"]
        out["volume_latency_per_volume_vs_eval_vol_zfile_per_volume"] = lo["per_volume_s"] / lc["zfile_10_per_volume_s"]
    return out


def markdown(res) -> str:
    o, c, r = res.get("ours", {}), res.get("cryodrgn", {}), res.get("ratios", {})
    lg = res.get("ours_long")
    e = res["settings"]["epochs"]
    head = f"| | GaussianEM, {e} epochs |" + (f" GaussianEM, {lg['epochs']} epochs |" if lg else "")
    lines = [head + f" cryoDRGN, {e} epochs | GaussianEM / cryoDRGN ({e} epochs each) |",
             "|---|---:|" + ("---:|" if lg else "") + "---:|---:|"]

    def row(label, x, xl, y, ratio):
        return f"| {label} | {x} |" + (f" {xl} |" if lg else "") + f" {y} | {ratio} |"
    for label, path, spec, _ in ROWS:
        lines.append(row(label, _fmt(_g(o, *path), spec), _fmt(_g(lg, *path), spec), _fmt(_g(c, *path), spec),
                         _fmt(r.get(path[-1]), ".2f")))
    sp = [_g(d, "metrics", "motion_spearman_conf") for d in (o, lg)]
    pr = [_g(d, "metrics", "presence_linear_probe_comp") for d in (o, lg)]
    lines.append(row("ours, split latent: Spearman on z_conf / probe on z_comp",
                     f"{_fmt(sp[0], '.3f')} / {_fmt(pr[0], '.3f')}", f"{_fmt(sp[1], '.3f')} / {_fmt(pr[1], '.3f')}",
                     "—", "—"))
    lo, lc = o.get("latency", {}), c.get("latency", {})
    lines.append(row("volume latency, one map (s)", f"{_fmt(lo.get('per_volume_s'), '.4f')} (in process)", "",
                     f"{_fmt(lc.get('single_volume_process_s'), '.2f')} (eval_vol process)",
                     _fmt(r.get("volume_latency_per_volume_vs_eval_vol_process"), ".4f")))
    lines.append(row("volume latency, per map of 10 (s)",
                     f"{_fmt(lo.get('batch_of_10_per_volume_s'), '.4f')} (one batch)", "",
                     f"{_fmt(lc.get('zfile_10_per_volume_s'), '.2f')} (--zfile; marginal "
                     f"{_fmt(lc.get('zfile_marginal_per_volume_s'), '.2f')})",
                     _fmt(r.get("volume_latency_per_volume_vs_eval_vol_zfile_per_volume"), ".4f")))
    lines.append(row("load the trained model (s)", _fmt(lo.get("load_result_s"), ".2f"), "",
                     "(inside each process)", ""))
    return "\n".join(lines)


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
        a.device = "cuda" if _cuda_available() else "cpu"
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
