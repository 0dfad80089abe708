"""Particle metadata in the engine's conventions (:class:`ParticleData`) and the
checks the readers share: image paths resolved, optics groups numbered, every stack
present with the indexed images and the expected box.

:class:`ParticleData` holds only metadata (see :mod:`gaussianem.physics.poses` and
:mod:`gaussianem.physics.ctf`): RELION rotation matrices ``A``, RELION origins in
Angstrom and per-particle CTF parameters in RELION units. Images stay on disk
(:mod:`gaussianem.io.images`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from gaussianem.errors import ParticleFileError
from gaussianem.io.mrc import read_header
from gaussianem.physics.ctf import CTFParams

PLACEHOLDER_APIX = 1.0   # what many programs write in an MRC header that has no pixel size
APIX_RTOL = 0.005        # header and metadata pixel sizes closer than this agree


class ParticleFileWarning(UserWarning):
    """Something in a particle file that the reader handled in a stated way (the message
    says what it found and what it did) but that may not be what its writer meant."""


def warn(message: str) -> None:
    warnings.warn(message, ParticleFileWarning, stacklevel=3)


@dataclass
class ParticleData:
    """Metadata of N particles; images stay on disk (see :class:`ParticleImages`).

    ``table`` holds the source file's particle rows for subset export: for a ``.star`` file
    the particle table (``table.attrs["optics"]`` holds the optics table as a dict of
    column lists, or None for RELION 3.0 files; ``table.attrs["block"]`` the particle
    block's name); for a ``.cs`` file a table with the rows' ``uid`` and their row number
    ``cs_row`` in the source file (``table.attrs["passthrough"]`` names the passthrough
    file used, if any). ``table.attrs["format"]`` is ``"star"`` or ``"cs"``.
    """

    image_paths: np.ndarray       # (N,) object array of absolute stack paths
    image_indices: np.ndarray     # (N,) int64, 0-based index within the stack
    rotations: np.ndarray         # (N, 3, 3) float64 RELION matrices A
    shifts: np.ndarray            # (N, 2) float64 RELION origins in Angstrom
    ctf: CTFParams
    apix: np.ndarray              # (N,) float64 Angstrom/pixel
    box: int                      # image size in pixels, shared by all particles
    optics_group: np.ndarray      # (N,) int64
    source: str                   # path of the .star/.cs file read
    table: Optional["pandas.DataFrame"] = None  # noqa: F821 (pandas imported lazily)

    def __len__(self) -> int:
        return len(self.image_indices)

    def subset(self, idx) -> "ParticleData":
        """The particles selected by ``idx`` (integer indices or a boolean mask)."""
        idx = np.asarray(idx)
        table = None if self.table is None else self.table.iloc[idx]
        return ParticleData(
            image_paths=self.image_paths[idx], image_indices=self.image_indices[idx],
            rotations=self.rotations[idx], shifts=self.shifts[idx],
            ctf=self.ctf.subset(idx), apix=self.apix[idx], box=self.box,
            optics_group=self.optics_group[idx], source=self.source, table=table)


def resolve_stack_paths(names, source: str, datadir=None, what: str = "image path") -> np.ndarray:
    """Absolute paths of the stacks named (relative or absolute) in ``source``.

    A relative name is looked up, first match wins: with ``datadir``, as ``datadir/name``
    then ``datadir/basename(name)``; without it, relative to ``source``'s directory and
    then each of its ancestors (RELION and cryoSPARC write paths relative to the project
    directory, which usually is an ancestor of the job directory holding the file). An
    absolute name is used as it is, or else (with ``datadir``) as ``datadir/basename``.
    Returns an object array aligned with ``names``; raises if a name is not found.
    """
    names = np.asarray(names, dtype=object)
    uniq, inverse = np.unique(names, return_inverse=True)
    base = os.path.dirname(os.path.abspath(source))
    if datadir is not None:
        datadir = os.path.abspath(os.fspath(datadir))
        if not os.path.isdir(datadir):
            raise ParticleFileError(f"{source}: data directory {datadir} does not exist")
        roots = [datadir]
    else:
        roots, d = [], base
        while True:
            roots.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    resolved = []
    last_root = roots[0]  # stacks of one file usually share a root: try it first
    for name in uniq:
        name = str(name)
        if os.path.isabs(name):
            candidates = [(None, name)]
        else:
            order = [last_root] + [r for r in roots if r != last_root]
            candidates = [(r, os.path.join(r, name)) for r in order]
        if datadir is not None:  # e.g. absolute paths from another machine
            candidates.append((None, os.path.join(datadir, os.path.basename(name))))
        for root, c in candidates:
            if os.path.isfile(c):
                if root is not None:
                    last_root = root
                resolved.append(os.path.normpath(c))
                break
        else:
            where = (f"in data directory {datadir}" if datadir is not None
                     else f"relative to {base} or any of its parent directories; pass datadir "
                          "to say where the stacks are")
            row = int(np.flatnonzero(names == name)[0]) + 1
            raise ParticleFileError(f"{source}: {what} {name!r} (row {row}) not found {where}")
    out = np.empty(len(uniq), dtype=object)
    out[:] = resolved
    return out[inverse]


def stack_name_for(stack_path: str, folder: str) -> str:
    """How a written metadata file in ``folder`` names ``stack_path``: relative to
    ``folder`` when the stack lies inside it (keeps a data set movable), else absolute."""
    stack_path = os.path.abspath(str(stack_path))
    folder = os.path.abspath(folder)
    try:
        rel = os.path.relpath(stack_path, folder)
    except ValueError:  # different drives on Windows
        return stack_path
    outside = rel == os.pardir or rel.startswith(os.pardir + os.sep)
    return stack_path if outside else rel.replace(os.sep, "/")


def group_optics(*columns) -> np.ndarray:
    """1-based group numbers for the unique combinations of the given per-particle columns,
    numbered in order of first appearance (for formats without explicit optics groups)."""
    stacked = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each unique row by first appearance
    return (order[inverse.reshape(-1)] + 1).astype(np.int64)


def ctf_envelope(bfactor, scale, source: str, bfactor_field: str, scale_field: str) -> tuple:
    """The CTF's B-factor and scale factor as the engine applies them (RELION's
    ``scale * exp(-B k^2 / 4)``), checked.

    A negative B would make the envelope grow with frequency: RELION applies it as it is,
    but a negative ``rlnCtfBfactor`` is how Warp (1.x) writes dose weighting (``-4`` times the
    cumulative dose, meaning attenuation in Warp's own ``exp(+B k^2 / 4)``), so negative
    values are set to 0 (no envelope, never an amplification) with one warning naming the
    file and the range. A scale factor must be positive.
    """
    b = np.asarray(bfactor, dtype=np.float64).copy()
    negative = b < 0
    if negative.any():
        warn(f"{source}: {bfactor_field} is negative for {int(negative.sum())} of {b.size} "
             f"particles ({b[negative].min():g} to {b[negative].max():g} A^2); RELION's CTF "
             "envelope exp(-B k^2/4) would then amplify high frequencies (Warp writes dose "
             "weighting so: B = -4 x cumulative dose). Using B = 0 (no envelope) for them.")
        b[negative] = 0.0
    s = np.asarray(scale, dtype=np.float64)
    bad = np.flatnonzero(~(s > 0))
    if bad.size:
        raise ParticleFileError(f"{source}: {scale_field}, row {bad[0] + 1}: {s[bad[0]]:g}; "
                                "expected a positive factor multiplying the CTF (1 = none)")
    return b, s


def particle_box(paths: np.ndarray, indices: np.ndarray, source: str, expected_box,
                 check_images: bool, size_field: str, apix=None) -> int:
    """The particles' box: from the stacks' headers (checked) when ``check_images``, else
    from the metadata's ``expected_box`` or, for metadata without one (RELION 3.0 and Warp
    files have no ``rlnImageSize``), from the header of the first stack alone (so that a
    result trained on such a file reads it back for export and reconstruction);
    ``size_field`` names where the metadata keeps it.
    With ``apix`` (per particle) the headers' pixel sizes are compared with it
    (:func:`check_images_and_box`). Images named twice are reported
    (:func:`warn_duplicates`)."""
    warn_duplicates(paths, indices, source)
    if check_images:
        return check_images_and_box(paths, indices, source, expected_box, apix)
    if expected_box is not None:
        return int(expected_box)
    if not len(paths):
        raise ParticleFileError(f"{source}: no particles")
    h = read_header(paths[0])
    if h.nx != h.ny:
        raise ParticleFileError(f"{paths[0]}: images are {h.nx} x {h.ny} pixels; expected square "
                                f"images (stack used by {source})")
    return int(h.nx)


def warn_duplicates(paths: np.ndarray, indices: np.ndarray, source: str) -> None:
    """Warn when rows name the same image (same stack and index): the particle would count
    twice in training, in its half set and in any export (a merge of two selections that
    overlap, or a subset joined again with its source, makes such files)."""
    n = len(indices)
    if n < 2:
        return
    _, stack = np.unique(np.asarray(paths, dtype=str), return_inverse=True)
    key = stack.reshape(-1).astype(np.int64) * (int(np.max(indices)) + 1) + np.asarray(indices, np.int64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    repeat = np.flatnonzero(first[inverse.reshape(-1)] != np.arange(n))
    if not repeat.size:
        return
    r = int(repeat[0])
    f = int(first[inverse.reshape(-1)[r]])
    warn(f"{source}: {repeat.size} of {n} particles name an image that an earlier row already names, "
         f"e.g. {int(indices[r]) + 1}@{paths[r]} (rows {f + 1} and {r + 1}); each row is used as a "
         "particle of its own, so these images count twice. Remove the repeated rows if they are "
         "not meant (two overlapping selections joined?).")


def check_images_and_box(paths: np.ndarray, indices: np.ndarray, source: str,
                         expected_box=None, apix=None) -> int:
    """Check every stack's header (exists, readable, square, holds its indices) and return
    the common box size; ``expected_box`` (from the metadata) must agree when given.

    With ``apix`` (the metadata's pixel size per particle), each header's pixel size is
    compared with it: the metadata's is used (as RELION and cryoSPARC do), with a warning
    when a header gives a different one (e.g. a stack binned after the metadata was
    written) or the placeholder 1.0 A.
    """
    uniq, first, inverse = np.unique(paths, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    max_index = np.full(len(uniq), -1, dtype=np.int64)
    np.maximum.at(max_index, inverse, indices)
    box, box_stack = None, None
    pixel_sizes = []
    for k, p in enumerate(uniq):
        h = read_header(p)
        if apix is not None:
            pixel_sizes.append((p, h.apix, float(np.asarray(apix)[first[k]])))
        if h.nx != h.ny:
            raise ParticleFileError(f"{p}: images are {h.nx} x {h.ny} pixels; expected square "
                                    f"images (stack used by {source})")
        if max_index[k] >= h.nz:
            row = int(np.flatnonzero((inverse == k) & (indices == max_index[k]))[0])
            raise ParticleFileError(
                f"{source}: row {row + 1} asks for image {max_index[k] + 1} (1-based) of {p}, "
                f"which holds only {h.nz} image(s)")
        if box is None:
            box, box_stack = h.nx, p
        elif h.nx != box:
            raise ParticleFileError(f"{source}: stacks have different box sizes: {box_stack} is "
                                    f"{box} px, {p} is {h.nx} px; all particles must share one box")
    if box is None:
        raise ParticleFileError(f"{source}: no particles")
    differ, placeholder = _compare_pixel_sizes(pixel_sizes)
    if expected_box is not None and int(expected_box) != box:
        why = ""
        if differ:
            why = (f"; their header gives {differ[0][1]:.4g} A pixels where the metadata say "
                   f"{differ[0][2]:.4g} A: were the stacks binned after the metadata was written?")
        raise ParticleFileError(f"{source}: the metadata give an image size of {int(expected_box)} px "
                                f"but the stacks (e.g. {box_stack}) hold {box} px images{why}")
    report_pixel_sizes(source, pixel_sizes)
    return int(box)


def _compare_pixel_sizes(entries) -> tuple:
    differ, placeholder = [], []
    for p, header, meta in entries:
        if header > 0 and not np.isclose(header, meta, rtol=APIX_RTOL):
            (placeholder if np.isclose(header, PLACEHOLDER_APIX, rtol=1e-6) else differ).append(
                (p, header, meta))
    return differ, placeholder


def report_pixel_sizes(source: str, entries) -> None:
    """Warn about stacks whose MRC header pixel size is not the metadata's. ``entries``:
    ``(stack, header pixel size (0: none), metadata pixel size)`` per stack. The metadata's
    pixel size is the one used; a header of 1.0 A is taken as a placeholder."""
    entries = list(entries)
    n_stacks = len(entries)
    differ, placeholder = _compare_pixel_sizes(entries)
    if differ:
        p, header, meta = differ[0]
        warn(f"{source}: {len(differ)} of {n_stacks} stacks have a pixel size in their MRC header "
             f"that differs from the metadata's, e.g. {p}: header {header:.4g} A, metadata "
             f"{meta:.4g} A (ratio {header / meta:.4g}). Using the metadata's {meta:.4g} A; if the "
             "stacks were binned or Fourier-cropped after the metadata was written, the "
             "metadata's pixel size (and box) must be updated to match them.")
    if placeholder:
        p, _, meta = placeholder[0]
        warn(f"{source}: {len(placeholder)} of {n_stacks} stacks have a pixel size of 1.0 A in "
             f"their MRC header (e.g. {p}), which programs write when they do not know it; "
             f"the metadata's pixel size is trusted ({meta:.4g} A).")

