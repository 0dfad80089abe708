"""Latents and particle selections in, particle subsets out.

* :func:`parse_latent` / :func:`read_latents`: latent vectors from a command line or a
  file (.txt/.csv/.npy), checked against the result's latent size by the caller.
* :func:`read_selection`: particle indices or a boolean mask from a file.
* :func:`export_subset`: the selected particles of a result's particle file written back
  to RELION ``.star`` or cryoSPARC ``.cs`` with their original rows and optics table.
"""

from __future__ import annotations

import os

import numpy as np

from gaussianem.analysis.result import Result
from gaussianem.errors import ResultError
from gaussianem.io.particles import load_particles
from gaussianem.io.particles import write_subset


def parse_latent(text: str) -> np.ndarray:
    """``"0.1 -0.3 2"`` or ``"0.1,-0.3,2"`` -> (1, zdim) float32."""
    parts = str(text).replace(",", " ").split()
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--z {text!r}: expected numbers separated by spaces or commas") from None
    if not vals:
        raise ValueError("--z is empty: expected the latent's values, e.g. --z \"0.1 -0.3 2\"")
    return np.array([vals], dtype=np.float32)


def read_latents(path) -> np.ndarray:
    """Latent rows (B, zdim) from a .npy array or a text file (one latent per line)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such latent file")
    try:
        if path.lower().endswith(".npy"):
            z = np.load(path, allow_pickle=False)
        else:
            with open(path) as f:
                text = f.read()
            z = np.loadtxt(path, ndmin=2, delimiter="," if "," in text else None)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable latent file ({e}); expected a .npy array or "
                         "a text file with one latent per line") from None
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.size == 0:
        raise ValueError(f"{path}: expected a (rows, zdim) array of latents, got shape {z.shape}")
    return z


def read_selection(path, n: int) -> np.ndarray:
    """Sorted unique particle indices from a .npy (indices or an N-long boolean mask) or
    a text file (whole numbers separated by spaces, commas or new lines; '#' comments)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such selection file")
    if path.lower().endswith(".npy"):
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: not a readable .npy file ({e})") from None
        a = np.asarray(a).reshape(-1)
        if a.dtype == bool:
            if len(a) != n:
                raise ValueError(f"{path}: a boolean selection must have one entry per particle "
                                 f"({n}), got {len(a)}")
            return np.flatnonzero(a)
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise ValueError(f"{path}: particle indices must be whole numbers")
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
            raise ValueError(f"{path}: {bad!r} is not a particle index (whole number)") from None
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ValueError(f"{path}: particle index {int(bad[0])} is out of range: this result has "
                         f"{n} particles (0 to {n - 1})")
    return np.unique(idx)


# ---------------------------------------------------------------------------------------
# Export

def export_subset(result: Result, idx, out, invert: bool = False, particles: str | None = None,
                  datadir: str | None = None) -> dict:
    """Write the particles ``idx`` (or all others with ``invert``) of the result's
    particle file (or ``particles``) to ``out`` (.star or .cs) with their original rows.
    Returns ``{"file", "n", "source"}``."""
    n = len(result.require_z())
    src_path = particles or result.config.get("train", {}).get("particles")
    if not src_path:
        raise ResultError(f"{result.outdir}: config.json does not name the particle file; give --particles")
    if not os.path.exists(src_path):
        raise ResultError(f"the particle file of this result, {src_path}, is missing; give --particles")
    if datadir is None and not particles:
        datadir = result.config.get("train", {}).get("datadir")
    data = load_particles(src_path, datadir=datadir, check_images=False)
    if len(data) != n:
        raise ResultError(f"{src_path} holds {len(data)} particles but this result has latents for {n}; "
                          "give the particle file the result was trained on")
    idx = np.unique(np.asarray(idx, dtype=np.int64).reshape(-1))
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"particle index {int(idx[(idx < 0) | (idx >= n)][0])} is out of range: "
                         f"this result has {n} particles (0 to {n - 1})")
    if invert:
        idx = np.setdiff1d(np.arange(n), idx)
    if idx.size == 0:
        raise ValueError("the selection is empty: nothing to export")
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    write_subset(data, idx, out)
    return {"file": os.path.abspath(out), "n": int(idx.size), "source": os.path.abspath(src_path),
            "indices": idx}
