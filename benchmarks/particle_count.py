"""How many particles are enough? The default training on one robustness cell at several
particle counts (issue 32 item 4), and the figure of what it resolved.

Each point is ``benchmarks/robustness.py --cells CELL -n N --tag pcount_CELL_N`` (the same
data set as the cell, with N particles, the default training, 12 epochs), so its results
are ``benchmarks/results/robustness_pcount_CELL_N.json`` and its runs
``OUTDIR/nN/CELL``. Points whose results exist are not run again (``--plot-only``: none is
run). ``--same CELL@N=FILE:NAME`` takes a point from another results file whose cell
``NAME`` is the same data set (e.g. the CryoBench cell ``snr0.01_20k`` is ``snr0.01`` with
20,000 particles); the spec is checked.

For every point the figure also shows the latent's signal as health measures it
(:mod:`gaussianem.train.latent_signal`: the correlation of the difference maps of the
conformational latent's two ends, reconstructed from independent halves of the noise and
of the particles), measured afresh from the run.

  .venv/bin/python benchmarks/particle_count.py --cells snr0.01,base --counts 2000,5000,10000,20000
  .venv/bin/python benchmarks/particle_count.py --plot-only -o docs/images/particle_count.png
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (os.path.join(ROOT, "engine"), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

RESULTS = os.path.join(HERE, "results")


def result_path(cell: str, n: int) -> str:
    return os.path.join(RESULTS, f"robustness_pcount_{cell}_{n}.json")


def point(cell: str, n: int, same: dict) -> dict | None:
    """The robustness record of ``cell`` with ``n`` particles (its ``metrics``, ``health``,
    ``train`` and the run folder), or None when it was not run."""
    from robustness_cells import _spec_json, cell_spec
    path, name = same.get((cell, n), (result_path(cell, n), cell))
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rec = json.load(f)["cells"].get(name)
    if not rec or not rec.get("done") or "metrics" not in rec:
        return None
    if rec["spec"] != _spec_json(cell_spec(cell, n)):
        raise SystemExit(f"{path}: cell {name} is not {cell} with {n} particles")
    return rec


def signal(run: str) -> dict:
    """``latent_signal.measure`` of a finished run (as the run's health would have it)."""
    import torch

    from gaussianem.analysis.result import load_result
    from gaussianem.train import latent_signal
    torch.set_num_threads(1)
    res = load_result(run)
    images, phys = res.particle_source()
    return latent_signal.measure(res.model, images, phys, res.image_std)["difference_correlation"]


def _row(label: str, cell: str, n: int, rec: dict) -> dict:
    """One point of the figure: the robustness record ``rec`` of ``cell`` with ``n``
    particles, its latent signal measured afresh, plotted in the series ``label``."""
    from robustness_cells import cell_spec
    m = rec["metrics"]
    run = (rec.get("train") or {}).get("command", "").split(" -o ")[-1].split(" ")[0]
    sig = signal(run) if run and os.path.exists(run) else {}
    return {"cell": label, "n": n, "snr": cell_spec(cell).snr,
            "motion_probe": m.get("motion_probe"), "motion_pc1": m.get("motion_spearman_pc1"),
            "presence_kmeans": m.get("presence_kmeans"), "fsc_auc": m.get("fsc_auc_mean"),
            "arrival_mean": m.get("arrival_mean"), "health": (rec.get("health") or {}).get("status"),
            "train_s": (rec.get("train") or {}).get("wall_s"), "signal_conf": sig.get("conf"),
            "signal_comp": sig.get("comp"), "signal_random": sig.get("random"), "run": run}


def plot(rows: list, path: str) -> None:
    from gaussianem.analysis.plots import _pyplot, _save_figure
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("motion_probe", "motion read-out (|r|, 5-fold)"), ("presence_kmeans", "presence, 2-means accuracy"),
              ("signal_conf", "latent signal: difference-map correlation"))
    for ax, (key, label) in zip(axes, panels):
        for cell in sorted({r["cell"] for r in rows}):
            pts = sorted((r["n"], r[key]) for r in rows if r["cell"] == cell and r.get(key) is not None)
            snr = next(r["snr"] for r in rows if r["cell"] == cell)
            if pts:
                ax.plot(*zip(*pts), "o-", label=f"{cell} (SNR {snr:g})")
        ax.set_xscale("log")
        ax.set_xlabel("particles")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.8, color="grey", ls=":", lw=1)
    axes[1].axhline(0.95, color="grey", ls=":", lw=1)
    from gaussianem.train.latent_signal import SIGNAL_WARNING
    axes[2].axhline(SIGNAL_WARNING, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=8)
    fig.suptitle("Default training (unless named), 12 epochs, 1a28 (motion 4 A RMS, chain B absent in 30%), box 64 at 2 A/px",
                 fontsize=10)
    _save_figure(fig, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="snr0.01,base")
    ap.add_argument("--counts", default="2000,5000,10000,20000,50000")
    ap.add_argument("--outdir", default=os.path.join(ROOT, "bench_out", "pcount"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot-only", action="store_true", help="run nothing: gather and plot the points that exist")
    ap.add_argument("--same", action="append", default=[], metavar="CELL@N=FILE:NAME",
                    help="take CELL with N particles from cell NAME of results FILE (the same data set)")
    ap.add_argument("--extra", action="append", default=[], metavar="CELL@N=FILE:NAME",
                    help="a point of CELL with N particles trained with other arguments (cell NAME of results "
                         "FILE): plotted as a series of its own, named by its training arguments")
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "images", "particle_count.png"))
    a = ap.parse_args(argv)
    cells = [c for c in a.cells.split(",") if c]
    counts = [int(n) for n in a.counts.split(",") if n]
    def parse(specs):
        out = {}
        for spec in specs:
            key, val = spec.split("=", 1)
            cell, n = key.split("@")
            path, name = val.rsplit(":", 1)
            out[(cell, int(n))] = (path, name)
        return out
    same, extra = parse(a.same), parse(a.extra)
    import robustness
    rows = []
    for cell in cells:
        for n in counts:
            rec = point(cell, n, same)
            if rec is None and not a.plot_only:
                robustness.main(["--cells", cell, "-n", str(n), "--tag", f"pcount_{cell}_{n}", "--fresh",
                                 "--outdir", os.path.join(a.outdir, f"n{n}"), "--threads", str(a.threads)])
                rec = point(cell, n, same)
            if rec is None:
                print(f"{cell} with {n} particles: not run")
                continue
            rows.append(_row(cell, cell, n, rec))
            r = rows[-1]
            print(f"{cell:8s} {n:6d}: motion {r['motion_probe']:.3f} (PC1 {r['motion_pc1']:.3f}), presence "
                  f"{r['presence_kmeans']:.3f}, FSC AUC {r['fsc_auc']:.3f}, signal {r['signal_conf']}, "
                  f"health {r['health']}, {r['train_s'] or 0:.0f} s", flush=True)
    for (cell, n), source in sorted(extra.items()):
        rec = point(cell, n, {(cell, n): source})
        if rec is None:
            print(f"{source[0]}: no finished cell {source[1]}")
            continue
        args = " ".join(re.sub(r"--seed \d+", "", rec.get("train_args") or "").split())
        rows.append(_row(f"{cell} {args}".strip(), cell, n, rec))
        print(f"{rows[-1]['cell']} {n}: motion {rows[-1]['motion_probe']:.3f}, presence "
              f"{rows[-1]['presence_kmeans']:.3f}, signal {rows[-1]['signal_conf']}", flush=True)
    out = os.path.join(RESULTS, "particle_count.json")
    with open(out + ".tmp", "w") as f:
        json.dump({"benchmark": "particle count", "points": rows}, f, indent=1)
    os.replace(out + ".tmp", out)
    if rows:
        os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
        plot(rows, a.output)
        print(f"wrote {out} and {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
