"""A ChimeraX Python script driving a trained GaussianEM model.

Run it in the ChimeraX app (command line: ``runscript example_script.py /data/run1``) or
without a window::

    chimerax --nogui --offscreen --exit --script "docs/example_script.py /data/run1"   # the ChimeraX app
    tools/chimerax_headless.sh --script "docs/example_script.py /data/run1"   # make setup's (docs/headless_chimerax.md)

The result folder comes from the first argument or the GAUSSIANEM_RESULT environment
variable. Outputs (a PNG when offscreen rendering is available, a subset .star/.cs) go
into GAUSSIANEM_OUT (default: the result folder's ``chimerax_example/``). ChimeraX gives
a Python script the variable ``session``.
"""

import os
import sys

from chimerax.core.commands import run

from chimerax.gaussianem import open_result

session = globals()["session"]      # provided by ChimeraX
args = [a for a in sys.argv[1:] if a]
path = args[0] if args else os.environ.get("GAUSSIANEM_RESULT")
if not path:
    raise SystemExit("example_script.py: give a GaussianEM result folder as the first argument "
                     "or in GAUSSIANEM_RESULT")
out = os.environ.get("GAUSSIANEM_OUT") or os.path.join(path, "chimerax_example")
os.makedirs(out, exist_ok=True)

# Open the result: latents, the medoid particle's map (the deformed consensus while the run's
# consensus map file is there) and the atomic model it was trained with.
r = open_result(session, path)
n, zdim = r.result.z.shape
pca = r.pca()
session.logger.info(f"{n} particles, latent size {zdim}; PC1 explains {100 * pca.explained[0]:.0f}%")

# Move the map (in place: level and colour stay) and the model to some latents.
z = r.show(particle=0)
session.logger.info(f"particle 0 has latent {z}")
r.show(pc=(1, 2.0))                       # 2 sd along the first principal component
r.show(z=pca.mean)                        # any latent of the right size

# A trajectory along PC1 (the particles' 5th to 95th percentiles): a map series and a model
# with one coordinate set per step.
series, model = r.trajectory(pc=1, steps=10)
run(session, f"vseries play #{series.id_string} loop true")
if model is not None:
    run(session, f"coordset #{model.id_string} loop 2")

# The Gaussians as markers coloured by how far they moved, at the latent shown.
markers = r.markers(color_by="displacement")
session.logger.info(f"{markers.num_atoms} Gaussians shown as markers #{markers.id_string}")

# Particles of the first k-means cluster back to the particle file's format.
ext = os.path.splitext(r.result.config["train"]["particles"])[1]
info = r.subset(os.path.join(out, "cluster0" + ext), cluster=0, k=min(4, n), replace=True)
session.logger.info(f"saved {info['n']} particles to {info['file']}")

# The same, as commands (what the Latent Explorer issues).
run(session, "gaussianem show particle 1")
run(session, f"volume #{r.volume.id_string} color gold")

# A picture, when ChimeraX can render (in the app, or --offscreen with OSMesa).
try:
    run(session, f"hide #{series.id_string} models")
    run(session, "view")
    run(session, f"save {os.path.join(out, 'particle1.png')} width 400 height 400 supersample 1")
except Exception as e:  # noqa: BLE001 (no OpenGL here: the rest of the script still ran)
    session.logger.warning(f"no picture saved: {e}")
