"""Demo, last step: open a GaussianEM result in (headless) ChimeraX through the bundle's
commands, show two states along the first principal component, save images and maps.

Run by tools/demo.sh as
    python -m chimerax.core --nogui --offscreen --exit --script "tools/demo_chimerax.py RUN OUT"
"""

import os
import sys

from chimerax.core.commands import run

run_dir, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
run(session, f"gaussianem open {run_dir}")                      # noqa: F821 (ChimeraX gives `session`)
run(session, "volume #1 sdLevel 4 color #b4c8e6; view; lighting soft")  # noqa: F821
for name, value in (("pc1_minus2sd", -2.0), ("pc1_plus2sd", 2.0)):
    run(session, f"gaussianem show pc 1 value {value} part conf")  # noqa: F821 (the motion axis)
    run(session, f"save {out}/{name}.mrc models #1")             # noqa: F821
    try:
        run(session, f"save {out}/{name}.png width 480 height 480 supersample 2")  # noqa: F821
    except Exception as e:                                      # no OSMesa: maps still written
        session.logger.warning(f"could not save an image offscreen: {e}")  # noqa: F821
run(session, "gaussianem trajectory pc 1 steps 5 part conf")    # noqa: F821
session.logger.info(f"demo images and maps written to {out}")  # noqa: F821
