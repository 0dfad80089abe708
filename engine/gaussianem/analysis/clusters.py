"""K-means clusters and UMAP embeddings of latents (with cluster centres at real
particles' latents, saved beside a result and reused)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gaussianem.analysis.result import Result
from gaussianem.errors import InputError
from gaussianem.io.atomic import write_array_text

UMAP_MIN_PARTICLES = 20


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
        raise InputError(f"k-means needs at least 1 cluster, got {k}")
    if z.ndim != 2 or len(z) < k:
        raise InputError(f"k-means with {k} clusters needs at least {k} particles, got {len(z)}")
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
    return os.path.join(result.run.analysis, f"kmeans{int(k)}")


def kmeans_for_result(result: Result, k: int, seed: int = 0, reuse: bool = True,
                      save: bool = False) -> KMeans:
    """K-means of a result's latents: the saved ``analysis/kmeansK/`` when it is newer
    than ``latents.npz`` (and ``reuse``), else computed with :func:`kmeans` (and, with
    ``save``, saved there with :func:`save_kmeans`)."""
    z = result.require_z()
    if reuse:
        km = load_kmeans(kmeans_dir(result, k), z, newer_than=os.path.getmtime(result.run.latents_file))
        if km is not None and km.k == int(k):
            return km
    km = kmeans(z, k, seed=seed)
    if save:
        save_kmeans(km, kmeans_dir(result, k))
    return km


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


def parse_clusters(text: str, k: int) -> list[int]:
    """``"0,2"`` -> [0, 2], checked against ``k`` clusters."""
    out = []
    for part in str(text).replace(" ", ",").split(","):
        if not part:
            continue
        try:
            c = int(part)
        except ValueError:
            raise InputError(f"cluster {part!r} is not a whole number") from None
        if not 0 <= c < k:
            raise InputError(f"cluster {c} does not exist: k-means with k={k} has clusters 0 to {k - 1}")
        out.append(c)
    if not out:
        raise InputError("no cluster given (expected e.g. --cluster 0 or --cluster 0,3)")
    return sorted(set(out))


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


def umap_embedding(z: np.ndarray, seed: int = 0, log: Callable | None = None) -> np.ndarray | None:
    """A 2D UMAP embedding (N, 2) of the latents, or None (with a note to ``log``) when
    there are fewer than 20 particles or umap-learn is missing or fails."""
    z = np.asarray(z, dtype=np.float32)
    if len(z) < UMAP_MIN_PARTICLES:
        if log is not None:
            log(f"UMAP skipped: {len(z)} particles (needs at least {UMAP_MIN_PARTICLES})")
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
            emb = umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1),
                            random_state=seed).fit_transform(z)
    except Exception as e:  # noqa: BLE001 (import errors, numba errors, degenerate input)
        if log is not None:
            log(f"UMAP skipped: {type(e).__name__}: {e}")
        return None
    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape != (len(z), 2) or not np.all(np.isfinite(emb)):
        if log is not None:
            log("UMAP skipped: the embedding was not finite")
        return None
    return emb
