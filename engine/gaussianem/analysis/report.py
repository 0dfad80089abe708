"""``gaussianem analyze``: the whole ``RUN/analysis/`` folder of a training result.

:func:`analyze` takes a :class:`~gaussianem.analysis.result.Result` and writes PCA and
explained-variance plots, a UMAP (when it can be made), k-means clusters, the maps along
the first principal components and at the k-means centres, the loss curves, the run's
health, ``summary.json``, ``embeddings.npz`` (:attr:`~gaussianem.io.rundir.RunDir.embeddings`)
and ``report.md``, which links them all.

What it is made from lives beside it: k-means and UMAP in
:mod:`gaussianem.analysis.clusters`, maps and models for latents in
:mod:`gaussianem.analysis.outputs`, the plots in :mod:`gaussianem.analysis.plots`; reading
latents and particle selections and writing subsets in :mod:`gaussianem.analysis.selection`.

Every file is written to a temporary name beside its destination and renamed.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from gaussianem.analysis.clusters import kmeans_dir, kmeans_for_result, save_kmeans, umap_embedding
from gaussianem.analysis.outputs import output_grid, remove_stale, write_volumes
from gaussianem.analysis.plots import LOSS_CAPTION, plot_density, plot_explained_variance, plot_losses
from gaussianem.analysis.result import Result
from gaussianem.errors import InputError, ResultError
from gaussianem.io.atomic import atomic_output, write_array_text, write_json, write_text
from gaussianem.io.rundir import RunDir


def _note(log: Callable | None, text: str) -> None:
    if log is not None:
        log(text)


# ---------------------------------------------------------------------------------------
# The analysis folder

def analyze(result: Result, k: int = 8, pcs: int = 3, umap: bool = True, steps: int = 10,
            range_sd=None, between=(), skip_volumes: bool = False,
            box: int | None = None, seed: int = 0, log: Callable | None = print, map_kind: str | None = None) -> dict:
    """Write ``OUTDIR/analysis/``: PCA and UMAP density plots, loss curves, trajectories
    along the first ``pcs`` principal components (``pcN/``) and between particle pairs
    (``between_I_J/``), k-means (``kmeansK/``: volumes, labels, centres), ``report.md``
    and ``summary.json``. Trajectories span ``range_sd`` standard deviations, by default
    the particles' 5th to 95th percentiles along each PC; maps are deformed-consensus maps
    while the run's consensus map is there (``map_kind``: or ``gaussians``). Returns the
    summary (with absolute paths; summary.json has them relative to the analysis folder)."""
    z = result.require_z()
    n, zdim = z.shape
    if n < 2:
        raise ResultError(f"{result.outdir}: analysis needs at least 2 particles, got {n}")
    if steps < 2:
        raise InputError(f"--trajectory-steps must be at least 2, got {steps}")
    between = [(int(a), int(b)) for a, b in between]
    for a, b in between:       # check before any work
        result.particle_z(a), result.particle_z(b)
    adir = result.run.analysis
    os.makedirs(adir, exist_ok=True)
    grid = output_grid(result, box)
    rel = lambda p: os.path.relpath(p, adir).replace(os.sep, "/")  # noqa: E731
    summary = {"epoch": result.epoch, "n_particles": int(n), "zdim": int(zdim),
               "zdim_conf": int(getattr(result.model_config, "zdim_conf", 0) or 0),
               "zdim_comp": int(getattr(result.model_config, "zdim_comp", 0) or 0),
               "grid": grid.as_dict(), "notes": [], "files": {}, "health": result.health}

    def note(text):
        summary["notes"].append(text)
        _note(log, text)

    # PCA
    p = result.pca()
    summary["pca"] = {"explained_variance_ratio": [float(v) for v in p.explained],
                      "sd": [float(v) for v in p.sd], "mean": [float(v) for v in p.mean]}
    files = summary["files"]
    files["pca_variance"] = os.path.join(adir, "pca_variance.png")
    plot_explained_variance(p.explained, files["pca_variance"])

    # k-means
    km = kmeans_for_result(result, k, seed=seed)
    kdir = kmeans_dir(result, k)
    kfiles = save_kmeans(km, kdir)
    summary["kmeans"] = {"k": km.k, "sizes": [int(s) for s in km.sizes],
                         "centre_particles": [int(i) for i in km.centre_index],
                         "folder": kdir, **{f"{f}_file": kfiles[f] for f in kfiles}}

    scores = p.scores
    in_sd = scores / p.sd              # as the report's tables, the commands and ChimeraX give PC values
    files["pca_density"] = os.path.join(adir, "pca_density.png")
    if zdim >= 2:
        plot_density(in_sd[:, :2], files["pca_density"], "PC1 (sd)", "PC2 (sd)", f"{n} particles, PCA",
                     centres=in_sd[km.centre_index, :2])
    else:
        plot_density(in_sd[:, :1], files["pca_density"], "PC1 (sd)", "", f"{n} particles, PCA",
                     centres=in_sd[km.centre_index, 0])

    # UMAP
    emb = None
    if umap:
        if zdim < 2:
            note("UMAP skipped: the latent space has 1 dimension")
        else:
            emb = umap_embedding(z, seed=seed, log=note)
    summary["umap"] = emb is not None
    if emb is not None:
        files["umap_density"] = os.path.join(adir, "umap_density.png")
        plot_density(emb, files["umap_density"], "UMAP1", "UMAP2", f"{n} particles, UMAP",
                     centres=emb[km.centre_index])
    arrays = {"pca_scores": scores.astype(np.float32), "kmeans_labels": km.labels}
    if emb is not None:
        arrays["umap"] = emb
    files["embeddings"] = result.run.embeddings
    with atomic_output(files["embeddings"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    # Loss curves
    lpath = os.path.join(adir, "loss.png")
    stage_logs = [result.run.coarse.log, result.run.log]
    if plot_losses([f for f in stage_logs if os.path.exists(f)], lpath):
        files["loss"] = lpath
    else:
        note(f"loss curves skipped: {RunDir.LOG} holds no losses")

    # Trajectories and k-means volumes
    n_pcs = min(int(pcs), len(p.components))
    if pcs > n_pcs:
        note(f"{pcs} principal components asked for; the latent space has {n_pcs}")
    trajectories = []
    kind = map_kind or ("deformed" if result.has_consensus_map() else "gaussians")
    if kind == "gaussians" and not map_kind:
        note(f"the run's consensus map ({result.consensus_path or 'not recorded'}) is not there: maps are "
             "rendered from the Gaussians")
    summary["map"] = kind

    def span(pc, part="all"):
        return tuple(range_sd) if range_sd is not None else result.pc_percentiles(pc, part)

    for pc in range(1, n_pcs + 1):
        r = span(pc)
        zs = result.trajectory(pc=pc, steps=steps, range_sd=r)
        trajectories.append({"name": f"pc{pc}", "what": f"PC{pc} from {r[0]:.2f} to {r[1]:.2f} sd", "z": zs})
    if result.model_config.split:
        # split latent: also the conformational and compositional axes on their own
        for part, dims in (("conf", result.model_config.zdim_conf), ("comp", result.model_config.zdim_comp)):
            for pc in range(1, min(int(pcs), dims) + 1):
                r = span(pc, part)
                zs = result.trajectory(pc=pc, steps=steps, range_sd=r, part=part)
                trajectories.append({"name": f"{part}_pc{pc}", "z": zs,
                                     "what": f"{part} PC{pc} from {r[0]:.2f} to {r[1]:.2f} sd"})
    for a, b in between:
        zs = result.trajectory(steps=steps, start=result.particle_z(a), end=result.particle_z(b))
        trajectories.append({"name": f"between_{a}_{b}", "what": f"particle {a} to particle {b}", "z": zs})
    summary["trajectories"] = []
    for t in trajectories:
        folder = os.path.join(adir, t["name"])
        entry = {"name": t["name"], "what": t["what"], "folder": folder, "steps": len(t["z"])}
        if skip_volumes:
            os.makedirs(folder, exist_ok=True)
            remove_stale(folder, "vol", (".mrc",), 0)
            write_array_text(os.path.join(folder, "z.txt"), t["z"], fmt="%.7g",
                             header="latent of each step, one per row")
            entry["volumes"] = []
        else:
            entry["volumes"] = write_volumes(result, t["z"], folder, grid, kind=kind)
        entry["z_file"] = os.path.join(folder, "z.txt")
        summary["trajectories"].append(entry)
    summary["kmeans"]["volumes"] = [] if skip_volumes else write_volumes(result, km.centres, kdir, grid, kind=kind)
    if skip_volumes:
        remove_stale(kdir, "vol", (".mrc",), 0)
        note("volumes skipped (--skip-volumes)")

    files["report"] = os.path.join(adir, "report.md")
    files["summary"] = os.path.join(adir, "summary.json")
    write_text(files["report"], _report(result, summary, rel))
    write_json(files["summary"], _relative_paths(summary, adir))
    return summary


def _relative_paths(obj, folder: str):
    """``obj`` with every path string under ``folder`` made relative to it (so that
    summary.json stays valid when the result folder moves)."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v, folder) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, folder) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj) and (obj + os.sep).startswith(folder + os.sep):
        return os.path.relpath(obj, folder).replace(os.sep, "/")
    return obj


