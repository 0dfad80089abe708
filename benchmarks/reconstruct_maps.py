"""Deformable reconstruction benchmarks (``gaussianem reconstruct``): accuracy and speed.

``truth CELL_DIR ...``: on cells of the robustness matrix (``CELL/sim`` and ``CELL/run``,
e.g. ``bench_out/robustness_final/base``), per conformation (the median latent of the
non-junk, complete particles of each true motion level, as
``analysis.evaluate.per_conformation_fsc``) the FSC AUC, FSC=0.5 resolution and
correlation against ``sim/truth/state_KK.mrc`` of: maps from the Gaussians, the deformed
consensus, the deformable reconstruction of every non-junk complete particle into that
state, the rigid reconstruction of the same particles (both also times the reconstruction's
soft mask, ``MAP_masked.mrc``, as one looks at a map) and the homogeneous consensus map;
plus the reconstruction's own gold-standard resolution (masked FSC = 0.143).

``speed``: particles/s and peak RSS of ``gaussianem reconstruct`` (each in its own
process) on a set simulated here from the built-in test protein (box 128 at 1.5 A and
box 256 at 0.75 A, trained one epoch at box 64), for several particle counts (memory
should not grow with them) and boxes.

  .venv/bin/python benchmarks/reconstruct_maps.py truth bench_out/robustness_final/base -o benchmarks/results/reconstruct_truth_cpu.json
  .venv/bin/python benchmarks/reconstruct_maps.py speed --workdir bench_out/reconstruct -o benchmarks/results/reconstruct_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import child_env, machine_info, run_measured  # noqa: E402

PY = sys.executable


def truth_table(cell: str) -> dict:
    from gaussianem.analysis import evaluate as ev
    from gaussianem.analysis.reconstruct import reconstruct
    from gaussianem.analysis.result import load_result
    from gaussianem.io.mrc import read_map
    from gaussianem.physics import fsc as fsc_mod
    truth, res = ev.load_truth(f"{cell}/sim"), load_result(f"{cell}/run")
    junk = truth.get("junk")
    good = np.ones(len(res.z), bool) if junk is None else ~np.asarray(junk).astype(bool)
    present = truth["present"].astype(bool)
    particles = np.flatnonzero(good & present)
    cons = read_map(f"{cell}/sim/consensus.mrc")[0]
    motion, levels = truth["motion"], truth["eval_motion"]
    moved_at = _moving_atoms(cell, res)
    half = 0.5 / max(len(levels) - 1, 1)
    rows = []
    for k, path in enumerate(truth["truth_maps"]):
        sel = good & present & (np.abs(motion - levels[k]) <= half * 0.5 + 1e-6)
        if not sel.any():
            continue
        z = np.median(res.z[sel], axis=0)
        t = time.perf_counter()
        rec = reconstruct(res, particles, state=z)
        secs = time.perf_counter() - t
        ref = read_map(path)[0]
        maps = {"gaussians": res.volume(z), "deformed consensus": res.volume(z, kind="deformed"),
                "reconstruction": rec.maps["deformed"], "rigid reconstruction": rec.maps["rigid"],
                "reconstruction masked": rec.maps["deformed"] * rec.mask,
                "rigid reconstruction masked": rec.maps["rigid"] * rec.mask, "consensus": cons}
        row = {"motion": float(levels[k]), "n_level": int(sel.sum()), "n_reconstructed": len(particles),
               "seconds": round(secs, 1), "gold_standard_0.143": round(rec.resolution(), 2),
               "rigid_gold_standard_0.143": round(rec.resolution("rigid"), 2)}
        for name, m in maps.items():
            f, v = fsc_mod.fsc(m, ref, res.grid.apix)
            row[name] = {"fsc_auc": round(fsc_mod.auc(v), 4), "fsc05": round(fsc_mod.resolution_at(f, v, 0.5), 2),
                         "corr": round(float(np.corrcoef(m.ravel(), ref.ravel())[0, 1]), 4)}
        row.update(moving_region(res, rec, maps, ref, particles, z, moved_at(float(levels[k]))))
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = tuple(rows[0]) if rows else ()
    names = [n for n in names if isinstance(rows[0][n], dict) and n != "moving_region_fsc_auc"]
    mean = {n: {m: round(float(np.mean([r[n][m] for r in rows])), 4) for m in ("fsc_auc", "fsc05", "corr")}
            for n in names}
    moving = {n: round(float(np.mean([r["moving_region_fsc_auc"][n] for r in rows])), 4)
              for n in (rows[0]["moving_region_fsc_auc"] if rows else ())}
    return {"cell": cell, "rows": rows, "mean": mean, "moving_region_mean": moving}


def _moving_atoms(cell: str, res):
    """level -> the moving part's atoms (engine frame) in the true frame of that level."""
    from model_landing import moving_atoms
    from realistic import Motion, RealisticSpec
    from gaussianem.io.models import read_model
    with open(f"{cell}/sim/spec.json") as f:
        spec = RealisticSpec(**json.load(f)["spec"])
    motion = Motion(read_model(f"{cell}/sim/model.pdb"), spec)
    moving = moving_atoms(spec, motion)
    return lambda level: res.grid.to_engine(motion.coords(level)[moving])


