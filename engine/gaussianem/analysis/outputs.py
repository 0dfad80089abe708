"""Maps and atomic models generated from latents, written beside a result."""

from __future__ import annotations

import os

import numpy as np

from gaussianem.analysis.domain_fit import fitted_models
from gaussianem.analysis.result import Result
from gaussianem.errors import InputError
from gaussianem.io.atomic import write_array_text
from gaussianem.io.models import bond_length_rms_change, bond_pairs, read_model, write_model
from gaussianem.io.mrc import write_map
from gaussianem.physics.grid import Grid

VOLUME_CHUNK = 16            # latents decoded at once when writing many volumes


def model_extension(model_path: str) -> str:
    """The output extension for models read from ``model_path`` (.pdb or .cif)."""
    name = os.fspath(model_path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    return ".pdb" if ext in (".pdb", ".ent") else ".cif"


def output_grid(result: Result, box: int | None = None, apix: float | None = None) -> Grid:
    """The grid generated maps are written on: the consensus grid, or ``box`` voxels of
    ``apix`` (default: the same physical extent) about the same centre."""
    if box is not None and int(box) < 2:
        raise InputError(f"--box must be at least 2 voxels, got {box}")
    if apix is not None and not apix > 0:
        raise InputError(f"--apix must be positive, got {apix}")
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


def write_models(result: Result, model_path: str, z: np.ndarray, folder: str,
                 prefix: str = "model", chunk: int = 64, reference=None, fit: dict | None = None,
                 progress=print) -> list[dict]:
    """Write the atomic model displaced to each latent row, ``folder/model_000.pdb``
    (or .cif, as the input) ... Returns per model ``{"file", "bond_length_rms_change"}``
    (Angstrom, over the input's covalent bonds; with ``fit`` also ``"domains"`` and
    ``"fit"``). ``reference``: the latent the model stands for (displacements relative to
    it; None: relative to the consensus). ``fit``: keyword arguments of
    :func:`gaussianem.analysis.domain_fit.fitted_models` (``particles``, ``steps``, ``sort``) to fit
    the model's rigid domains to each state's particles; None: displaced only. Raises
    :class:`~gaussianem.model.displace.ModelOutsideMapError` if the model does not overlap the
    map."""
    z = result.check_z(z)
    model = read_model(model_path)
    pairs = bond_pairs(model)
    interp = result.interpolator(model.coords, name=os.fspath(model_path), bonds=pairs, reference=reference,
                                 residues=model.sequence)
    ext = model_extension(model_path)
    extra = [{}] * len(z)
    if fit is None:
        moved = []
        for s in range(0, len(z), chunk):
            m = result.displace_model(model, z[s:s + chunk], interpolator=interp, reference=reference)
            moved += m if isinstance(m, list) else [m]
    else:
        moved, domains, fits = fitted_models(result, model, z, interp, reference=reference, progress=progress,
                                             **fit)
        extra = [{"domains": domains.summary(), "fit": f.summary()} for f in fits]
    os.makedirs(folder, exist_ok=True)
    remove_stale(folder, prefix, (".pdb", ".cif"), len(z))
    out = []
    for i, m in enumerate(moved):
        p = os.path.join(folder, f"{prefix}_{i:03d}{ext}")
        write_model(p, m)
        out.append({"file": p, "bond_length_rms_change": bond_length_rms_change(model, m.coords, pairs), **extra[i]})
    return out


GENERATED = ("vol", "model")       # prefixes of numbered files generate writes
GENERATED_FILES = ("z.txt", "generate.json")


def generated_files(folder: str) -> list[str]:
    """Names of files in ``folder`` that an earlier ``generate`` wrote (numbered volumes
    and models, z.txt, generate.json), sorted; [] for a missing or foreign folder."""
    if not os.path.isdir(folder):
        return []
    out = []
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        head, _, num = stem.rpartition("_")
        if name in GENERATED_FILES or (head in GENERATED and ext in (".mrc", ".pdb", ".cif")
                                       and num.isdigit() and num == f"{int(num):03d}"):
            out.append(name)
    return sorted(out)


def write_volumes(result: Result, z: np.ndarray, folder: str, grid: Grid | None = None,
                  prefix: str = "vol", chunk: int = VOLUME_CHUNK, kind: str = "gaussians") -> list[str]:
    """Write one map per latent row, ``folder/vol_000.mrc`` ..., on ``grid`` (default
    the consensus grid); also ``folder/z.txt`` with the latents. ``kind``: maps rendered
    from the Gaussians (default) or the deformed consensus map (``Result.volume``).
    Higher-numbered ``vol_NNN.mrc`` left from an earlier run are removed. Returns the paths."""
    z = result.check_z(z)
    grid = grid or result.grid
    if kind == "deformed":
        result.consensus_map()              # its clear error before anything is written
    os.makedirs(folder, exist_ok=True)
    remove_stale(folder, prefix, (".mrc",), len(z))
    write_array_text(os.path.join(folder, "z.txt"), z, fmt="%.7g",
                     header="latent of each volume, one per row, vol_000 first")
    paths = []
    for s in range(0, len(z), chunk):
        vols = result.volume(z[s:s + chunk], box=grid.box, apix=grid.apix, kind=kind)
        vols = vols[None] if vols.ndim == 3 else vols
        for i, v in enumerate(vols):
            p = os.path.join(folder, f"{prefix}_{s + i:03d}.mrc")
            write_map(p, v, grid.apix, grid.origin)
            paths.append(p)
    return paths
