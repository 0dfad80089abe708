"""Latents and particle selections in, particle subsets out.

* :func:`parse_latent` / :func:`read_latents`: latent vectors from a command line or a
  file (.txt/.csv/.npy), checked against the result's latent size by the caller.
* :func:`read_selection`: particle indices or a boolean mask from a file.
* :func:`plot_coordinates` / :func:`points_in_polygon`: the particles in the latent
  plot (PC1/PC2 in sd, or the UMAP of ``gaussianem analyze``) and those inside a box or
  lasso drawn on it.
* :func:`select_particles`: one selection (k-means clusters, a file of indices, a
  range of scores along a principal component of the whole latent or of one part, or a
  region of the latent plot), as the CLI's ``export`` and the ChimeraX
  ``gaussianem subset`` both make it.
* :func:`particle_columns`: per-particle numbers of the result's particle file (defocus,
  optics group, class number, any numeric column), to colour the latent plot by.
* :func:`export_subset`: the selected particles of a result's particle file written back
  to RELION ``.star`` (a file, or a job in a RELION project) or cryoSPARC ``.cs`` with
  their original rows and optics table, optionally with k-means labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from gaussianem.analysis.clusters import KMeans, kmeans_for_result
from gaussianem.analysis.result import Result
from gaussianem.errors import InputError, ResultError
from gaussianem.io.particles import load_particles, write_subset
from gaussianem.io.relion_project import add_external_job, check_alias, check_project
from gaussianem.train import health


def parse_latent(text: str) -> np.ndarray:
    """``"0.1 -0.3 2"`` or ``"0.1,-0.3,2"`` -> (1, zdim) float32."""
    parts = str(text).replace(",", " ").split()
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--z {text!r}: expected numbers separated by spaces or commas") from None
    if not vals:
        raise InputError("--z is empty: expected the latent's values, e.g. --z \"0.1 -0.3 2\"")
    return np.array([vals], dtype=np.float32)


def read_latents(path) -> np.ndarray:
    """Latent rows (B, zdim) from a .npy array or a text file (one latent per line)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such latent file")
    try:
        if path.lower().endswith(".npy"):
            z = np.load(path, allow_pickle=False)
        else:
            with open(path) as f:
                text = f.read()
            z = np.loadtxt(path, ndmin=2, delimiter="," if "," in text else None)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: not a readable latent file ({e}); expected a .npy array or "
                         "a text file with one latent per line") from None
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.size == 0:
        raise InputError(f"{path}: expected a (rows, zdim) array of latents, got shape {z.shape}")
    return z