def moving_region(res, rec, maps: dict, ref, particles, z, atoms, width: float = 3.0) -> dict:
    """Issue 27 item 2: FSC AUC against the true map within a soft mask over the moving
    atoms (each a unit Gaussian of ``width`` A, over a tenth of the peak), for the bent and
    rigid reconstructions of all particles, the deformed consensus and the rigid
    reconstruction of the fifth of the particles nearest the state's latent."""
    import torch
    from gaussianem.analysis.reconstruct import reconstruct
    from gaussianem.physics.fsc import soft_mask
    from gaussianem.physics import fsc as fsc_mod
    g = res.grid
    mask = soft_mask(torch.from_numpy(atoms).float(), torch.full((len(atoms),), width), g)
    d = np.linalg.norm(res.z[particles] - z, axis=1)
    nearest = particles[np.argsort(d)[:max(len(particles) // 5, 10)]]
    near = reconstruct(res, nearest, state=z)
    cols = {"reconstruction": rec.maps["deformed"], "rigid reconstruction": rec.maps["rigid"],
            "deformed consensus": maps["deformed consensus"], "rigid, nearest fifth": near.maps["rigid"]}
    out = {}
    for name, vol in cols.items():
        f, v = fsc_mod.fsc(vol * mask, ref * mask, g.apix)
        out[name] = round(fsc_mod.auc(v), 4)
    return {"moving_region_fsc_auc": out, "n_nearest": len(nearest)}


def speed(workdir: str, threads: int) -> dict:
    os.makedirs(workdir, exist_ok=True)
    env = child_env(threads, engine=True)
    gem = [PY, "-m", "gaussianem.cli.main"]
    out = {"runs": []}
    for box, apix, n, counts in ((128, 1.5, 400, (50, 200, 400)), (256, 0.75, 60, (10, 40))):
        sim, run = os.path.join(workdir, f"sim{box}"), os.path.join(workdir, f"run{box}")
        if not os.path.exists(os.path.join(sim, "particles.star")):
            run_measured(gem + ["simulate", "--test-model", "-o", sim, "-n", str(n), "--box", str(box),
                                "--apix", str(apix), "--snr", "0.1"], os.path.join(workdir, f"sim{box}.log"), env)
        if not os.path.exists(os.path.join(run, "latents.npz")):
            run_measured(gem + ["train", os.path.join(sim, "particles.star"), "--consensus",
                                os.path.join(sim, "consensus.mrc"), "-o", run, "--epochs", "1",
                                "--downsample", "64"], os.path.join(workdir, f"train{box}.log"), env)
        for rbox in sorted({64, box}):
            for count in counts:
                sel = os.path.join(workdir, f"first{count}.txt")
                np.savetxt(sel, np.arange(count), fmt="%d")
                target = os.path.join(workdir, f"rec{box}_{rbox}_{count}.mrc")
                m = run_measured(gem + ["reconstruct", run, "--select", sel, "--box", str(rbox), "-o", target,
                                        "--force", "--progress", "none"],
                                 os.path.join(workdir, f"rec{box}_{rbox}_{count}.log"), env)
                with open(target[:-4] + "_fsc.json") as f:
                    s = json.load(f)
                row = {"particle_box": box, "box": rbox, "particles": count, "seconds": s["seconds"],
                       "particles_per_s": s["particles_per_s"], "peak_rss_mb": round(m["peak_rss_mb"], 1),
                       "process_wall_s": round(m["wall_s"], 1)}
                out["runs"].append(row)
                print(json.dumps(row), flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["truth", "speed"])
    p.add_argument("cells", nargs="*", help="truth: robustness cell folders (CELL/sim, CELL/run)")
    p.add_argument("--workdir", default="bench_out/reconstruct")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    res = {"machine": machine_info("cpu")}
    if a.what == "truth":
        res["cells"] = [truth_table(c) for c in a.cells]
    else:
        res.update(speed(a.workdir, a.threads))
    from gaussianem.io.atomic import write_json
    write_json(a.output, res)


if __name__ == "__main__":
    main()
