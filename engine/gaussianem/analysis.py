"""Latent-space analysis of a training result: PCA, UMAP, k-means, reports (plots in
:mod:`gaussianem.plots`).

Everything here takes arrays or a :class:`~gaussianem.result.Result` and writes plain
files; the ``analyze``, ``generate`` and ``export`` commands are thin layers over it.

* :func:`kmeans`: k-means on the latents with each centre snapped to the nearest real
  particle's latent (as cryoDRGN does), clusters numbered along the first principal
  component. :func:`kmeans_for_result` reuses ``analysis/kmeansK/`` when it is newer
  than the latents, so ``analyze`` and ``export`` always agree on the labels.
* :func:`umap_embedding`: a 2D UMAP, or None with a note when it cannot be made.
* :func:`write_volumes` / :func:`write_models`: maps on the consensus grid (or a
  resampled one, :func:`output_grid`) and displaced atomic models for latent rows.
* :func:`analyze`: the whole ``OUTDIR/analysis/`` folder (plots, trajectories, k-means
  volumes, ``report.md`` and ``summary.json``).

Reading latents and particle selections and writing subsets live in
:mod:`gaussianem.selection`.

Every file is written to a temporary name beside its destination and renamed.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .dataset import atomic_output
from .grid import Grid
from .plots import plot_density, plot_explained_variance, plot_losses
from .stages import COARSE_DIR
from .result import Result, ResultError
from .selection import latents_of

ANALYSIS_DIR = "analysis"
VOLUME_CHUNK = 16            # latents decoded at once when writing many volumes
UMAP_MIN_PARTICLES = 20


def _note(log: Callable | None, text: str) -> None:
    if log is not None:
        log(text)


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_array_text(path, array, fmt="%.6g", header: str = "") -> None:
    """``np.savetxt`` to ``path`` atomically (``header`` lines start with '# ')."""
    with atomic_output(path) as tmp:
        np.savetxt(tmp, np.asarray(array), fmt=fmt, header=header)


# ---------------------------------------------------------------------------------------
# K-means

@dataclass
class KMeans:
    """K-means clusters of N latents; ``centres`` are real particles' latents."""

    labels: np.ndarray          # (N,) int cluster of each particle, 0..k-1
    centre_index: np.ndarray    # (k,) particle whose latent is each cluster's centre
    centres: np.ndarray         # (k, zdim) float32, = z[centre_index]

    @property
    def k(self) -> int:
        return len(self.centre_index)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)


