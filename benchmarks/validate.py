"""Validation against simulated ground truth (not a timed test).

Either evaluates an existing run (``--result RUN --sim SIM``) or makes one: simulates
the default dataset (built-in two-domain protein: hinge motion + an absent chain),
trains on it and evaluates. Reports |Spearman| between latent PC1 and the true motion,
presence-flag accuracy from the latents (cross-validated linear probe and unsupervised
2-means) and per-conformation FSC of generated vs true volumes.

  .venv/bin/python benchmarks/validate.py --outdir validate_out            # full run
  .venv/bin/python benchmarks/validate.py --result RUN --sim SIM -o v.json  # evaluate only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine"))

from gaussianem.analysis.evaluate import evaluate_result  # noqa: E402
from gaussianem.analysis.result import load_result  # noqa: E402

TARGETS = {"motion_spearman": 0.9, "presence_linear_probe": 0.95}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--result")
    p.add_argument("--sim")
    p.add_argument("--outdir", default="validate_out")
    p.add_argument("-n", type=int, default=6000)
    p.add_argument("--box", type=int, default=48)
    p.add_argument("--apix", type=float, default=2.5)
    p.add_argument("--snr", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--device", default="auto")
    p.add_argument("-o", "--output")
    a = p.parse_args(argv)
    timing = {}
    if a.result is None:
        from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
        from gaussianem.io.models import write_model
        from gaussianem.sim.testprotein import build_test_model
        from gaussianem.train.config import TrainConfig
        from gaussianem.train.loop import train
        from gaussianem.progress import Progress
        sim = os.path.join(a.outdir, "sim")
        os.makedirs(sim, exist_ok=True)
        write_model(os.path.join(sim, "input_model.pdb"), build_test_model())
        t = time.time()
        simulate_from_model(os.path.join(sim, "input_model.pdb"), sim,
                            SimulationSpec(n=a.n, box=a.box, apix=a.apix, snr=a.snr))
        timing["simulate_s"] = time.time() - t
        run = os.path.join(a.outdir, "run")
        t = time.time()
        train(TrainConfig(particles=os.path.join(sim, "particles.star"), consensus=os.path.join(sim, "consensus.mrc"),
                          outdir=run, epochs=a.epochs, zdim_conf=2, zdim_comp=2, loss="l2", device=a.device),
              progress=Progress("bar"))
        timing["train_s"] = time.time() - t
        a.result, a.sim = run, sim
    res = load_result(a.result)
    m = evaluate_result(res, a.sim)
    m.update(timing)
    m["epochs"] = res.epoch
    m["n_particles"] = res.n_particles
    print(f"result: {a.result}  ({m['n_particles']} particles, {m['epochs']} epochs)")
    print(f"  |Spearman| latent PC1 vs true motion : {m['motion_spearman']:.3f}  (target >= 0.9)")
    print(f"  motion, cross-validated linear probe : {m['motion_linear_probe']:.3f}  (any direction of z)")
    print(f"  presence accuracy, linear probe      : {m['presence_linear_probe']:.3f}  (target >= 0.95)")
    print(f"  presence accuracy, unsupervised 2-means: {m['presence_kmeans']:.3f}")
    print(f"  per-conformation FSC: mean AUC {m['fsc_auc_mean']:.3f}, mean FSC=0.5 at {m['fsc05_mean']:.2f} A")
    for r in m["per_conformation"]:
        print(f"    motion {r['motion']:.2f}: {r['n']:5d} particles, AUC {r['fsc_auc']:.3f}, "
              f"FSC=0.5 {r['fsc05']:.2f} A, corr {r['corr']:.3f}")
    m["targets_met"] = {k: bool(m[k] >= v) for k, v in TARGETS.items()}
    if a.output:
        with open(a.output, "w") as f:
            json.dump(m, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
