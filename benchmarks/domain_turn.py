"""How far does each moving domain of a displaced model turn? (issue 27, session 18)

  PYTHONPATH=engine .venv/bin/python benchmarks/domain_turn.py CELL [RUN]

On a hinge cell of the robustness matrix (``CELL/sim``; the run in ``CELL/run`` unless RUN
is given), the model at motion 0 displaced with ``generate --model``'s interpolator to the
median latent of each motion level's complete particles: for each moving domain (chain
A's C-terminal third; chain B where it moves too) the rotation angle of its least-squares
rigid motion, decoded against true, the cosine between the two rotation axes, the motion
arrival, the arrival of the domain's rigid part alone and the RMS of the rest; then, at
the far level, the decoded share of each atom's true displacement in six bins of that
displacement. docs/validation.md, "The whole motion, session 18".
"""

import json
import os
import sys

import numpy as np
from scipy.spatial.transform import Rotation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_landing import rms
from realistic import Motion, RealisticSpec
from gaussianem.analysis import evaluate as ev
from gaussianem.analysis.reference import model_latent
from gaussianem.analysis.result import load_result
from gaussianem.io.models import read_model
from gaussianem.model.rigid_groups import kabsch


def main():
    cell = sys.argv[1]
    run = sys.argv[2] if len(sys.argv) > 2 else os.path.join(cell, "run")
    spec = RealisticSpec(**json.load(open(f"{cell}/sim/spec.json"))["spec"])
    model = read_model(f"{cell}/sim/model.pdb")
    motion = Motion(model, spec)
    res, truth = load_result(run), ev.load_truth(f"{cell}/sim")
    heavy = model.elements != "H"
    x0 = motion.coords(0.0)
    fitted = model.with_coords(x0)
    good = ~truth["junk"].astype(bool) & truth["present"].astype(bool)
    t = truth["motion"]
    domains = [("chain A's third", motion.mask & heavy)]
    if getattr(motion, "mask2", None) is not None:
        domains.append(("chain B", motion.mask2 & heavy))
    interp = res.interpolator(x0, reference=model_latent(res, fitted).z, residues=fitted.sequence)
    for level in truth["eval_motion"][1:]:
        z = np.median(res.z[good & (np.abs(t - level) <= 0.0626)], axis=0)
        moved = res.displace_model(fitted, z, interpolator=interp).coords
        true = motion.coords(float(level))
        line = f"level {level:.2f}"
        for name, mk in domains:
            r_true, _, _ = kabsch(x0[mk], true[mk])
            r_dec, pc, qc = kabsch(x0[mk], moved[mk])
            v_true, v_dec = Rotation.from_matrix(r_true).as_rotvec(), Rotation.from_matrix(r_dec).as_rotvec()
            rigid = (x0[mk] - pc) @ r_dec.T + qc
            base = rms(x0[mk] - true[mk])
            if base < 1e-6:                      # this domain has not started to move (a staggered motion)
                line += f" | {name}: still, decoded moves it {rms(moved[mk] - x0[mk]):.2f} A"
                continue
            line += (f" | {name}: turns {np.degrees(np.linalg.norm(v_dec)):.1f} of {np.degrees(np.linalg.norm(v_true)):.1f}"
                     f" deg, axis cos {v_true @ v_dec / (np.linalg.norm(v_true) * np.linalg.norm(v_dec) + 1e-12):.3f},"
                     f" arrival {1 - rms(moved[mk] - true[mk]) / base:.3f}, rigid part {1 - rms(rigid - true[mk]) / base:.3f},"
                     f" rest {rms(moved[mk] - rigid):.2f} A")
        print(line)
    d_true, d_dec = true - x0, moved - x0
    share = (d_dec * d_true).sum(1) / np.maximum((d_true ** 2).sum(1), 1e-9)
    size = np.linalg.norm(d_true, axis=1)
    atoms = np.flatnonzero(domains[0][1])
    print(f"far level, {domains[0][0]}: decoded share of each atom's true displacement")
    for part in np.array_split(atoms[np.argsort(size[atoms])], 6):
        print(f"  true displacement {size[part].mean():5.2f} A: share {share[part].mean():.3f}")


if __name__ == "__main__":
    main()
