"""Particle data sets: metadata (:class:`ParticleData`) and lazily read images.

:func:`load_particles` reads a RELION ``.star`` or cryoSPARC ``.cs`` file into a
:class:`ParticleData`, which holds only metadata in the engine's conventions (see
:mod:`gaussianem.poses` and :mod:`gaussianem.ctf`): RELION rotation matrices ``A``,
RELION origins in Angstrom and per-particle CTF parameters in RELION units. Images stay
on disk; :class:`ParticleImages` reads them on demand from memory-mapped stacks,
Fourier-crops them to a smaller box if asked, and :func:`make_loader` batches them.

Fourier cropping (:func:`fourier_crop`) keeps the block of the (rfft) spectrum with
frequencies ``-d/2 .. d/2`` along both axes (``d`` the target box, even, ``D`` the source
box); the source's ``+d/2`` and ``-d/2`` terms both land on the target's Nyquist frequency
and are added, as sampling does. The result is multiplied by ``(d/D)**2`` (``rfft2``
leaves the sum over ``D*D`` pixels in the zero frequency, ``irfft2`` divides by ``d*d``).
So each output pixel is the source image, low-passed to the new Nyquist frequency,
sampled on the coarser grid: an image without higher frequencies keeps its pixel values
exactly, the mean is preserved, the pixel size grows by ``D/d`` and the integrated
intensity ``sum(image) * apix**2`` is unchanged. Pixel 0 stays at position 0, so the box
centre ``D//2`` maps to ``d//2`` (RELION's centre).

Every problem with an input file raises :class:`ParticleFileError`, whose message names the
file, the field or column (and row where it applies) and what was expected.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .ctf import CTFParams


class ParticleFileError(ValueError):
    """A particle file (.star, .cs, .mrc/.mrcs) is missing, malformed or inconsistent."""


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


def load_particles(path, datadir=None, *, passthrough=None,
                   check_images: bool = True) -> ParticleData:
    """Read a RELION ``.star`` or cryoSPARC ``.cs`` particle file.

    ``datadir`` is where relative image paths are found (default: searched from the
    file's directory upwards). ``passthrough`` (``.cs`` only) is a cryoSPARC passthrough
    file that supplies fields missing from ``path``. With ``check_images`` (default) every
    stack's MRC header is read to check that it exists, holds the indexed images and has
    the expected square box.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".star":
        if passthrough is not None:
            raise ParticleFileError(f"{path}: a passthrough file applies only to cryoSPARC .cs files")
        from .relion import read_star
        return read_star(path, datadir=datadir, check_images=check_images)
    if ext == ".cs":
        from .cryosparc import read_cs
        return read_cs(path, datadir=datadir, passthrough=passthrough, check_images=check_images)
    raise ParticleFileError(f"{path}: unknown particle file type {ext!r}; expected a RELION "
                            ".star or a cryoSPARC .cs file")


# ---------------------------------------------------------------------------------------
# Helpers shared by the readers and writers
# ---------------------------------------------------------------------------------------

@contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically
    (``os.replace``), on failure it is removed and ``path`` is left untouched. The
    temporary name ends with the real name, so extension-sniffing writers still work."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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


def particle_box(paths: np.ndarray, indices: np.ndarray, source: str, expected_box,
                 check_images: bool, size_field: str) -> int:
    """The particles' box: from the stacks' headers (checked) when ``check_images``, else
    from the metadata's ``expected_box``; ``size_field`` names where the metadata keeps it."""
    if check_images:
        return check_images_and_box(paths, indices, source, expected_box)
    if expected_box is not None:
        return int(expected_box)
    raise ParticleFileError(f"{source}: image size unknown: no {size_field}, and the "
                            "stacks' headers were not read (check_images=False)")


def check_images_and_box(paths: np.ndarray, indices: np.ndarray, source: str,
                         expected_box=None) -> int:
    """Check every stack's header (exists, readable, square, holds its indices) and return
    the common box size; ``expected_box`` (from the metadata) must agree when given."""
    from .mrc import read_header
    uniq, inverse = np.unique(paths, return_inverse=True)
    inverse = inverse.reshape(-1)
    max_index = np.full(len(uniq), -1, dtype=np.int64)
    np.maximum.at(max_index, inverse, indices)
    box, box_stack = None, None
    for k, p in enumerate(uniq):
        h = read_header(p)
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
    if expected_box is not None and int(expected_box) != box:
        raise ParticleFileError(f"{source}: the metadata give an image size of {int(expected_box)} px "
                                f"but the stacks (e.g. {box_stack}) hold {box} px images")
    return int(box)


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

def fourier_crop(images: torch.Tensor, box: int) -> torch.Tensor:
    """Fourier-crop real images (..., D, D) to (..., box, box), ``box`` even and <= D.

    Keeps frequencies ``-box/2 .. box/2`` and scales by ``(box/D)**2`` so that pixel values
    are preserved (see the module docstring). Returns the input unchanged when box == D.
    """
    d_src = images.shape[-1]
    if images.shape[-2] != d_src:
        raise ValueError(f"fourier_crop needs square images, got {tuple(images.shape[-2:])}")
    if box % 2 or box <= 0:
        raise ValueError(f"Fourier-crop target box must be a positive even number, got {box}")
    if box > d_src:
        raise ValueError(f"Fourier-crop target box {box} is larger than the image box {d_src}")
    if box == d_src:
        return images
    f = torch.fft.rfft2(images.to(torch.float32))
    h = box // 2
    rows = torch.cat([f[..., :h, :h + 1], f[..., -h:, :h + 1]], dim=-2)
    # Frequencies +h and -h fall on the same coarse-grid frequency (the new Nyquist), so
    # sampling adds them: the Nyquist row gets both source rows, and the Nyquist column is
    # doubled because irfft2 takes only the real part of it, i.e. half of +h and -h.
    rows[..., h, :] = f[..., h, :h + 1] + f[..., d_src - h, :h + 1]
    rows[..., :, h] *= 2
    out = torch.fft.irfft2(rows, s=(box, box))
    return out * (box / d_src) ** 2


def soft_window(box: int, inner: float = 0.85, outer: float = 0.99) -> torch.Tensor:
    """Circular real-space window: 1 inside ``inner * box/2``, cosine fall-off to 0 at
    ``outer * box/2`` (radius measured from the box centre ``box//2``)."""
    c = torch.arange(box, dtype=torch.float32) - box // 2
    r = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2) / (box / 2)
    t = ((r - inner) / (outer - inner)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(torch.pi * t))


