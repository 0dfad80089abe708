"""The consensus check's statistic on right and wrong consensus maps (issue 29, item 3).

For simulated sets (the built-in test protein, ``gaussianem simulate --test-model``, and
the robustness matrix's 1a28 cell, ``benchmarks/realistic.py``) at SNR 0.1 and 0.01,
measures :func:`gaussianem.model.consensus_check.consensus_match` for the right consensus
and for wrong ones: mirrored along z and along x (the wrong hand), turned 90 degrees (two
axes), a featureless blob of the same mass (a sphere of the map's radius of gyration,
smoothed), another protein's map (19hc, realistic sets only), and the map at the wrong
pixel size (stretched by 1.2). Writes ``benchmarks/results/consensus_check_cpu.json``.

  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/consensus_check.py -o bench_out/consensus_check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def blob_like(vol: np.ndarray, apix: float) -> np.ndarray:
    """A smooth sphere of the map's mass, centred, of radius sqrt(5/3) x its radius of gyration."""
    d = vol.shape[0]
    c = np.arange(d) - d // 2
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    r2 = (zz ** 2 + yy ** 2 + xx ** 2).astype(np.float64)
    w = np.clip(vol, 0, None).astype(np.float64)
    rg = np.sqrt((w * r2).sum() / w.sum())
    radius = np.sqrt(5 / 3) * rg
    sphere = 1 / (1 + np.exp((np.sqrt(r2) - radius) / 1.0))
    from scipy.ndimage import gaussian_filter
    sphere = gaussian_filter(sphere, 6.0 / apix)
    return (sphere * w.sum() / sphere.sum()).astype(np.float32)


def stretched(vol: np.ndarray, factor: float) -> np.ndarray:
    """The map magnified by ``factor`` about its centre voxel (a wrong pixel size)."""
    from scipy.ndimage import affine_transform
    d = vol.shape[0]
    c = np.full(3, d // 2, np.float64)
    return affine_transform(vol, np.eye(3) / factor, offset=c - c / factor, order=1).astype(np.float32)


def wrong_maps(vol, apix, other=None) -> dict:
    out = {"right": vol, "mirror_z": np.roll(np.flip(vol, 0), 1, 0), "mirror_x": np.roll(np.flip(vol, 2), 1, 2),
           "rot90_z": np.rot90(vol, 1, axes=(1, 2)), "rot90_x": np.rot90(vol, 1, axes=(0, 1)),
           "blob": blob_like(vol, apix), "apix_x1.2": stretched(vol, 1.2), "apix_x0.9": stretched(vol, 1 / 1.1)}
    from gaussianem.model.consensus_check import _lowpass
    for res in (10, 15, 20):                      # right but blurred: an early refinement's map
        out[f"right_lowpass{res}"] = _lowpass(vol, apix, res)
    if other is not None:
        out["other_protein"] = other
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def test_model_set(folder, snr, n, seed):
    from gaussianem.io.models import write_model
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.sim.testprotein import build_test_model
    if not os.path.exists(os.path.join(folder, "particles.star")):
        os.makedirs(folder, exist_ok=True)
        write_model(os.path.join(folder, "input_model.pdb"), build_test_model())
        simulate_from_model(os.path.join(folder, "input_model.pdb"), folder,
                            SimulationSpec(n=n, box=48, apix=2.5, snr=snr, seed=seed))
    return None


def realistic_set(folder, snr, n, seed, **errors):
    from realistic import RealisticSpec, simulate
    spec = RealisticSpec(structure="1a28.pdb.gz", n=n, box=64, apix=2.0, snr=snr, motion="mode", absent="B",
                         absent_fraction=0.3, rmsd_range=4.0, image_scale=37.5, image_offset=1200.0,
                         consensus_scale=0.05, seed=seed, **errors)
    if not os.path.exists(os.path.join(folder, "particles.star")):
        simulate(spec, folder)
    other = os.path.join(folder, "other")
    if not os.path.exists(os.path.join(other, "consensus.mrc")):    # 19hc at the same box: another map
        simulate(RealisticSpec(**{**spec.__dict__, "structure": "19hc.pdb.gz", "n": 64, "snr": None}), other)
    from gaussianem.io.mrc import read_map
    return read_map(os.path.join(other, "consensus.mrc"))[0]


def pose_errors(folder, snr, n, seed):
    return realistic_set(folder, snr, n, seed, pose_error_deg=3.0, shift_error_px=1.0)


def large_pose_errors(folder, snr, n, seed):
    return realistic_set(folder, snr, n, seed, pose_error_deg=6.0, shift_error_px=2.0)


SETS = {"test_model": test_model_set, "realistic_1a28": realistic_set, "realistic_1a28_pose_err": pose_errors,
        "realistic_1a28_pose_err6": large_pose_errors}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--outdir", default=os.path.join(os.path.dirname(HERE), "bench_out", "consensus_check"))
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--sets", help="comma-separated data sets (default: all)")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from gaussianem.io.mrc import read_map
    from gaussianem.io.particles import load_particles
    from gaussianem.model.consensus_check import Z_FLOOR, Z_MIN, consensus_match
    results = []
    for seed in range(a.seeds):
        for kind, make in SETS.items():
            if a.sets and kind not in a.sets.split(","):
                continue
            for snr in (0.1, 0.01):
                folder = os.path.join(a.outdir, f"{kind}_snr{snr}_seed{seed}")
                t = time.time()
                other = make(folder, snr, a.n, seed)
                sim_s = time.time() - t
                data = load_particles(os.path.join(folder, "particles.star"))
                vol, apix, _ = read_map(os.path.join(folder, "consensus.mrc"))
                for name, v in wrong_maps(vol, apix, other).items():
                    t = time.time()
                    m = consensus_match(v, apix, data, seed=seed)
                    row = {"set": kind, "snr": snr, "seed": seed, "map": name, **m.as_dict(),
                           "problems": m.problems(), "seconds": time.time() - t, "simulate_s": sim_s}
                    results.append(row)
                    print(f"{kind:23s} snr {snr:<5g} seed {seed} {name:14s} corr {m.correlation:.4f} "
                          f"z_hand {m.z_hand:7.1f} z_mirror {m.z_mirror:7.1f} z_lowpass {m.z_lowpass:7.1f} z_larger {m.z_larger:7.1f} "
                          f"z_smaller {m.z_smaller:7.1f} corr {' '.join(f'{c:.3f}' for c in m.controls)} "
                          f"{row['seconds']:.1f} s "
                          f"{'FLAGGED' if m.problems() else 'passes'}", flush=True)
    out = os.path.join(HERE, "results", "consensus_check_cpu.json")
    head = {"benchmark": "consensus check", "z_min": Z_MIN, "z_floor": Z_FLOOR, "particles": a.n,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(out, "w") as f:                     # one row per line
        f.write(json.dumps(head)[:-1] + ', "results": [\n' + ",\n".join(json.dumps(r) for r in results) + "\n]}\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
