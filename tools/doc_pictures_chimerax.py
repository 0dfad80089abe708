"""The pictures of docs/chimerax.md and the bundle's help page, made in headless ChimeraX
through the bundle's own commands and its Latent Explorer panel (Qt, offscreen).

Run by tools/doc_pictures.sh as
    tools/chimerax_headless.sh --script "tools/doc_pictures_chimerax.py RUN OUT"

RUN is a trained result with an analysis (``make demo`` leaves one in demo_out/run). Writes
into OUT:
  demo_conf_pc1_p05.png, demo_conf_pc1_p95.png   map and model at the particles' 5th and 95th
                                                 percentiles along conf PC1 (as tools/demo.sh)
  markers_displacement.png                       the Gaussians as markers coloured by
                                                 displacement, with their colour key
  explorer_panel.png                             the Latent Explorer panel, coloured by
                                                 k-means cluster, with a lasso drawn
"""

import os
import sys

import numpy as np
from chimerax.core.commands import run

session = globals()["session"]           # ChimeraX gives the script `session`
run_dir, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
SIZE = "width 480 height 480 supersample 2"

# ---------------------------------------------------------------- map and model at two states
gres = run(session, f"gaussianem open {run_dir}")
part = "conf" if gres.split else "all"
lo, hi = gres.pc_range(1, part)                      # the particles' 5th-95th percentiles
for name, value in (("demo_conf_pc1_p05", lo), ("demo_conf_pc1_p95", hi)):
    run(session, f"gaussianem show pc 1 value {value:.3f} latentPart {part}")
    run(session, f"save {out}/{name}.png {SIZE}")

# ---------------------------------------------------------------- markers and their colour key
run(session, f"gaussianem show pc 1 value {hi:.3f} latentPart {part}")
run(session, f"hide #{gres.volume.id_string} models")
markers = run(session, "gaussianem markers colorBy displacement")
run(session, f"transparency #{gres.structure.id_string} 70 target c" if gres.structure else "wait 1")
run(session, f"save {out}/markers_displacement.png {SIZE}")
run(session, f"close #{markers.id_string}")
run(session, f"show #{gres.volume.id_string} models")

# ---------------------------------------------------------------- the Latent Explorer panel
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from Qt.QtWidgets import QApplication  # noqa: E402

from chimerax.gaussianem.explorer.latent_plot import KMEANS  # noqa: E402
from chimerax.gaussianem.explorer.tool import make_panel  # noqa: E402

app = QApplication.instance() or QApplication([])
panel = make_panel(gres, lambda z: None, on_save_region=lambda region: None)
panel.resize(520, 700)
panel.show()
app.processEvents()
panel.color_by(KMEANS)
xy = panel.plot_coordinates()
km = gres.kmeans()
members = xy[km.labels == 0]                        # a lasso around the first cluster's core
centre = np.median(members, axis=0)
radius = np.percentile(np.linalg.norm(members - centre, axis=1), 60)
t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
panel.select_menu.setCurrentText("lasso")
panel.select_region("polygon", centre + radius * np.column_stack([np.cos(t), 0.8 * np.sin(t)]))
panel.pick_particle(int(gres.medoid))
app.processEvents()
panel.canvas.draw()
app.processEvents()
panel.grab().save(os.path.join(out, "explorer_panel.png"), "PNG")
session.logger.info(f"documentation pictures written to {out}")