def read_selection(path, n: int) -> np.ndarray:
    """Sorted unique particle indices from a .npy (indices or an N-long boolean mask) or
    a text file (whole numbers separated by spaces, commas or new lines; '#' comments)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such selection file")
    if path.lower().endswith(".npy"):
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{path}: not a readable .npy file ({e})") from None
        a = np.asarray(a).reshape(-1)
        if a.dtype == bool:
            if len(a) != n:
                raise InputError(f"{path}: a boolean selection must have one entry per particle "
                                 f"({n}), got {len(a)}")
            return np.flatnonzero(a)
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise InputError(f"{path}: particle indices must be whole numbers")
        idx = a.astype(np.int64)
    else:
        words = []
        with open(path) as f:
            for line in f:
                words += line.split("#", 1)[0].replace(",", " ").split()
        try:
            idx = np.array([int(w) for w in words], dtype=np.int64)
        except ValueError:
            bad = next(w for w in words if not w.lstrip("-").isdigit())
            raise InputError(f"{path}: {bad!r} is not a particle index (whole number)") from None
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise InputError(f"{path}: particle index {int(bad[0])} is out of range: this result has "
                         f"{n} particles (0 to {n - 1})")
    return np.unique(idx)


PLOT_VIEWS = ("pca", "umap")


def read_umap(result: Result) -> np.ndarray | None:
    """The (N, 2) UMAP embedding written by ``gaussianem analyze``
    (``analysis/embeddings.npz``), or None when there is none for these latents."""
    path = result.run.embeddings
    if result.z is None or not os.path.exists(path):
        return None
    try:
        with np.load(path) as f:
            emb = f["umap"] if "umap" in f.files else None
    except (OSError, ValueError):
        return None
    if emb is None or emb.shape != (len(result.z), 2):
        return None
    return np.asarray(emb, dtype=np.float64)


def plot_coordinates(result: Result, view: str = "pca") -> np.ndarray:
    """(N, 2) positions of the particles in the latent plot: their scores along PC1 and
    PC2 of the whole latent in standard deviations (0 for PC2 of a 1-D latent), or the
    UMAP of ``gaussianem analyze`` (``view="umap"``)."""
    if view not in PLOT_VIEWS:
        raise InputError(f"plot must be one of {', '.join(PLOT_VIEWS)}, not {view!r}")
    if view == "umap":
        result.require_z()
        emb = read_umap(result)
        if emb is None:
            raise ResultError(f"{result.outdir} has no UMAP of its latents: run 'gaussianem analyze' "
                              "first, or select on the PCA plot")
        return emb
    p = result.pca()
    s = np.asarray(p.scores, dtype=np.float64)[:, :2] / np.asarray(p.sd, dtype=np.float64)[:2]
    return s if s.shape[1] == 2 else np.column_stack([s[:, 0], np.zeros(len(s))])


def points_in_polygon(xy, vertices) -> np.ndarray:
    """Boolean mask of the points ``xy`` (N, 2) inside the polygon ``vertices`` (M, 2),
    M >= 3, closed implicitly (even-odd rule, as a lasso is filled). A box is the polygon
    of its four corners."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
        raise InputError(f"a region needs at least 3 (x, y) corners, got {np.asarray(vertices).size} "
                         "numbers; a box is x0,y0,x1,y1")
    x, y = xy[:, 0][:, None], xy[:, 1][:, None]
    x1, y1 = v[:, 0][None], v[:, 1][None]
    x2, y2 = np.roll(v[:, 0], -1)[None], np.roll(v[:, 1], -1)[None]
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return np.count_nonzero(crosses & (x < x_at), axis=1) % 2 == 1


