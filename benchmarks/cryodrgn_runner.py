"""cryoDRGN's side of the comparison (compare_cryodrgn.py), run through its own
environment (``.venv-cryodrgn``): ``cryodrgn parse_star`` of the same particles.star,
``cryodrgn train_vae``, ``cryodrgn eval_vol``, and cryoDRGN's evaluation and volume
latency.
"""

from __future__ import annotations

import json
import os
import pickle
import re

import numpy as np

from bench_common import (cuda_available, epoch_summary, reuse_or_clear, stage_json, apply_transform,
                          child_env, conformation_latents, evaluate_latents, orientation_check, replay_fn,
                          run_measured)  # bench_common also puts engine/ on sys.path
from gaussianem.analysis import evaluate as ev


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
    old = reuse_or_clear(a, run, "z.pkl")
    if old:
        return {**old, "reused": True}
    cmd = [cryodrgn_bin(a), "train_vae", os.path.join(simdir, "particles.star"), "--datadir", simdir,
           "--poses", parsed["poses"], "--ctf", parsed["ctf"], "--zdim", "4", "-n", str(a.epochs),
           "-o", run, "--no-analysis", "--seed", str(a.seed), "--checkpoint", str(a.epochs)]
    if a.cdrgn_dim:
        cmd += ["--enc-dim", str(a.cdrgn_dim), "--dec-dim", str(a.cdrgn_dim)]
    if a.cdrgn_layers:
        cmd += ["--enc-layers", str(a.cdrgn_layers), "--dec-layers", str(a.cdrgn_layers)]
    if a.device == "cpu" or not cuda_available():
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
    m.update(epoch_seconds=secs, **epoch_summary(secs, a.n),
             settings={"zdim": 4, "enc_dim": a.cdrgn_dim or 1024, "dec_dim": a.cdrgn_dim or 1024,
                       "layers": a.cdrgn_layers or 3, "batch_size": 16})
    with open(stage_json(run), "w") as f:
        json.dump(m, f, indent=2)
    return m


def load_cryodrgn_z(run) -> np.ndarray:
    with open(os.path.join(run, "z.pkl"), "rb") as f:
        return np.asarray(pickle.load(f), dtype=np.float32)


def eval_vol(a, run, zs, out) -> tuple:
    """``cryodrgn eval_vol`` for latents ``zs`` (one -> -z, several -> --zfile); returns
    (list of maps as read by gaussianem.io.mrc.read_map, measured)."""
    from gaussianem.io.mrc import read_map
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


# ----------------------------------------------------------------------------- evaluation

def evaluate_cryodrgn(a, simdir, run, truth, work) -> dict:
    from gaussianem.io.mrc import read_map
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
