"""The robustness matrix: the DEFAULT training on realistic data sets, one axis changed at a time.

Each cell is one data set from ``benchmarks/realistic.py`` (real structures from
MDAnalysisTests; install with ``bash benchmarks/setup_robustness.sh``), trained with the
default command and nothing else but the epoch count (the same for every cell)::

    .venv/bin/gaussianem train DATA/particles.star --consensus DATA/consensus.mrc -o RUN --epochs E

run as a subprocess (its exit code, output in ``RUN.log``, wall time recorded;
``OMP_NUM_THREADS`` set from ``--threads``, which is not a training flag), then evaluated
with ``gaussianem.analysis.result.load_result(RUN)`` and ``gaussianem.analysis.evaluate``'s metrics, ON THE
NON-JUNK PARTICLES ONLY:

* motion: |Spearman| of the first principal component of z_conf (all of z when the latent
  is not split) against the true motion (``motion PC1``), and of the 5-fold cross-validated
  linear prediction from all of z (``motion probe``); two motions: the same probe for the
  second (``motion2_probe``);
* presence (cells with composition): 2-means accuracy and cross-validated logistic probe
  on z_comp (all of z when not split);
* per-conformation FSC AUC against the true maps (``Result.volume`` at the median latent of
  the present particles near each true level);
* junk cells: how well a linear probe on z tells junk from good particles (``junk_probe``);
* health: ``RUN/health.json``'s ``status``, or ``missing``;
* collapse (our own check): the map at the median latent (``Result.volume``) is ``empty``
  when its standard deviation is below 1e-3 of the consensus map's (or not finite).

Verdict: PASS when training exited 0, the map did not collapse, ``motion probe >= 0.8``
(the linear probe, not PC1: with an unsplit latent, PC1 may well be the composition; PC1 is
reported beside it) and, for cells with composition, ``presence 2-means >= 0.95``; else
FAIL (the cell stays in the table).

Cells (``--cells a,b`` picks some; ``--list`` shows them): ``base`` is 1a28 (2 chains,
500 residues), its softest ANM normal mode with 4 A RMSD end to end, chain B absent in
30%, SNR 0.1, box 64 at 2 A/px, images x37.5 + 1200 and consensus x0.05 (arbitrary units);
every other cell changes one thing. Off by default (time; ``--all`` runs them): ``box256``,
``small_comp``, ``rot_err`` / ``shift_err`` (pose_err's halves) and the CryoBench regime's
20,000-particle cells. ``--quick``: cells base and junk_noise, 800 particles, 3 epochs (a
smoke run of the whole path, not a measurement).

Results: ``benchmarks/results/robustness_<tag>.json`` (rewritten after every cell; cells run
before under the tag stay unless ``--fresh``; ``--reuse`` skips cells done with the same spec
and epochs) and ``robustness_<tag>.md`` (the table, also printed). Each cell records the
engine's commit and a hash of its uncommitted changes: cells trained on different engine
states are not comparable.

``--cryodrgn``: also trains cryoDRGN (``benchmarks/cryodrgn_runner.py``, ``.venv-cryodrgn``
from ``benchmarks/setup_cryodrgn.sh``; zdim 4, same epochs) on the SNR 0.1 and 0.03 cells,
evaluated with the same metrics; about an hour per 2000-particle cell on 2 cores, so off by
default. Two-domain cells also run ``--fit-domains`` from either end (``domain_fit.both_ends``).

Time at one thread on a 2-core machine shared with another training: a box-64 cell about
3 min; box128 and apix0.8 (600 particles, coarse to fine) about 10 and 13 min; the default
matrix about 1.5 hours (the three two-domain cells about 15 min each); leave out
box128,apix0.8 with --cells for ~20 min less.

  bash benchmarks/setup_robustness.sh
  .venv/bin/python benchmarks/robustness.py --outdir bench_out/robustness          # about 1.5 hours
  .venv/bin/python benchmarks/robustness.py --outdir bench_out/robustness --quick  # smoke, ~70 s
  .venv/bin/python benchmarks/robustness.py --cells base,snr0.01,hinge --reuse
  make robustness ROBUST="--cells base,junk_protein"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (os.path.join(ROOT, "engine"), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

from gaussianem.io.rundir import RunDir  # noqa: E402
from realistic import RealisticSpec, simulate  # noqa: E402,F401 (RealisticSpec: cryodrgn_normalised uses it)
# the cells and the report live in their own modules; their names are re-exported here
from robustness_cells import (  # noqa: E402,F401
    BASE, CELLS, COLLAPSE_RATIO, CRYODRGN_CELLS, QUICK, THRESHOLDS, _spec_json, cell_spec)
from robustness_report import _f, markdown, save, verdict  # noqa: E402,F401


# ----------------------------------------------------------------------------- stages

def _simulator_sha() -> str:
    import hashlib
    from pathlib import Path       # the simulator: realistic.py and the two modules it imports
    files = ("realistic.py", "realistic_structures.py", "realistic_motion.py")
    return hashlib.sha1(b"".join(Path(HERE, f).read_bytes() for f in files)).hexdigest()[:12]


def simulate_cell(spec, simdir) -> dict:
    """The cell's data set; one already in ``simdir`` is kept when it was made from the same
    spec by the same simulator (realistic.py and its modules; deterministic given both)."""
    stamp, sha = os.path.join(simdir, "spec.json"), _simulator_sha()
    if os.path.exists(stamp) and os.path.exists(os.path.join(simdir, "ground_truth.npz")):
        with open(stamp) as f:
            old = json.load(f)
        if old.get("spec") == _spec_json(spec) and old.get("simulator_sha") == sha:
            return {**old, "reused": True}
    if os.path.exists(simdir):
        shutil.rmtree(simdir)
    out = simulate(spec, simdir)
    out["simulator_sha"] = sha
    with open(stamp + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(stamp + ".tmp", stamp)
    return out


def gaussianem_cmd():
    for d in (os.path.join(ROOT, ".venv", "bin"), os.path.dirname(sys.executable)):
        exe = os.path.join(d, "gaussianem")
        if os.path.exists(exe):
            return [exe]
    return [sys.executable, "-m", "gaussianem.cli.main"]


def train_cell(simdir, run, epochs, threads, timeout, extra=()) -> dict:
    if os.path.exists(run):
        shutil.rmtree(run)
    cmd = gaussianem_cmd() + ["train", os.path.join(simdir, "particles.star"), "--consensus",
                              os.path.join(simdir, "consensus.mrc"), "-o", run, "--epochs", str(epochs), *extra]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t = time.time()
    with open(run + ".log", "w") as log:
        try:
            p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
            code = p.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.time() - t
    with open(run + ".log", errors="replace") as f:
        tail = f.read()[-2500:]
    rd = RunDir(run)        # coarse to fine: the coarse stage's log, then the run's
    secs = [float(r["seconds"]) for path in (rd.coarse.log, rd.log) for r in rd.read_log(path)
            if r.get("kind") == "epoch" and "seconds" in r]
    return {"command": " ".join(cmd), "exit_code": code, "wall_s": wall, "epoch_seconds": secs,
            "output_tail": tail if code != 0 else tail[-600:], "omp_threads": threads or None}


def engine_state() -> dict:
    """The engine's git commit and, when engine/ has uncommitted changes, a hash of them
    (cells trained while the engine changes are not comparable)."""
    import hashlib

    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=60).stdout
    try:
        diff = git("diff", "HEAD", "--", "engine")
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "engine").split()
        h = hashlib.sha1(diff.encode())
        for f in sorted(untracked):
            with open(os.path.join(ROOT, f), "rb") as fh:
                h.update(f.encode() + fh.read())
        dirty = bool(diff or untracked)
        return {"commit": git("rev-parse", "HEAD").strip(), "dirty": dirty,
                "uncommitted_hash": h.hexdigest()[:12] if dirty else None}
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}


def health_status(run) -> dict:
    path = os.path.join(run, "health.json")
    if not os.path.exists(path):
        return {"status": "missing"}
    try:
        with open(path) as f:
            h = json.load(f)
    except (OSError, ValueError) as e:
        return {"status": f"unreadable ({e})"}
    out = {"status": str(h.get("status", "no status field"))}
    bad = [c for c in h.get("checks", []) if isinstance(c, dict) and c.get("status") not in (None, "healthy")]
    if bad:
        out["flagged"] = [{k: c.get(k) for k in ("name", "status", "message")} for c in bad]
    return out


def evaluate_cell(simdir, run) -> dict:
    from gaussianem.analysis import evaluate as ev
    from gaussianem.io.mrc import read_map
    from gaussianem.analysis.result import load_result
    truth = ev.load_truth(simdir)
    res = load_result(run)
    z = np.asarray(res.z, np.float64)
    good = ~truth["junk"].astype(bool)
    if len(z) != len(good):
        raise RuntimeError(f"{run} has {len(z)} latents for {len(good)} particles")
    mc = res.model_config
    split = bool(getattr(mc, "split", False))
    zc = z[:, :mc.zdim_conf] if split else z
    zp = z[:, mc.zdim_conf:] if split else z
    zg, motion = z[good], truth["motion"][good]
    m = {"zdim": int(z.shape[1]), "split": split, "epoch": int(getattr(res, "epoch", -1)),
         "n_good": int(good.sum()), "n_junk": int((~good).sum()),
         "motion_spearman_pc1": ev.motion_spearman(zc[good], motion),
         "motion_spearman_pc1_full_z": ev.motion_spearman(zg, motion),
         "motion_probe": ev.motion_probe(zg, motion)}
    if "motion2" in truth:
        m["motion2_probe"] = ev.motion_probe(zg, truth["motion2"][good])
    if bool(truth["has_composition"]):
        pres = ev.presence_accuracy(zp[good], truth["present"][good])
        m["presence_kmeans"], m["presence_probe"] = pres["kmeans"], pres["linear_probe"]
    if (~good).any():
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score
        from sklearn.preprocessing import StandardScaler
        m["junk_probe"] = float(cross_val_score(LogisticRegression(max_iter=1000), StandardScaler().fit_transform(z),
                                                (~good).astype(int), cv=5).mean())
    sub = {k: (v[good] if isinstance(v, np.ndarray) and v.shape[:1] == good.shape else v) for k, v in truth.items()}
    fscs = ev.per_conformation_fsc(zg, sub, lambda zz: res.volume(zz), res.grid.apix)
    m["per_conformation"] = fscs
    m["fsc_auc_mean"] = float(np.mean([r["fsc_auc"] for r in fscs])) if fscs else float("nan")
    m["fsc05_mean"] = float(np.mean([r["fsc05"] for r in fscs])) if fscs else float("nan")
    # collapse: the map at the median latent against the consensus map
    vol = np.asarray(res.volume(np.median(zg, axis=0).astype(np.float32)), np.float64)
    cons, _, _ = read_map(os.path.join(simdir, "consensus.mrc"))
    ratio = float(vol.std() / max(float(cons.std()), 1e-30))
    try:
        base_std = float(np.asarray(res.consensus_volume(), np.float64).std())
        ratio_base = float(vol.std() / max(base_std, 1e-30))
    except Exception:  # noqa: BLE001 (informative only)
        ratio_base = None
    m["median_map_std_over_consensus_std"] = ratio
    m["median_map_std_over_base_gaussians_std"] = ratio_base
    m["median_map_finite"] = bool(np.all(np.isfinite(vol)))
    m["collapse"] = bool(not m["median_map_finite"] or ratio < COLLAPSE_RATIO)
    m.update(arrival_metrics(os.path.dirname(run)))
    return m


def arrival_metrics(work) -> dict:
    """Issue 27's motion arrival (``model_landing.landing``: the true model at the motion's
    start moved by the plain ``generate --model`` to each level) for a cell folder with
    ``sim`` and ``run``; empty when the cell has no model to move. Where two domains move
    (issue 33) also ``generate --fit-domains`` from either end (``domain_fit.both_ends``)."""
    from model_landing import landing
    if not os.path.exists(os.path.join(work, "sim", "model.pdb")):
        return {}
    out = landing(work)
    m = {k: out[k] for k in ("arrival_first", "arrival_middle", "arrival_far_end", "arrival_mean") if k in out}
    with open(os.path.join(work, "sim", "spec.json")) as f:
        if json.load(f)["spec"].get("motion") == "two_hinges":
            from domain_fit import both_ends
            m["fit_domains"] = both_ends(work, os.path.join(work, "run"))
    return m


# ----------------------------------------------------------------------------- cryoDRGN

def cryodrgn_cell(a, spec, simdir, work) -> dict:
    """cryoDRGN on the same data (cryodrgn_runner), evaluated with the same metrics."""
    from cryodrgn_runner import cryodrgn_bin, evaluate_cryodrgn, parse_star_cryodrgn, train_cryodrgn
    from gaussianem.analysis import evaluate as ev
    ns = argparse.Namespace(cryodrgn_venv=a.cryodrgn_venv, box=spec.box, apix=spec.apix, threads=a.threads,
                            seed=0, epochs=a.epochs, cdrgn_dim=256, cdrgn_layers=None, device="cpu",
                            cdrgn_extra=[], n=spec.n, reuse=a.reuse)
    if not os.path.exists(cryodrgn_bin(ns)):
        return {"error": f"{cryodrgn_bin(ns)} not found: run bash benchmarks/setup_cryodrgn.sh"}
    truth = ev.load_truth(simdir)
    truth["box"] = spec.box
    parsed = parse_star_cryodrgn(ns, simdir, os.path.join(work, "cryodrgn_work"))
    tr = train_cryodrgn(ns, simdir, os.path.join(work, "cryodrgn_run"), parsed)
    m = evaluate_cryodrgn(ns, simdir, os.path.join(work, "cryodrgn_run"), truth, os.path.join(work, "cryodrgn_work"))
    return {"train": tr, "metrics": m}


# ----------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default=os.path.join(ROOT, "bench_out", "robustness"),
                   help="data sets and training runs (default bench_out/robustness)")
    p.add_argument("--cells", help="comma-separated cell names (default: the default matrix)")
    p.add_argument("--all", action="store_true", help="every cell, box256 and small_comp included")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--quick", action="store_true", help="smoke run: cells base and junk_noise, 800 particles, 3 epochs")
    p.add_argument("--epochs", type=int, help="training epochs, the same for all cells (default 12; --quick 3)")
    p.add_argument("-n", type=int, help="particles per box-64 cell (box >= 128 cells get 30%%; default: each cell's, "
                                        "2000 and 600)")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of the training processes (default 1; 0: leave it unset)")
    p.add_argument("--timeout", type=float, help="seconds one training may take (default: no limit)")
    p.add_argument("--reuse", action="store_true", help="skip cells done with the same spec and epochs (data sets "
                                                      "made from the same spec are always reused)")
    p.add_argument("--tag", help="results file tag (default cpu_e<epochs>, quick_e<epochs> with --quick)")
    p.add_argument("--train-args", default="",
                   help="extra training flags, e.g. \"--w-distance 0.01 --seed 1\" (a screen of a candidate default; "
                        "recorded in the results)")
    p.add_argument("--fresh", action="store_true",
                   help="start the tag's results file anew (default: cells run before under the tag are kept "
                        "and the cells run now replace theirs)")
    p.add_argument("--cryodrgn", action="store_true", help="also cryoDRGN on the base (SNR 0.1) and snr0.03 cells")
    p.add_argument("--cryodrgn-venv", default=os.path.join(ROOT, ".venv-cryodrgn"))
    a = p.parse_args(argv)
    if a.list:
        for name, (what, over, default) in CELLS.items():
            print(f"{name:13s} {'default' if default else 'extra  '}  {what}")
        return 0
    if a.cells:
        names = [c.strip() for c in a.cells.split(",") if c.strip()]
        unknown = [c for c in names if c not in CELLS]
        if unknown:
            p.error(f"unknown cells {unknown}; known: {', '.join(CELLS)}")
    elif a.quick:
        names = list(QUICK)
    else:
        names = [c for c, v in CELLS.items() if v[2] or a.all]
    a.epochs = a.epochs or (3 if a.quick else 12)
    train_extra = shlex.split(a.train_args)
    n_override = a.n or (800 if a.quick else None)
    tag = a.tag or f"{'quick' if a.quick else 'cpu'}_e{a.epochs}"
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, ".gitignore"), "w") as f:
        f.write("*\n")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out_json = os.path.join(HERE, "results", f"robustness_{tag}.json")
    out_md = os.path.join(HERE, "results", f"robustness_{tag}.md")
    res = {"benchmark": "robustness matrix", "tag": tag, "cells": {}}
    if os.path.exists(out_json) and not a.fresh:          # cells run before under this tag stay
        with open(out_json) as f:
            res = json.load(f)
    res.update(created=time.strftime("%Y-%m-%dT%H:%M:%S"), host=socket.gethostname(), cpus=os.cpu_count(),
               epochs=a.epochs, threads=a.threads, thresholds=THRESHOLDS, collapse_ratio=COLLAPSE_RATIO,
               training_command="gaussianem train DATA/particles.star --consensus DATA/consensus.mrc -o RUN "
                                f"--epochs {a.epochs}" + (f" {a.train_args}" if train_extra else ""))
    t_all = time.time()
    for name in names:
        spec = cell_spec(name, n_override)
        old = res["cells"].get(name)
        if (a.reuse and old and old.get("done") and old.get("spec") == _spec_json(spec)
                and old.get("epochs") == a.epochs and old.get("train_args", "") == a.train_args and (not a.cryodrgn or name not in CRYODRGN_CELLS
                                                       or old.get("cryodrgn"))):
            print(f"== {name}: done before, kept", flush=True)
            continue
        cell = {"what": CELLS[name][0], "spec": _spec_json(spec), "epochs": a.epochs, "errors": {},
                "train_args": a.train_args,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "engine": engine_state()}
        res["cells"][name] = cell
        work = os.path.join(a.outdir, name)
        simdir, run = os.path.join(work, "sim"), os.path.join(work, "run")
        t_cell = time.time()
        print(f"== {name}: {cell['what']}", flush=True)
        for stage, fn in (("simulate", lambda: simulate_cell(spec, simdir)),
                          ("train", lambda: train_cell(simdir, run, a.epochs, a.threads, a.timeout, train_extra)),
                          ("evaluate", lambda: evaluate_cell(simdir, run))):
            if stage == "evaluate" and (cell.get("train") or {}).get("exit_code") != 0:
                break
            t = time.time()
            try:
                out = fn()
            except Exception as e:  # noqa: BLE001 (a failure is a result)
                cell["errors"][stage] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
                print(f"   {stage}: FAILED: {type(e).__name__}: {e}", flush=True)
                break
            cell[{"simulate": "simulation", "train": "train", "evaluate": "metrics"}[stage]] = out
            extra = f" (exit code {out['exit_code']})" if stage == "train" else ""
            print(f"   {stage}: {time.time() - t:.0f} s{extra}", flush=True)
        cell["health"] = health_status(run)
        if a.cryodrgn and name in CRYODRGN_CELLS and "simulation" in cell:
            try:
                cell["cryodrgn"] = cryodrgn_cell(a, spec, simdir, work)
            except Exception as e:  # noqa: BLE001
                cell["cryodrgn"] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        cell["verdict"] = verdict(cell)
        cell["wall_s"] = time.time() - t_cell
        cell["done"] = True
        m = cell.get("metrics") or {}
        print(f"   {cell['verdict']}: motion probe {_f(m.get('motion_probe'))}, PC1 {_f(m.get('motion_spearman_pc1'))}, "
              f"presence 2-means {_f(m.get('presence_kmeans'))}, FSC AUC {_f(m.get('fsc_auc_mean'))}, "
              f"health {cell['health']['status']}, {cell['wall_s']:.0f} s", flush=True)
        res["table_markdown"] = markdown(res)
        save(res, out_json)
    res["last_run_wall_s"] = time.time() - t_all
    res["table_markdown"] = markdown(res)
    save(res, out_json)
    head = (f"# Robustness matrix ({tag})\n\n{res['training_command']}; {a.epochs} epochs, OMP_NUM_THREADS="
            f"{a.threads or 'unset'}, {res['host']} ({res['cpus']} CPUs), {res['created']}.\n\n")
    with open(out_md + ".tmp", "w") as f:
        f.write(head + res["table_markdown"] + "\n")
    os.replace(out_md + ".tmp", out_md)
    print()
    print(res["table_markdown"])
    print(f"\nwrote {out_json} and {out_md} ({res['last_run_wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