def _health_section(h: dict | None) -> list[str]:
    """The run's health (health.json) as report lines: status first, then each check."""
    if h is None:
        return ["## Run health", "", "Not recorded (a run trained before health checks existed).", ""]
    mark = {"healthy": "ok", "warning": "WARNING", "failed": "FAILED"}
    lines = ["## Run health", "", f"**{mark.get(h['status'], h['status'])}**: {h['summary']}", "",
             "| check | status | what was measured |", "|---|---|---|"]
    for c in h["checks"]:
        lines.append(f"| {c['name']} | {mark.get(c['status'], c['status'])} | {c['message']} |")
    sc = h.get("intensity") or {}
    if sc.get("group_scale"):
        groups = ", ".join(f"group {g}: {v:.4g}" for g, v in sc["group_scale"].items())
        lo, hi = sc["particle_scale_p5_p95"]
        lines += ["", f"Intensity scale of the images on the consensus projections: {groups}; per particle "
                  f"{lo:.4g} to {hi:.4g} (5th to 95th percentile); image-consensus correlation "
                  f"{sc['correlation']:.3f}."]
    for r in h.get("recoveries") or []:
        lines.append(f"- epoch {r['epoch']} diverged ({r['reason']}); restarted with learning rate {r['lr']:.3g}")
    return lines + [""]