def kmeans(z: np.ndarray, k: int = 8, seed: int = 0) -> KMeans:
    """K-means of the latents ``z`` (N, zdim) with centres snapped to particles.

    Clusters are numbered by the first-principal-component score of their centres (so
    consecutive cluster volumes tend to follow the main motion). Deterministic for a
    given ``seed``.
    """
    from scipy.spatial import cKDTree
    from sklearn.cluster import KMeans as _SKMeans
    z = np.asarray(z, dtype=np.float32)
    k = int(k)
    if k < 1:
        raise ValueError(f"k-means needs at least 1 cluster, got {k}")
    if z.ndim != 2 or len(z) < k:
        raise ValueError(f"k-means with {k} clusters needs at least {k} particles, got {len(z)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning for duplicate points
        fit = _SKMeans(n_clusters=k, n_init=10, random_state=seed).fit(z.astype(np.float64))
    labels = fit.labels_.astype(np.int64)
    _, nearest = cKDTree(z).query(fit.cluster_centers_)
    centre_index = np.asarray(nearest, dtype=np.int64)
    # Number clusters along PC1 of the latents (the same axis as Result.pca()).
    x = z - z.mean(0)
    pc1 = np.linalg.svd(x, full_matrices=False)[2][0] if len(z) > 1 else np.ones(z.shape[1])
    order = np.argsort((z[centre_index] - z.mean(0)) @ pc1, kind="stable")
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    centre_index = centre_index[order]
    return KMeans(relabel[labels], centre_index, z[centre_index].copy())


def kmeans_dir(result: Result, k: int) -> str:
    return os.path.join(result.outdir, ANALYSIS_DIR, f"kmeans{int(k)}")


def save_kmeans(km: KMeans, folder: str) -> dict:
    """Write ``labels.txt`` (one cluster per particle), ``centres.txt`` (centre latents)
    and ``centre_particles.txt`` (their particle indices) into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    files = {"labels": os.path.join(folder, "labels.txt"),
             "centres": os.path.join(folder, "centres.txt"),
             "centre_particles": os.path.join(folder, "centre_particles.txt")}
    write_array_text(files["labels"], km.labels, fmt="%d")
    write_array_text(files["centres"], km.centres, fmt="%.7g",
                     header="k-means centre latents (snapped to particles), one per row, cluster 0 first")
    write_array_text(files["centre_particles"], km.centre_index, fmt="%d")
    return files


def load_kmeans(folder: str, z: np.ndarray, newer_than: float = 0.0) -> KMeans | None:
    """The k-means saved in ``folder`` if it is complete, fits ``z`` and was written
    after ``newer_than`` (a modification time); else None."""
    lp = os.path.join(folder, "labels.txt")
    cp = os.path.join(folder, "centre_particles.txt")
    if not (os.path.exists(lp) and os.path.exists(cp)):
        return None
    if min(os.path.getmtime(lp), os.path.getmtime(cp)) < newer_than:
        return None
    try:
        labels = np.loadtxt(lp, dtype=np.int64, ndmin=1)
        centre_index = np.loadtxt(cp, dtype=np.int64, ndmin=1)
    except ValueError:
        return None
    k = len(centre_index)
    if (len(labels) != len(z) or labels.min(initial=0) < 0 or labels.max(initial=0) >= k
            or centre_index.min(initial=0) < 0 or centre_index.max(initial=0) >= len(z)):
        return None
    return KMeans(labels, centre_index, np.asarray(z, dtype=np.float32)[centre_index].copy())


def kmeans_for_result(result: Result, k: int, seed: int = 0, reuse: bool = True,
                      save: bool = False) -> KMeans:
    """K-means of a result's latents: the saved ``analysis/kmeansK/`` when it is newer
    than ``latents.npz`` (and ``reuse``), else computed with :func:`kmeans` (and, with
    ``save``, saved there with :func:`save_kmeans`)."""
    z = latents_of(result)
    if reuse:
        zpath = os.path.join(result.outdir, "latents.npz")
        km = load_kmeans(kmeans_dir(result, k), z, newer_than=os.path.getmtime(zpath))
        if km is not None and km.k == int(k):
            return km
    km = kmeans(z, k, seed=seed)
    if save:
        save_kmeans(km, kmeans_dir(result, k))
    return km


def parse_clusters(text: str, k: int) -> list[int]:
    """``"0,2"`` -> [0, 2], checked against ``k`` clusters."""
    out = []
    for part in str(text).replace(" ", ",").split(","):
        if not part:
            continue
        try:
            c = int(part)
        except ValueError:
            raise ValueError(f"cluster {part!r} is not a whole number") from None
        if not 0 <= c < k:
            raise ValueError(f"cluster {c} does not exist: k-means with k={k} has clusters 0 to {k - 1}")
        out.append(c)
    if not out:
        raise ValueError("no cluster given (expected e.g. --cluster 0 or --cluster 0,3)")
    return sorted(set(out))


# ---------------------------------------------------------------------------------------
# UMAP

def umap_embedding(z: np.ndarray, seed: int = 0, log: Callable | None = None) -> np.ndarray | None:
    """A 2D UMAP embedding (N, 2) of the latents, or None (with a note to ``log``) when
    there are fewer than 20 particles or umap-learn is missing or fails."""
    z = np.asarray(z, dtype=np.float32)
    if len(z) < UMAP_MIN_PARTICLES:
        _note(log, f"UMAP skipped: {len(z)} particles (needs at least {UMAP_MIN_PARTICLES})")
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
            emb = umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1),
                            random_state=seed).fit_transform(z)
    except Exception as e:  # noqa: BLE001 (import errors, numba errors, degenerate input)
        _note(log, f"UMAP skipped: {type(e).__name__}: {e}")
        return None
    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape != (len(z), 2) or not np.all(np.isfinite(emb)):
        _note(log, "UMAP skipped: the embedding was not finite")
        return None
    return emb


# ---------------------------------------------------------------------------------------
# Volumes and models for latent rows

def output_grid(result: Result, box: int | None = None, apix: float | None = None) -> Grid:
    """The grid generated maps are written on: the consensus grid, or ``box`` voxels of
    ``apix`` (default: the same physical extent) about the same centre."""
    if box is not None and int(box) < 2:
        raise ValueError(f"--box must be at least 2 voxels, got {box}")
    if apix is not None and not apix > 0:
        raise ValueError(f"--apix must be positive, got {apix}")
    return result.output_grid(box, apix)


def remove_stale(folder: str, prefix: str, extensions, keep: int) -> None:
    """Delete ``folder/{prefix}_NNN{ext}`` files numbered ``keep`` or more, left by an
    earlier run with more latents (so a folder never mixes two runs' series)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        head, _, num = stem.rpartition("_")
        if (head == prefix and ext in extensions and num.isdigit() and num == f"{int(num):03d}"
                and int(num) >= keep):
            os.remove(os.path.join(folder, name))


def write_volumes(result: Result, z: np.ndarray, folder: str, grid: Grid | None = None,
                  prefix: str = "vol", chunk: int = VOLUME_CHUNK) -> list[str]:
    """Write one map per latent row, ``folder/vol_000.mrc`` ..., on ``grid`` (default
    the consensus grid); also ``folder/z.txt`` with the latents. Higher-numbered
    ``vol_NNN.mrc`` left from an earlier run are removed. Returns the paths."""
    from .mrc import write_map
    z = result.check_z(z)
    grid = grid or result.grid
    os.makedirs(folder, exist_ok=True)
    remove_stale(folder, prefix, (".mrc",), len(z))
    write_array_text(os.path.join(folder, "z.txt"), z, fmt="%.7g",
                     header="latent of each volume, one per row, vol_000 first")
    paths = []
    for s in range(0, len(z), chunk):
        vols = result.volume(z[s:s + chunk], box=grid.box, apix=grid.apix)
        vols = vols[None] if vols.ndim == 3 else vols
        for i, v in enumerate(vols):
            p = os.path.join(folder, f"{prefix}_{s + i:03d}.mrc")
            write_map(p, v, grid.apix, grid.origin)
            paths.append(p)
    return paths


def model_extension(model_path: str) -> str:
    """The output extension for models read from ``model_path`` (.pdb or .cif)."""
    name = os.fspath(model_path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    return ".pdb" if ext in (".pdb", ".ent") else ".cif"


def write_models(result: Result, model_path: str, z: np.ndarray, folder: str,
                 prefix: str = "model", chunk: int = 64) -> list[dict]:
    """Write the atomic model displaced to each latent row, ``folder/model_000.pdb``
    (or .cif, as the input) ... Returns per model ``{"file", "bond_length_rms_change"}``
    (Angstrom, over the input's covalent bonds). Raises
    :class:`~gaussianem.displace.ModelOutsideMapError` if the model does not overlap the
    map."""
    from .structure import bond_length_rms_change, bond_pairs, read_model, write_model
    z = result.check_z(z)
    model = read_model(model_path)
    interp = result.interpolator(model.coords, name=os.fspath(model_path))
    pairs = bond_pairs(model)
    ext = model_extension(model_path)
    os.makedirs(folder, exist_ok=True)
    remove_stale(folder, prefix, (".pdb", ".cif"), len(z))
    out = []
    for s in range(0, len(z), chunk):
        moved = result.displace_model(model, z[s:s + chunk], interpolator=interp)
        moved = moved if isinstance(moved, list) else [moved]
        for i, m in enumerate(moved):
            p = os.path.join(folder, f"{prefix}_{s + i:03d}{ext}")
            write_model(p, m)
            out.append({"file": p, "bond_length_rms_change": bond_length_rms_change(model, m.coords, pairs)})
    return out


# ---------------------------------------------------------------------------------------
# The analysis folder

def analyze(result: Result, k: int = 8, pcs: int = 3, umap: bool = True, steps: int = 10,
            range_sd=(-2.0, 2.0), between=(), skip_volumes: bool = False,
            box: int | None = None, seed: int = 0, log: Callable | None = print) -> dict:
    """Write ``OUTDIR/analysis/``: PCA and UMAP density plots, loss curves, trajectories
    along the first ``pcs`` principal components (``pcN/``) and between particle pairs
    (``between_I_J/``), k-means (``kmeansK/``: volumes, labels, centres), ``report.md``
    and ``summary.json``. Returns the summary (with absolute paths; summary.json has
    them relative to the analysis folder)."""
    z = latents_of(result)
    n, zdim = z.shape
    if n < 2:
        raise ResultError(f"{result.outdir}: analysis needs at least 2 particles, got {n}")
    if steps < 2:
        raise ValueError(f"--trajectory-steps must be at least 2, got {steps}")
    between = [(int(a), int(b)) for a, b in between]
    for a, b in between:       # check before any work
        result.particle_z(a), result.particle_z(b)
    adir = os.path.join(result.outdir, ANALYSIS_DIR)
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
    files["pca_density"] = os.path.join(adir, "pca_density.png")
    if zdim >= 2:
        plot_density(scores[:, :2], files["pca_density"], "PC1", "PC2", f"{n} particles, PCA",
                     centres=scores[km.centre_index, :2])
    else:
        plot_density(scores[:, :1], files["pca_density"], "PC1", "", f"{n} particles, PCA",
                     centres=scores[km.centre_index, 0])

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
    files["embeddings"] = os.path.join(adir, "embeddings.npz")
    with atomic_output(files["embeddings"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    # Loss curves
    lpath = os.path.join(adir, "loss.png")
    stage_logs = [os.path.join(result.outdir, d, "log.jsonl") for d in (COARSE_DIR, "")]
    if plot_losses([f for f in stage_logs if os.path.exists(f)], lpath):
        files["loss"] = lpath
    else:
        note("loss curves skipped: log.jsonl holds no losses")

    # Trajectories and k-means volumes
    n_pcs = min(int(pcs), len(p.components))
    if pcs > n_pcs:
        note(f"{pcs} principal components asked for; the latent space has {n_pcs}")
    trajectories = []
    for pc in range(1, n_pcs + 1):
        zs = result.trajectory(pc=pc, steps=steps, range_sd=range_sd)
        trajectories.append({"name": f"pc{pc}", "what": f"PC{pc} from {range_sd[0]:g} to {range_sd[1]:g} sd",
                             "z": zs})
    if result.model_config.split:
        # split latent: also the conformational and compositional axes on their own
        for part, dims in (("conf", result.model_config.zdim_conf), ("comp", result.model_config.zdim_comp)):
            for pc in range(1, min(int(pcs), dims) + 1):
                zs = result.trajectory(pc=pc, steps=steps, range_sd=range_sd, part=part)
                trajectories.append({"name": f"{part}_pc{pc}", "z": zs,
                                     "what": f"{part} PC{pc} from {range_sd[0]:g} to {range_sd[1]:g} sd"})
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
            entry["volumes"] = write_volumes(result, t["z"], folder, grid)
        entry["z_file"] = os.path.join(folder, "z.txt")
        summary["trajectories"].append(entry)
    summary["kmeans"]["volumes"] = [] if skip_volumes else write_volumes(result, km.centres, kdir, grid)
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
        lines += ["## Training", "", f"![loss curves]({rel(f['loss'])})", ""]
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
              f"[embeddings.npz]({rel(f['embeddings'])}).", ""]
    return "\n".join(lines)
