"""Demo, last step: open a GaussianEM result in (headless) ChimeraX through the bundle's
commands (which show the map as a transparent surface with the model as cartoon inside,
seen across the main motion), show the two ends of the principal component of the
conformational latent that carries the motion (PC, default 1; tools/demo_check.py finds
it against the simulated truth) at the particles' 5th and 95th percentiles, save images
and maps.

Run by tools/demo.sh as
    tools/chimerax_headless.sh --script "tools/demo_chimerax.py RUN OUT [PC]"
"""

import os
import sys

from chimerax.core.commands import run

run_dir, out = sys.argv[1], sys.argv[2]
pc = int(sys.argv[3]) if len(sys.argv) > 3 else 1
os.makedirs(out, exist_ok=True)
gres = run(session, f"gaussianem open {run_dir}")               # noqa: F821 (ChimeraX gives `session`)
part = "conf" if gres.split else "all"
lo, hi = gres.pc_range(pc, part)                                # the particles' 5th-95th percentiles
for name, value in ((f"pc{pc}_p05", lo), (f"pc{pc}_p95", hi)):
    run(session, f"gaussianem show pc {pc} value {value:.3f} latentPart {part}")  # noqa: F821 (the motion axis)
    run(session, f"save {out}/{name}.mrc models #1")             # noqa: F821
    try:
        run(session, f"save {out}/{name}.png width 480 height 480 supersample 2")  # noqa: F821
    except Exception as e:                                      # no OSMesa: maps still written
        session.logger.warning(f"could not save an image offscreen: {e}")  # noqa: F821
run(session, f"gaussianem trajectory pc {pc} steps 5 latentPart {part}")  # noqa: F821
session.logger.info(f"demo images and maps written to {out}")  # noqa: F821
