"""Particle images read lazily: :class:`ParticleImages` reads them on demand from
memory-mapped stacks, Fourier-crops them to a smaller box if asked, and
:func:`make_loader` batches them.
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
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gaussianem.errors import InputError, ParticleFileError
from gaussianem.io.mrc import ImageStack
from gaussianem.io.particle_data import ParticleData


def fourier_crop(images: torch.Tensor, box: int) -> torch.Tensor:
    """Fourier-crop real images (..., D, D) to (..., box, box), ``box`` even and <= D.

    Keeps frequencies ``-box/2 .. box/2`` and scales by ``(box/D)**2`` so that pixel values
    are preserved (see the module docstring). Returns the input unchanged when box == D.
    """
    d_src = images.shape[-1]
    if images.shape[-2] != d_src:
        raise InputError(f"fourier_crop needs square images, got {tuple(images.shape[-2:])}")
    if box % 2 or box <= 0:
        raise InputError(f"Fourier-crop target box must be a positive even number, got {box}")
    if box > d_src:
        raise InputError(f"Fourier-crop target box {box} is larger than the image box {d_src}")
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
        self.data = data
        self.box = int(data.box if box is None else box)
        if self.box % 2 or self.box <= 0:
            raise InputError(f"image box must be a positive even number, got {self.box}")
        if self.box > data.box:
            raise InputError(f"image box {self.box} is larger than the particles' box {data.box} "
                             "(Fourier cropping can only make images smaller)")
        self.invert = bool(invert)
        self.window = soft_window(self.box) if window else None
        paths, self._stack_of = np.unique(data.image_paths.astype(str), return_inverse=True)
        self._stack_of = self._stack_of.reshape(-1)
        self._stacks = [ImageStack(p) for p in paths]
        self._checked = np.zeros(len(paths), dtype=bool)
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
            self._check_stack(s, within, idx[pos])
            order = np.argsort(within, kind="stable")  # sequential reads within the stack
            out[pos[order]] = self._read_stack(s, within[order])
        return out

    def _read_stack(self, s: int, within: np.ndarray) -> np.ndarray:
        """Images ``within`` (0-based, ascending) of stack ``s``, (n, D, D) float32."""
        return self._stacks[s][within]

    def _check_stack(self, s: int, within: np.ndarray, particles: np.ndarray) -> None:
        """The stack holds the metadata's box and the images asked for (checked here as well,
        since the metadata may have been read with ``check_images=False``)."""
        stack = self._stacks[s]
        if not self._checked[s]:
            nz, ny, nx = stack.shape
            if (ny, nx) != (self.data.box, self.data.box):
                raise ParticleFileError(
                    f"{stack.path}: images are {nx} x {ny} pixels but the particle metadata "
                    f"({self.data.source}) give a box of {self.data.box} x {self.data.box}; "
                    "the stack does not belong to this metadata, or the metadata's image size is wrong")
            self._checked[s] = True
        bad = np.flatnonzero(within >= len(stack))
        if bad.size:
            raise ParticleFileError(
                f"{self.data.source}: particle {int(particles[bad[0]]) + 1} asks for image "
                f"{int(within[bad[0]]) + 1} (1-based) of {stack.path}, which holds only "
                f"{len(stack)} image(s)")

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


def loader_workers(device, processes: int = 1) -> int:
    """Default data-loading workers: none on a CPU (the training threads use the cores);
    on a GPU, the CPU cores per process less one (at most 8), so that reading and Fourier
    cropping keep the GPU busy."""
    if torch.device(device).type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // max(1, processes) - 1))


def make_loader(images: ParticleImages, batch_size: int, shuffle: bool, num_workers: int = 0,
                sampler=None, device=None, seed: int = 0, batch_sampler=None) -> DataLoader:
    """A DataLoader of ``{"index": (B,) int64, "image": (B, box, box) float32}`` batches.

    Shuffling is reproducible from ``seed``; ``sampler`` (yielding particle indices)
    replaces shuffling; ``batch_sampler`` (yielding lists of indices) replaces both and
    ``batch_size``. Memory is pinned for a CUDA ``device``; with workers, they persist
    across epochs and prefetch ahead.
    """
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    cuda = device is not None and torch.device(device).type == "cuda"
    kwargs = dict(batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
                  pin_memory=cuda, generator=gen, drop_last=False)
    if batch_sampler is not None:              # it yields each batch's indices
        kwargs = dict(batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers, pin_memory=cuda,
                      generator=gen)
    elif sampler is not None:
        kwargs["sampler"] = sampler
    else:
        kwargs["shuffle"] = shuffle
    if num_workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    return DataLoader(images, **kwargs)
