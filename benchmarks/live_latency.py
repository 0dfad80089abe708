"""Latent -> updated map latency of the ChimeraX bundle, deformed consensus vs Gaussians.

For each result folder and map kind (``gaussians``, ``deformed``) it opens the result in
an embedded headless ChimeraX session (the bundle tests' session, offscreen Qt) with
``gaussianem open RUN map KIND`` and measures, each over new latents (nothing cached):

* ``generate``: the engine's work for one latent (``GaussianEMResult.generate``: decode,
  the map, the atom displacements), as the Latent Explorer's worker thread does it;
* ``slider -> map``: the Latent Explorer's update path (``tool.LiveUpdater``): from a
  slider move (``LatentPanel.set_pc_value``) until ``gaussianem show z ...`` has replaced
  the map's data in the GUI thread; one move at a time, each waited for;
* ``show command``: ``gaussianem show z ...`` typed as a command (generation in the
  GUI thread).

Medians in milliseconds, printed as a Markdown table and written as JSON::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/live_latency.py RUN [RUN ...] \\
        [--moves 20] [--device cpu] [--json benchmarks/results/live_latency.json]

Not a test: the numbers depend on the machine (docs/benchmarks.md records them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def session():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(REPO / "tests" / "bundle"))
    import chimerax_fixture as fx
    fx.ensure_bundle_installed()
    os.environ.update(fx.scratch_env(Path(tempfile.mkdtemp(prefix="gem_latency_xdg_")), base={}))
    return fx.start_session(offscreen=False)


def measure(cx, qapp, run_dir: str, kind: str, moves: int, device: str) -> dict:
    import numpy as np
    from chimerax.core.commands import run

    from chimerax.gaussianem.generation import format_latent
    from chimerax.gaussianem.explorer.tool import LiveUpdater, make_panel
    run(cx, "close", log=False)
    t0 = time.perf_counter()
    res = run(cx, f"gaussianem open {run_dir} map {kind} device {device}", log=False)
    open_s = time.perf_counter() - t0
    r = res.result
    pca = r.pca()
    rng = np.random.default_rng(0)
    out = {"run": run_dir, "kind": kind, "box": r.grid.box, "apix": r.grid.apix, "gaussians": len(r.base),
           "atoms": None if res.structure is None else res.structure.num_atoms, "device": device,
           "open_s": open_s}

    def fresh(n):
        return [pca.mean + rng.normal(size=pca.mean.shape).astype(np.float32) * 0.3 for _ in range(n)]

    res.generate(fresh(1)[0])                                          # warm up (first-call costs)
    times = []
    for z in fresh(moves):
        t = time.perf_counter()
        res.generate(z)
        times.append(time.perf_counter() - t)
    out["generate_ms"] = 1e3 * statistics.median(times)

    updater = LiveUpdater(cx, res)
    panel = make_panel(res, updater.request)
    lo, hi = panel.slider_ticks[0]
    values = np.linspace(lo, hi, moves + 1).round().astype(int)
    try:
        for v in values:
            if panel.sliders[0].value() == v:
                continue                                                    # no move, nothing sent
            n = len(updater.latencies)
            panel.sliders[0].setValue(int(v))
            end = time.time() + 120
            while len(updater.latencies) == n or updater.busy:
                qapp.processEvents()
                time.sleep(0.0005)
                assert time.time() < end, "timed out"
        out["slider_to_map_ms"] = 1e3 * statistics.median(updater.latencies[1:] or updater.latencies)
    finally:
        updater.close()
        panel.deleteLater()

    times = []
    for z in fresh(moves):
        t = time.perf_counter()
        run(cx, f"gaussianem show z {format_latent(z)}", log=False)
        times.append(time.perf_counter() - t)
    out["show_command_ms"] = 1e3 * statistics.median(times)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="result folders")
    p.add_argument("--moves", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--kinds", default="gaussians,deformed")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    cx = session()
    from Qt.QtWidgets import QApplication
    qapp = QApplication.instance() or QApplication([])
    import torch
    rows = [measure(cx, qapp, os.path.abspath(d), kind, args.moves, args.device)
            for d in args.runs for kind in args.kinds.split(",")]
    print(f"torch threads {torch.get_num_threads()}, device {args.device}, median of {args.moves}")
    print("| map | box | Gaussians | atoms | generate | slider -> map | show command |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['kind']} | {r['box']} | {r['gaussians']} | {r['atoms']} | {r['generate_ms']:.1f} ms "
              f"| {r['slider_to_map_ms']:.1f} ms | {r['show_command_ms']:.1f} ms |")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
