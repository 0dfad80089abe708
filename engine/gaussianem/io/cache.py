"""A particle cache at the training box: the images Fourier-cropped once and kept as one
stack, so that training reads ``box``^2 pixels per particle instead of ``D``^2 and crops
nothing (as cryoDRGN's ``downsample`` + lazy loading, but automatic).

``--cache DIR`` (``TrainConfig.cache``; ``auto``: ``.gaussianem_cache`` beside the particle
file) keeps ``DIR/<key>.mrcs`` (float32 MRC stack, particle order of the particle file)
and ``DIR/<key>.json`` (what it was made from). The key is a hash of the training box,
the particles' stack files (path, size, modification time) and image indices, so a
later run on the same particles at the same box reuses it, and any change to the stacks
makes a new one. The cache is built in order, chunk by chunk (sequential reads, workers
cropping in parallel: memory stays flat in the number of particles), into a temporary
file that replaces nothing until it is complete. Both the build and training read with
plain file reads, not memory maps (:func:`_read_runs`).

A cache is checked each time it is reused: its size (a truncated file) and a few images
against the record's ``fingerprint`` (their sums of squares when built: a cache zeroed
or overwritten since); a damaged cache stops with an error that names it and says how to
have it rebuilt. A build killed outright leaves its temporary file (``.tmp-*``): the next
use of the folder removes those not written to for ``STALE_TEMP_SECONDS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import mrcfile
import numpy as np
import torch

from gaussianem.errors import InputError, ParticleFileError
from gaussianem.io.atomic import atomic_output, write_json
from gaussianem.io.images import ParticleImages
from gaussianem.io.mrc import ImageStack
from gaussianem.io.particle_data import ParticleData
from gaussianem.progress import Progress

CACHE_VERSION = 1
CHUNK = 512                  # particles cropped and written at a time while building
FINGERPRINT = 16             # images whose sums of squares the record keeps
STALE_TEMP_SECONDS = 600     # a temporary file not written to for this long is a killed build's


def cache_dir_for(option: str | None, particle_file: str) -> str | None:
    """The cache folder for the ``--cache`` option (None: no cache)."""
    if not option:
        return None
    if option == "auto":
        return os.path.join(os.path.dirname(os.path.abspath(particle_file)), ".gaussianem_cache")
    return os.path.abspath(os.path.expanduser(option))


def cache_key(data: ParticleData, box: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION} box {int(box)} of {int(data.box)} n {len(data)}".encode())
    for p in np.unique(data.image_paths.astype(str)):
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)} {st.st_size} {st.st_mtime_ns}".encode())
    h.update(np.asarray(data.image_paths.astype(str)).astype("U").tobytes())
    h.update(np.ascontiguousarray(data.image_indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def _read_runs(stack: ImageStack, within: np.ndarray, d: int, scattered: bool = False) -> np.ndarray:
    """Images ``within`` (0-based, ascending) of ``stack`` as (n, d, d) float32, by plain
    file reads, one per run of consecutive images. Not a memory map: a mapped page fault
    reads the device's whole read-ahead window around the image, and mapped pages count in
    the process's resident memory, which would grow with the data read. ``scattered``
    (a training batch: images here and there in a large file) turns the kernel's read-ahead
    off for these reads, which otherwise takes cached neighbours for a sequential stream and
    reads far more than asked (docs/benchmarks.md, "Particle cache")."""
    h = stack.header
    dtype = np.dtype(h.dtype)
    out = np.empty((len(within), d, d), dtype=np.float32)
    if not len(within):
        return out
    breaks = np.flatnonzero(np.diff(within) != 1) + 1
    with open(stack.path, "rb") as f:
        if scattered and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        for start, run in zip(np.r_[0, breaks], np.split(within, breaks)):
            f.seek(h.data_offset + int(run[0]) * d * d * dtype.itemsize)
            out[start:start + len(run)] = np.fromfile(f, dtype=dtype, count=len(run) * d * d).reshape(-1, d, d)
    return out


class CachedImages(ParticleImages):
    """:class:`ParticleImages` read from the cache stack (already at ``box``): same items,
    no cropping; ``invert`` and ``window`` are applied on reading, as there."""

    def __init__(self, data: ParticleData, box: int, stack_path: str, invert: bool = False, window: bool = False):
        super().__init__(data, box=box, invert=invert, window=window)
        self.cache = ImageStack(stack_path)
        if self.cache.shape != (len(data), self.box, self.box):
            raise InputError(f"particle cache {stack_path} holds images of shape {self.cache.shape}, expected "
                             f"{(len(data), self.box, self.box)}: remove it to rebuild it")

    def _read(self, idx: np.ndarray) -> np.ndarray:
        order = np.argsort(idx, kind="stable")             # sequential reads
        out = np.empty((len(idx), self.box, self.box), dtype=np.float32)
        out[order] = _read_runs(self.cache, idx[order], self.box, scattered=True)
        return out

    def _process(self, raw: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(raw)
        if self.invert:
            images = -images
        if self.window is not None:
            images = images * self.window
        return images.contiguous()


class PlainReadImages(ParticleImages):
    """:class:`ParticleImages` reading the source stacks with :func:`_read_runs`: resident
    memory does not grow with the images read (one pass over many particles: the cache's
    build, a reconstruction)."""

    def _read_stack(self, s: int, within: np.ndarray) -> np.ndarray:
        return _read_runs(self._stacks[s], within, self.data.box)


class _SourceChunks(torch.utils.data.Dataset):
    """Chunk ``k`` of the particles, in particle order, read (:class:`PlainReadImages`) and
    Fourier-cropped."""

    def __init__(self, data: ParticleData, box: int):
        self.images = PlainReadImages(data, box=box)
        self.n = len(data)

    def __len__(self) -> int:
        return (self.n + CHUNK - 1) // CHUNK

    def __getitem__(self, k: int):
        idx = np.arange(k * CHUNK, min(self.n, (k + 1) * CHUNK))
        return k, self.images._process(self.images._read(idx)).numpy()


def build_cache(data: ParticleData, box: int, path: str, num_workers: int = 0,
                progress: Progress | None = None) -> dict:
    """Write the Fourier-cropped images of ``data`` at ``box`` to the stack ``path``, in
    particle order (atomically), chunk by chunk with plain reads and writes: resident
    memory stays flat in the number of particles. Returns seconds and MB read and written."""
    progress = progress or Progress("none")
    n, t0 = len(data), time.time()
    chunks = _SourceChunks(data, box)
    loader = torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=num_workers,
                                         generator=torch.Generator())     # leaves the global RNG alone
    apix = float(np.median(data.apix)) * data.box / box
    with atomic_output(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:        # the header, for (n, box, box) float32
            m.set_data(np.zeros((1, box, box), dtype=np.float32))
            m.set_image_stack()
            m.header.nz = m.header.mz = n
            m.voxel_size = apix
        offset = os.path.getsize(tmp) - box * box * 4
        with open(tmp, "r+b") as f:
            f.truncate(offset)
            for k, images in loader:
                f.seek(offset + k * CHUNK * box * box * 4)
                f.write(np.ascontiguousarray(images, dtype="<f4").tobytes())
                if k % 20 == 0:
                    progress.message(f"particle cache: {min(n, (k + 1) * CHUNK)} of {n} images")
    dt = time.time() - t0
    return {"particles": n, "box": int(box), "source_box": int(data.box), "seconds": dt,
            "read_mb": n * data.box ** 2 * np.dtype(chunks.images._stacks[0].header.dtype).itemsize / 2 ** 20,
            "written_mb": n * box ** 2 * 4 / 2 ** 20}


def fingerprint(stack_path: str, n: int, box: int) -> dict:
    """Sums of squares of ``FINGERPRINT`` images spread over the cache stack (first and last
    included), for the record: a later reuse compares them (:func:`check_cache`)."""
    idx = np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT)).round().astype(np.int64))
    images = _read_runs(ImageStack(stack_path), idx, box).astype(np.float64)
    return {"indices": idx.tolist(), "sumsq": (images ** 2).sum((1, 2)).tolist()}


def check_cache(stack: str, meta: str, record: dict, n: int, box: int) -> None:
    """Raise :class:`InputError` naming the cache and how to rebuild it when ``stack`` is
    not the cache ``record`` describes: unreadable or truncated, another shape, or images
    that differ from the record's fingerprint (or, for a record without one, that are all
    zero)."""
    rebuild = (f"remove {stack} and {meta} to have it rebuilt from the particle images on the next run "
               "(or train without --cache)")
    try:
        h = ImageStack(stack).header
    except ParticleFileError as e:
        raise InputError(f"particle cache damaged: {e}; {rebuild}") from None
    expected = h.data_offset + n * box * box * 4
    if (h.nz, h.ny, h.nx) != (n, box, box):
        raise InputError(f"particle cache {stack} holds images of shape {(h.nz, h.ny, h.nx)}, expected "
                         f"{(n, box, box)}; {rebuild}")
    if os.path.getsize(stack) != expected:
        raise InputError(f"particle cache {stack} is {os.path.getsize(stack)} bytes where its {n} images need "
                         f"{expected} (truncated, or written over); {rebuild}")
    fp = record.get("fingerprint")
    idx = np.asarray(fp["indices"] if fp else np.linspace(0, n - 1, min(n, FINGERPRINT)).round(), np.int64)
    sumsq = (_read_runs(ImageStack(stack), np.unique(idx), box).astype(np.float64) ** 2).sum((1, 2))
    if fp is None:                   # a record written before fingerprints: all zero is damage
        bad = np.arange(len(sumsq)) if np.all(sumsq == 0) else []
    else:
        bad = np.flatnonzero(~np.isclose(sumsq, fp["sumsq"], rtol=1e-5, atol=0))
    if len(bad):
        i = int(np.unique(idx)[bad[0]])
        what = "zeros" if sumsq[bad[0]] == 0 else "other values"
        raise InputError(f"particle cache {stack} does not hold the images it was built with (image {i} reads as "
                         f"{what}: the file was zeroed or written over since); {rebuild}")


def remove_stale_temporaries(folder: str, progress: Progress) -> None:
    """Remove the temporary files (``.tmp-*``, :func:`~gaussianem.io.atomic.atomic_output`)
    that a build killed outright left in the cache ``folder``: those not written to for
    ``STALE_TEMP_SECONDS`` (a running build writes a chunk every few seconds)."""
    now = time.time()
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        try:
            stale = name.startswith(".tmp-") and now - os.path.getmtime(path) > STALE_TEMP_SECONDS
            if stale:
                os.remove(path)
        except OSError:              # removed meanwhile, or not ours to remove
            continue
        if stale:
            progress.message(f"particle cache: removed {name}, a temporary file left by a build that was "
                             "stopped")


def cached_images(data: ParticleData, box: int, folder: str, source_file: str, invert: bool = False,
                  window: bool = False, num_workers: int = 0, progress: Progress | None = None) -> CachedImages:
    """The particles at ``box`` from the cache in ``folder``, built first if it is not there
    (checked with :func:`check_cache` if it is)."""
    progress = progress or Progress("none")
    key = cache_key(data, box)
    stack, meta = os.path.join(folder, key + ".mrcs"), os.path.join(folder, key + ".json")
    if os.path.isdir(folder):
        remove_stale_temporaries(folder, progress)
    if not (os.path.exists(stack) and os.path.exists(meta)):
        os.makedirs(folder, exist_ok=True)
        progress.message(f"building the particle cache at box {box}: {stack}")
        info = build_cache(data, box, stack, num_workers=num_workers, progress=progress)
        write_json(meta, {"version": CACHE_VERSION, "source": os.path.abspath(source_file), **info,
                          "fingerprint": fingerprint(stack, len(data), box),
                          "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        progress.message(f"particle cache built: {info['particles']} images in {info['seconds']:.0f} s "
                         f"({info['read_mb'] / max(info['seconds'], 1e-9):.0f} MB/s read)")
    else:
        try:
            with open(meta) as f:
                record = json.load(f)      # a readable record: the cache was completed
        except ValueError as e:
            raise InputError(f"particle cache record {meta} is not valid JSON ({e}); remove {stack} and {meta} "
                             "to have the cache rebuilt on the next run") from None
        check_cache(stack, meta, record, len(data), box)
        progress.message(f"particle cache reused: {stack}")
    return CachedImages(data, box, stack, invert=invert, window=window)
