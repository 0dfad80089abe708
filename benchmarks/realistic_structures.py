"""The realistic simulator's structures: where they come from and how they are read.

``benchmarks/realistic.py``'s helpers (re-exported there): the data package (MDAnalysisTests,
pinned; its data folder found without importing it), the reserved adenylate kinase files,
reading a structure by file name or path (``.bz2`` decompressed first), chain/residue
selections, and the all-atom RMSD.
"""

from __future__ import annotations

import bz2
import importlib.util
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if os.path.join(ROOT, "engine") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "engine"))

import numpy as np  # noqa: E402

DATA_PACKAGE = "MDAnalysisTests"
DATA_PACKAGE_VERSION = "2.11.0"
RESERVED = "adk"                      # adenylate kinase: kept for independent evaluation


def data_dir() -> str:
    """MDAnalysisTests' data folder, found without importing the package."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{DATA_PACKAGE} is not installed: run bash benchmarks/setup_robustness.sh "
                                f"(pip install --no-deps {DATA_PACKAGE}=={DATA_PACKAGE_VERSION})")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def structure_path(name: str) -> str:
    if RESERVED in os.path.basename(name).lower():
        raise ValueError(f"{name}: the adenylate kinase files are reserved for independent evaluation")
    if os.path.isfile(name):
        return os.path.abspath(name)
    path = os.path.join(data_dir(), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no structure {name!r} in {data_dir()}")
    return path


def load_structure(name: str):
    """AtomicModel of a structure (gemmi reads .gz itself; .bz2 is decompressed first)."""
    from gaussianem.io.models import read_model
    path = structure_path(name)
    if not path.endswith(".bz2"):
        return read_model(path)
    tmpdir = tempfile.mkdtemp(prefix="realistic-")
    try:
        plain = os.path.join(tmpdir, os.path.basename(path)[:-4])
        with bz2.open(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        model = read_model(plain)
        model.path = path
        return model
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def parse_selection(model, text):
    """(M,) bool mask of 'A' or 'A:10-60' (chain, residue numbers both ends included)."""
    chain, _, rng = text.partition(":")
    residues = tuple(int(v) for v in rng.split("-")) if rng else None
    mask = model.select(chain=chain, residues=residues)
    if not mask.any():
        raise ValueError(f"the selection {text!r} matches no atoms (chains: {model.chains()})")
    return mask


def rmsd(a, b) -> float:
    return float(np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).sum(1).mean()))