def _report(result: Result, s: dict, rel) -> str:
    f = s["files"]
    split = f" ({s['zdim_conf']} conformational + {s['zdim_comp']} compositional)" if s["zdim_comp"] else ""
    g = s["grid"]
    lines = [f"# GaussianEM analysis of {os.path.basename(result.outdir)}", "",
             f"{s['n_particles']} particles, latent dimension {s['zdim']}{split}, trained "
             f"{s['epoch']} epochs. Volumes are on a {g['box']}^3 grid of {g['apix']:.4g} A voxels "
             "with the consensus map's origin, so they overlay it in ChimeraX.", ""]
    if s["notes"]:
        lines += ["Notes:", ""] + [f"- {t}" for t in s["notes"]] + [""]
    lines += _health_section(s.get("health"))
    lines += ["## Principal components", "",
              "| PC | explained variance | sd |", "|---|---|---|"]
    for i, (e, sd) in enumerate(zip(s["pca"]["explained_variance_ratio"], s["pca"]["sd"])):
        lines.append(f"| {i + 1} | {e:.3f} | {sd:.4g} |")
    lines += ["", f"![explained variance]({rel(f['pca_variance'])})", "",
              f"![PCA density]({rel(f['pca_density'])})", ""]
    if "umap_density" in f:
        lines += ["## UMAP", "", f"![UMAP density]({rel(f['umap_density'])})", ""]
    if "loss" in f:
        lines += ["## Training", "", f"![loss curves]({rel(f['loss'])})", "", LOSS_CAPTION, ""]
    lines += ["## Trajectories", ""]
    for t in s["trajectories"]:
        folder = rel(t["folder"])
        if t["volumes"]:
            lines.append(f"- **{t['name']}** ({t['what']}, {t['steps']} steps): "
                         f"[{folder}/vol_000.mrc]({rel(t['volumes'][0])}) to "
                         f"[{folder}/vol_{len(t['volumes']) - 1:03d}.mrc]({rel(t['volumes'][-1])}); "
                         f"latents in [{folder}/z.txt]({rel(t['z_file'])})")
        else:
            lines.append(f"- **{t['name']}** ({t['what']}): latents in [{folder}/z.txt]({rel(t['z_file'])})")
    if any(t["volumes"] for t in s["trajectories"]):
        lines += ["", "In ChimeraX: `open analysis/pc1/vol_*.mrc vseries true` plays a trajectory."]
    km = s["kmeans"]
    kd = rel(km["folder"])
    lines += ["", f"## K-means, k = {km['k']}", "",
              f"Labels (one per particle): [{kd}/labels.txt]({rel(km['labels_file'])}); centre latents: "
              f"[{kd}/centres.txt]({rel(km['centres_file'])}); centre particles: "
              f"[{kd}/centre_particles.txt]({rel(km['centre_particles_file'])}).", "",
              "| cluster | particles | centre particle | volume |", "|---|---|---|---|"]
    for i, (size, cp) in enumerate(zip(km["sizes"], km["centre_particles"])):
        vol = f"[vol_{i:03d}.mrc]({rel(km['volumes'][i])})" if km["volumes"] else "-"
        lines.append(f"| {i} | {size} | {cp} | {vol} |")
    lines += ["", "Export a cluster: `gaussianem export "
              f"{result.outdir} --kmeans {km['k']} --cluster 0 -o cluster0.star`", "",
              f"Numbers: [summary.json]({rel(f['summary'])}); embeddings: "
              f"[{RunDir.EMBEDDINGS}]({rel(f['embeddings'])}).", ""]
    return "\n".join(lines)
