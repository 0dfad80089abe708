"""`make demo`'s own check: does the demo's result meet its targets against the simulated
truth? Prints one line per target, PASS or FAILED, writes RUN/demo_check.json and exits
non-zero when a target is not met (tools/demo.sh then stops with a FAILED line).

    .venv/bin/python tools/demo_check.py RUN SIM

Targets (as benchmarks/validate.py's):

* motion: the principal component of the conformational latent (of all of z when it is
  not split) that follows the true motion best, |Spearman| >= 0.9. Which component that
  is depends on how much else the latent carries (on the demo's protein z_conf also
  carries some of the absent domain, so the motion need not be PC1); the check names it,
  and the demo's pictures are taken along it. The cross-validated linear read-out of the
  motion from all of z (any direction) is reported beside it.
* presence: the absent domain, read from the compositional latent by a cross-validated
  linear probe, accuracy >= 0.95.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

TARGETS = {"motion": 0.9, "presence": 0.95}


def check(run: str, sim: str) -> dict:
    from scipy.stats import spearmanr

    from gaussianem.analysis import evaluate as ev
    from gaussianem.analysis.result import load_result
    r = load_result(run)
    truth = ev.load_truth(sim)
    mc = r.model_config
    part = "conf" if mc.split else "all"
    p = r.pca(part)
    per_pc = [float(abs(spearmanr(p.scores[:, k], truth["motion"]).correlation)) for k in range(len(p.sd))]
    best = int(np.argmax(per_pc))
    z_comp = r.z[:, mc.zdim_conf:] if mc.split else r.z
    out = {
        "part": part,
        "motion_pc": best + 1,
        "motion_spearman": per_pc[best],
        "motion_spearman_per_pc": per_pc,
        "explained_variance_per_pc": [float(v) for v in p.explained],
        "motion_readout": ev.motion_probe(r.z, truth["motion"]),
        "presence_linear_probe": ev.presence_accuracy(z_comp, truth["present"])["linear_probe"],
    }
    out["targets"] = {"motion": out["motion_spearman"] >= TARGETS["motion"],
                      "presence": out["presence_linear_probe"] >= TARGETS["presence"]}
    out["passed"] = all(out["targets"].values())
    return out


def report(c: dict) -> list[str]:
    name = f"{c['part']} PC{c['motion_pc']}" if c["part"] != "all" else f"PC{c['motion_pc']}"
    per_pc = ", ".join(f"PC{i + 1} {v:.3f} ({e:.0%} of the variance)" for i, (v, e) in
                       enumerate(zip(c["motion_spearman_per_pc"], c["explained_variance_per_pc"])))
    mark = {True: "PASS  ", False: "FAILED"}
    return [f"{mark[c['targets']['motion']]} motion: |Spearman| of {name} with the true motion "
            f"{c['motion_spearman']:.3f} (target >= {TARGETS['motion']}); per component: {per_pc}; "
            f"linear read-out from all of z {c['motion_readout']:.3f}",
            f"{mark[c['targets']['presence']]} presence: linear probe on the compositional latent "
            f"{c['presence_linear_probe']:.3f} (target >= {TARGETS['presence']})"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run, sim = argv
    c = check(run, sim)
    for line in report(c):
        print(line)
    with open(os.path.join(run, "demo_check.json"), "w") as f:
        json.dump(c, f, indent=2)
    if not c["passed"]:
        failed = ", ".join(k for k, ok in c["targets"].items() if not ok)
        print(f"FAILED: the demo's result misses its target(s): {failed} (details above and in "
              f"{os.path.join(run, 'demo_check.json')})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
