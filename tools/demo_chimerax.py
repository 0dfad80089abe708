"""Demo, last step: open a GaussianEM result in (headless) ChimeraX through the bundle's
commands (which show the map as a transparent surface with the model as cartoon inside,
seen across the main motion), show the two ends of the conformational latent's first
principal component (the particles' 5th and 95th percentiles), save images and maps.

Run by tools/demo.sh as
    tools/chimerax_headless.sh --script "tools/demo_chimerax.py RUN OUT"
"""

import os
import sys

from chimerax.core.commands import run

run_dir, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
gres = run(session, f"gaussianem open {run_dir}")               # noqa: F821 (ChimeraX gives `session`)
part = "conf" if gres.split else "all"
lo, hi = gres.pc_range(1, part)                                 # the particles' 5th-95th percentiles
for name, value in (("pc1_p05", lo), ("pc1_p95", hi)):
    run(session, f"gaussianem show pc 1 value {value:.3f} latentPart {part}")  # noqa: F821 (the motion axis)
    run(session, f"save {out}/{name}.mrc models #1")             # noqa: F821
    try:
        run(session, f"save {out}/{name}.png width 480 height 480 supersample 2")  # noqa: F821
    except Exception as e:                                      # no OSMesa: maps still written
        session.logger.warning(f"could not save an image offscreen: {e}")  # noqa: F821
run(session, f"gaussianem trajectory pc 1 steps 5 latentPart {part}")  # noqa: F821
session.logger.info(f"demo images and maps written to {out}")  # noqa: F821
