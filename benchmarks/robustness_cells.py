"""The robustness matrix's cells: the base data set, the one-axis changes, and the pass marks.

``benchmarks/robustness.py``'s tables (re-exported there): ``BASE`` (the base cell's
``RealisticSpec`` fields), ``CELLS`` (name: what changed, overrides of BASE, whether the
default matrix runs it), ``QUICK`` (the smoke run's cells), the verdict's ``THRESHOLDS`` and
``COLLAPSE_RATIO``, the cells cryoDRGN is run on, and a cell's spec (``cell_spec``) and its
JSON form as results record it (``_spec_json``).
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (os.path.join(ROOT, "engine"), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from realistic import RealisticSpec  # noqa: E402

THRESHOLDS = {"motion_probe": 0.8, "presence_kmeans": 0.95}
COLLAPSE_RATIO = 1e-3
CRYODRGN_CELLS = ("base", "snr0.03")          # the SNR 0.1 and 0.03 cells

BASE = dict(structure="1a28.pdb.gz", n=2000, box=64, apix=2.0, snr=0.1, motion="mode", absent="B",
            absent_fraction=0.3, rmsd_range=4.0, image_scale=37.5, image_offset=1200.0, consensus_scale=0.05)

# name: (what changed, overrides of BASE, in the default matrix)
CELLS = {
    "base": ("1a28, ANM mode 4 A, chain B absent 30%, SNR 0.1, box 64 @ 2 A, arbitrary units", {}, True),
    "snr1": ("SNR 1", {"snr": 1.0}, True),
    "snr0.03": ("SNR 0.03", {"snr": 0.03}, True),
    "snr0.01": ("SNR 0.01", {"snr": 0.01}, True),
    "apix0.8": ("0.8 A/px (box 128, 600 particles: the model needs 112 px)", {"apix": 0.8, "box": 128, "n": 600}, True),
    "apix2.5": ("2.5 A/px", {"apix": 2.5}, True),
    "box128": ("box 128 @ 1 A (600 particles)", {"box": 128, "apix": 1.0, "n": 600}, True),
    "box256": ("box 256 @ 0.5 A, trained at the default downsample 128 (1000 particles)",
               {"box": 256, "apix": 0.5, "n": 1000, "states": 24}, False),
    "hinge": ("hinge: chain A's C-terminal third turns 30 deg", {"motion": "hinge"}, True),
    "two_motions": ("two ANM modes at once (each 4 A)", {"motion": "two_modes"}, True),
    "two_hinges": ("two domains at once: chain A's C-terminal third and chain B (absent in 30%) each turn "
                   "30 deg about their interface (moving atoms 11.8 A end to end)",
                   {"motion": "two_hinges", "hinge2_angle": 30.0}, True),
    "two_hinges_19hc": ("19hc (not tuned on), two domains at once: chain A's C-terminal third and chain B "
                        "(absent in 30%) each turn 40 deg (12.8 A end to end)",
                        {"structure": "19hc.pdb.gz", "motion": "two_hinges", "hinge_angle": 40.0,
                         "hinge2_angle": 40.0}, True),
    "two_hinges_staggered": ("19hc (not tuned on), two domains one after the other: chain A's C-terminal third "
                             "turns 40 deg over the first 60% of the motion, chain B (absent in 30%) 40 deg over "
                             "the last 60% (as a kinase's lid closes before its NMP domain)",
                             {"structure": "19hc.pdb.gz", "motion": "two_hinges", "hinge_angle": 40.0,
                              "hinge2_angle": 40.0, "hinge_stagger": 0.4}, True),
    "scale20": ("per-particle scale U(0.8, 1.2)", {"scale_jitter": 0.2}, True),
    "pose_err": ("star poses off by 3 deg RMS and 1 px RMS", {"pose_error_deg": 3.0, "shift_error_px": 1.0}, True),
    "rot_err": ("star rotations off by 3 deg RMS (shifts exact)", {"pose_error_deg": 3.0}, False),
    "shift_err": ("star origins off by 1 px RMS (rotations exact)", {"shift_error_px": 1.0}, False),
    "defocus_err": ("star defocus off by U(-300, 300) A", {"defocus_error": 300.0}, True),
    "junk_noise": ("10% junk: pure noise images", {"junk_fraction": 0.1, "junk_kind": "noise"}, True),
    "junk_protein": ("10% junk: another protein (19hc)", {"junk_fraction": 0.1, "junk_kind": "protein",
                                                          "junk_structure": "19hc.pdb.gz"}, True),
    "struct_1hvr": ("1hvr (HIV protease, 2 x 99 res), its softest mode, chain B absent",
                    {"structure": "1hvr.pdb"}, True),
    "small_comp": ("4E43 (protease + 6-residue peptide), peptide (chain C, 3% of mass) absent",
                   {"structure": "4E43.pdb", "absent": "C"}, False),
    # the CryoBench regime (issue 32): SNR 0.01-0.02 with tens of thousands of particles; off by
    # default (about ten times a 2,000-particle cell: 20-40 minutes each on one CPU thread)
    "snr0.01_20k": ("CryoBench regime: SNR 0.01, 20,000 particles", {"snr": 0.01, "n": 20000}, False),
    "snr0.02_20k": ("CryoBench regime: SNR 0.02, 20,000 particles", {"snr": 0.02, "n": 20000}, False),
    "snr0.01_20k_19hc": ("CryoBench regime on 19hc (not tuned on): two domains at once (40 deg each), SNR 0.01, "
                         "20,000 particles",
                         {"structure": "19hc.pdb.gz", "motion": "two_hinges", "hinge_angle": 40.0,
                          "hinge2_angle": 40.0, "snr": 0.01, "n": 20000}, False),
}
QUICK = ("base", "junk_noise")


def cell_spec(name, n_override=None, seed=0) -> RealisticSpec:
    kw = {**BASE, **CELLS[name][1], "seed": seed}
    if n_override:
        kw["n"] = n_override if kw.get("box", 64) <= 64 else max(n_override * 3 // 10, 200)
    return RealisticSpec(**kw)


def _spec_json(spec):
    return json.loads(json.dumps(spec.to_dict()))