def box_corners(box) -> np.ndarray:
    """The four corners (4, 2) of the box ``(x0, y0, x1, y1)`` (either corner order)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


@dataclass
class Selection:
    indices: np.ndarray          # sorted particle indices (0-based)
    what: str                    # in words, for messages and logs


def select_particles(result: Result, *, clusters=None, k: int | None = None, particles=None, pc_range=None,
                     part: str = "all", kmeans: KMeans | None = None, seed: int = 0,
                     save_kmeans: bool = False, region=None, view: str = "pca",
                     outliers: bool = False, low_signal: bool = False) -> Selection:
    """Exactly one of: k-means ``clusters`` (a list of cluster numbers, with ``k``, or a
    precomputed ``kmeans``), ``particles`` (a selection file, :func:`read_selection`),
    ``pc_range`` ``(PC, LO, HI)``: the particles whose score along principal component PC
    of the latent ``part`` (all, conf or comp) lies between LO and HI standard deviations,
    ``region``: the corners (M, 2) of a polygon (a lasso, or a box's four corners) on
    the latent plot ``view`` (:func:`plot_coordinates`), the particles inside it, or
    ``outliers``: the particles the decoder moves far more than the rest (the rule of the
    run health's ``motion_outliers``: :func:`gaussianem.train.health.outlier_cut`), on the
    matrix's junk-protein cell 94-97% of the junk particles and nothing else, or
    ``low_signal``: the particles whose intensity scale sits at its lower clip
    (:meth:`gaussianem.model.intensity.IntensityScale.low_signal`; pure-noise junk)."""
    given = [n for n, v in (("clusters", clusters), ("particles", particles), ("pc_range", pc_range),
                            ("region", region), ("outliers", outliers or None),
                            ("low_signal", low_signal or None)) if v is not None]
    if len(given) != 1:
        raise ResultError("give one of clusters, a particle file, a PC range, a plot region, the motion "
                          "outliers and the low-signal particles to choose particles" + (f" (got {' and '.join(given)})" if given else ""))
    n = len(result.require_z())
    if low_signal:
        low = result.intensity.low_signal(source_particles(result).optics_group)
        return Selection(np.flatnonzero(low), "the low-signal particles: images matching the consensus at "
                         "under half their optics group's scale")
    if outliers:
        moved = health.particle_motion(result.model, result.z)
        cut = health.outlier_cut(moved)
        return Selection(np.flatnonzero(moved > cut), f"the motion outliers: moved over {cut:.2f} A RMS "
                         f"(median particle {np.median(moved):.2f} A)")
    if region is not None:
        inside = points_in_polygon(plot_coordinates(result, view), region)
        axes = "PC1/PC2 (sd)" if view == "pca" else "UMAP"
        return Selection(np.flatnonzero(inside), f"a region of {len(np.asarray(region))} corners on the {axes} plot")
    if clusters is not None:
        km = kmeans or kmeans_for_result(result, k or 8, seed=seed, save=save_kmeans)
        clusters = sorted({int(c) for c in np.atleast_1d(clusters)})
        bad = [c for c in clusters if not 0 <= c < km.k]
        if bad:
            raise ResultError(f"cluster {bad[0]} does not exist: k-means with k={km.k} has clusters 0 to {km.k - 1}")
        return Selection(np.flatnonzero(np.isin(km.labels, clusters)),
                         f"cluster {','.join(map(str, clusters))} of k-means with k={km.k}")
    if particles is not None:
        return Selection(read_selection(particles, n), f"the particles listed in {particles}")
    comp, lo, hi = pc_range
    if comp != int(comp):
        raise ResultError(f"a PC range takes a principal component number first, got {comp}")
    comp = int(comp)
    p = result.pca(part)
    if not 1 <= comp <= len(p.components):
        raise ResultError(f"principal component {comp} does not exist: this result has {len(p.components)} "
                          f"(1 to {len(p.components)})")
    lo, hi = min(lo, hi), max(lo, hi)
    s = p.scores[:, comp - 1] / p.sd[comp - 1]
    name = f"PC{comp}" + ("" if part == "all" else f" of z_{part}")
    return Selection(np.flatnonzero((s >= lo) & (s <= hi)), f"{name} between {lo:g} and {hi:g} sd")


# ---------------------------------------------------------------------------------------
# The particle file

def source_particles(result: Result, particles: str | None = None, datadir: str | None = None):
    """The metadata (:class:`~gaussianem.io.particle_data.ParticleData`, images unchecked)
    of the particle file the result was trained on (``config.json``), or of ``particles``,
    checked to hold one row per latent."""
    n = len(result.require_z())
    train = result.config.get("train", {})
    src_path = particles or train.get("particles")
    if not src_path:
        raise ResultError(f"{result.outdir}: config.json does not name the particle file; give --particles")
    if not os.path.exists(src_path):
        raise ResultError(f"the particle file of this result, {src_path}, is missing; give --particles")
    extra = {} if particles else {k: train.get(k) for k in ("poses", "ctf", "ind")}
    if datadir is None and not particles:
        datadir = train.get("datadir")
    data = load_particles(src_path, datadir=datadir, check_images=False, **extra)
    if len(data) != n:
        raise ResultError(f"{src_path} holds {len(data)} particles but this result has latents for {n}; "
                          "give the particle file the result was trained on")
    return data


def particle_columns(result: Result, particles: str | None = None) -> dict:
    """Per-particle numbers of the result's particle file, name -> (N,) float64: ``defocus``
    (the mean of the two defocus values, Angstrom) and ``optics group`` (1-based) for
    every format, then every numeric column of a .star file's particle table (e.g.
    ``rlnClassNumber``, ``rlnDefocusU``, ``rlnOpticsGroup``) or every numeric scalar field of
    a .cs file (e.g. ``alignments3D/class``, ``ctf/df1_A``)."""
    data = source_particles(result, particles)
    cols = {"defocus": 0.5 * (np.asarray(data.ctf.defocus_u, np.float64) + np.asarray(data.ctf.defocus_v, np.float64)),
            "optics group": np.asarray(data.optics_group, np.float64)}
    table = data.table
    if table is None:
        return cols
    if table.attrs.get("format") == "cs":
        rec = np.load(data.source, allow_pickle=False)
        rows = np.asarray(table["cs_row"], dtype=np.int64)
        for name in rec.dtype.names or ():
            f = rec.dtype.fields[name][0]
            if f.shape == () and (np.issubdtype(f, np.number) or f == bool) and name != "uid":
                cols[name] = np.asarray(rec[name][rows], dtype=np.float64)
        return cols
    import pandas as pd
    for name in table.columns:
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
        if len(values) and np.all(np.isfinite(values)):
            cols[str(name)] = values
    return cols


# ---------------------------------------------------------------------------------------
# Export

def export_subset(result: Result, idx, out=None, invert: bool = False, particles: str | None = None,
                  datadir: str | None = None, *, labels=None, relion_project=None, job_name=None,
                  command: str = "") -> dict:
    """Write the particles ``idx`` (or all others with ``invert``) of the result's
    particle file (or ``particles``) to ``out`` (.star or .cs) with their original rows.

    ``labels`` (one 0-based k-means cluster per particle of the result) are written with
    them: ``rlnClassNumber`` = cluster + 1 in a .star file, ``alignments3D/class`` in a
    .cs file. ``relion_project`` (instead of ``out``): write a RELION job,
    ``External/jobNNN/particles.star``, into that project, with image names relative to
    it, and add it to the project's pipeline
    (:func:`gaussianem.io.relion_project.add_external_job`; ``job_name`` is its alias,
    ``command`` goes into its note.txt). .cs records made from another format get
    ``blob/sign`` -1 when the result was trained with ``invert`` (dark protein), else +1.
    Returns ``{"file", "n", "source", "indices", "job", "absolute_names"}`` (``job``:
    ``External/jobNNN/`` or None; ``absolute_names``: images named by absolute path in a
    project's file, their stacks being outside it).
    """
    if (out is None) == (relion_project is None):
        raise InputError("give either an output file or a RELION project folder")
    n = len(result.require_z())
    if relion_project is not None:
        relion_project = check_project(relion_project)
        if job_name is not None:
            check_alias(job_name)
    elif os.path.splitext(os.fspath(out))[1].lower() not in (".star", ".cs"):
        raise InputError(f"{out}: the output must be a .star or .cs file")
    data = source_particles(result, particles, datadir)
    src_path = data.source
    train = result.config.get("train", {})
    idx = np.unique(np.asarray(idx, dtype=np.int64).reshape(-1))
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"particle index {int(idx[(idx < 0) | (idx >= n)][0])} is out of range: "
                         f"this result has {n} particles (0 to {n - 1})")
    if invert:
        idx = np.setdiff1d(np.arange(n), idx)
    if idx.size == 0:
        raise InputError("the selection is empty: nothing to export")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n:
            raise ResultError(f"{len(labels)} cluster labels for a result of {n} particles")
        labels = labels[idx]
    sign = -1.0 if train.get("invert", False) else 1.0
    written = {}
    job = None
    if relion_project is not None:
        def write(path):
            written.update(write_subset(data, idx, path, names_from=relion_project, labels=labels))
        added = add_external_job(relion_project, write, alias=job_name, command=command,
                                 input_star=src_path if src_path.lower().endswith(".star") else None)
        out, job = added["file"], added["job"]
    else:
        out = os.fspath(out)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        written = write_subset(data, idx, out, labels=labels, sign=sign)
    return {"file": os.path.abspath(out), "n": int(idx.size), "source": os.path.abspath(src_path),
            "indices": idx, "job": job, "absolute_names": written.get("absolute_names", 0)}