class ParticleImages(Dataset):
    """Particle images read lazily from their stacks.

    ``box``: Fourier-crop target (even, <= ``data.box``; default no cropping). ``invert``
    multiplies images by -1 (for data with dark protein). ``window`` applies
    :func:`soft_window` after cropping. Item ``i`` is ``{"index": i, "image": (box, box)
    float32 tensor}``; :meth:`__getitems__` returns a whole batch as one dict of stacked
    tensors, reading each stack once per batch.
    """

    def __init__(self, data: ParticleData, box: Optional[int] = None, invert: bool = False,
                 window: bool = False):
        from .mrc import ImageStack
        self.data = data
        self.box = int(data.box if box is None else box)
        if self.box % 2 or self.box <= 0:
            raise ValueError(f"image box must be a positive even number, got {self.box}")
        if self.box > data.box:
            raise ValueError(f"image box {self.box} is larger than the particles' box {data.box} "
                             "(Fourier cropping can only make images smaller)")
        self.invert = bool(invert)
        self.window = soft_window(self.box) if window else None
        paths, self._stack_of = np.unique(data.image_paths.astype(str), return_inverse=True)
        self._stack_of = self._stack_of.reshape(-1)
        self._stacks = [ImageStack(p) for p in paths]
        self._indices = np.asarray(data.image_indices, dtype=np.int64)

    @property
    def apix(self) -> np.ndarray:
        """Per-particle pixel size (Angstrom) of the returned images, after cropping."""
        return np.asarray(self.data.apix, dtype=np.float64) * (self.data.box / self.box)

    def __len__(self) -> int:
        return len(self.data)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        """Raw images (n, D, D) float32 for particle indices ``idx``, grouped by stack."""
        out = np.empty((len(idx), self.data.box, self.data.box), dtype=np.float32)
        stack_ids = self._stack_of[idx]
        for s in np.unique(stack_ids):
            pos = np.flatnonzero(stack_ids == s)
            within = self._indices[idx[pos]]
            order = np.argsort(within, kind="stable")  # sequential reads within the stack
            out[pos[order]] = self._stacks[s][within[order]]
        return out

    def _process(self, raw: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(raw)
        if self.box != self.data.box:
            images = fourier_crop(images, self.box)
        if self.invert:
            images = -images
        if self.window is not None:
            images = images * self.window
        return images.contiguous()

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"particle index {i} out of range for {len(self)} particles")
        image = self._process(self._read(np.array([i])))[0]
        return {"index": i, "image": image}

    def __getitems__(self, indices) -> dict:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return {"index": torch.from_numpy(idx.copy()), "image": self._process(self._read(idx))}


def collate(batch):
    """Collate for :func:`make_loader`: passes batches from ``__getitems__`` through and
    stacks lists of single items."""
    if isinstance(batch, dict):
        return batch
    return {"index": torch.tensor([b["index"] for b in batch], dtype=torch.int64),
            "image": torch.stack([b["image"] for b in batch])}


def make_loader(images: ParticleImages, batch_size: int, shuffle: bool, num_workers: int = 0,
                sampler=None, device=None, seed: int = 0) -> DataLoader:
    """A DataLoader of ``{"index": (B,) int64, "image": (B, box, box) float32}`` batches.

    Shuffling is reproducible from ``seed``; ``sampler`` (yielding particle indices)
    replaces shuffling. Memory is pinned for a CUDA ``device``; with workers, they persist
    across epochs and prefetch ahead.
    """
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    cuda = device is not None and torch.device(device).type == "cuda"
    kwargs = dict(batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
                  pin_memory=cuda, generator=gen, drop_last=False)
    if sampler is not None:
        kwargs["sampler"] = sampler
    else:
        kwargs["shuffle"] = shuffle
    if num_workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    return DataLoader(images, **kwargs)
