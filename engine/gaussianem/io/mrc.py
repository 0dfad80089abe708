"""MRC maps and image stacks.

* Maps are returned as (z, y, x) float32 arrays whatever the file's axis order
  (``mapc/mapr/maps``), with the voxel size in Angstrom and the origin ``(x, y, z)`` in
  Angstrom: the header's ``origin`` field, or ``n[xyz]start * apix`` when that is zero
  (as ChimeraX reads it).
* Particle stacks (``.mrcs``) are read through :class:`ImageStack`, which memory-maps
  the data on first use (``numpy.memmap``; the file descriptor is closed at once, so
  thousands of stacks cost no open files) and keeps a per-process cache of maps (safe in
  DataLoader workers: a forked worker makes its own). Only the images asked for are read,
  never the whole stack.
* Writers go to a temporary file in the destination folder and replace the destination
  atomically, so readers never see a half-written file.

Unreadable or inconsistent files raise :class:`gaussianem.errors.ParticleFileError`.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import NamedTuple

import mrcfile
import numpy as np
from mrcfile.utils import data_dtype_from_header, dtype_from_mode

from gaussianem.errors import InputError, ParticleFileError
from gaussianem.io.atomic import atomic_output

HEADER_BYTES = 1024
MAX_OPEN_STACKS = 4096  # memory maps kept per process (least recently used dropped)


class MRCHeader(NamedTuple):
    nx: int
    ny: int
    nz: int
    mode: int
    apix: float       # x voxel size in Angstrom (0 when the header does not give one)
    data_offset: int  # bytes before the data (header + extended header)
    dtype: str        # numpy dtype of the data, with the file's byte order


def read_header(path) -> MRCHeader:
    """Read (only) an MRC file's header and check that the file is large enough."""
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # permissive mode warns about harmless oddities
            with mrcfile.open(path, header_only=True, permissive=True) as m:
                h = m.header
                nx, ny, nz, mode = int(h.nx), int(h.ny), int(h.nz), int(h.mode)
                apix = float(m.voxel_size.x)
                nsymbt = int(h.nsymbt)
                dtype = data_dtype_from_header(h).str
    except FileNotFoundError:
        raise ParticleFileError(f"{path}: MRC file not found") from None
    except Exception as e:  # noqa: BLE001 (mrcfile raises ValueError, OSError, ...)
        raise ParticleFileError(f"{path}: not a readable MRC file ({e})") from None
    if min(nx, ny, nz) <= 0:
        raise ParticleFileError(f"{path}: MRC header gives dimensions nx={nx} ny={ny} nz={nz}; "
                                "expected positive sizes")
    try:
        itemsize = np.dtype(dtype_from_mode(mode)).itemsize
    except ValueError:
        raise ParticleFileError(f"{path}: unsupported MRC data mode {mode}; expected one of "
                                "0, 1, 2, 6, 12 (real data)") from None
    if mode in (3, 4):
        raise ParticleFileError(f"{path}: MRC data mode {mode} is complex; expected real data")
    offset = HEADER_BYTES + max(nsymbt, 0)
    expected = offset + nx * ny * nz * itemsize
    size = os.path.getsize(path)
    if size < expected:
        raise ParticleFileError(f"{path}: file is {size} bytes but its MRC header "
                                f"({nx} x {ny} x {nz}, mode {mode}) needs {expected}; "
                                "the file is truncated or the header is wrong")
    return MRCHeader(nx, ny, nz, mode, apix, offset, dtype)


# Per-process cache of memory maps: path -> (nz, ny, nx) array.
_open_maps: "OrderedDict[str, np.ndarray]" = OrderedDict()
_open_pid = None


def _mapped(path: str, header: MRCHeader) -> np.ndarray:
    global _open_pid
    if _open_pid != os.getpid():  # a forked worker: make its own maps
        _open_maps.clear()
        _open_pid = os.getpid()
    data = _open_maps.get(path)
    if data is not None:
        _open_maps.move_to_end(path)
        return data
    try:
        data = np.memmap(path, dtype=np.dtype(header.dtype), mode="r", offset=header.data_offset,
                         shape=(header.nz, header.ny, header.nx))
    except FileNotFoundError:
        raise ParticleFileError(f"{path}: MRC file not found") from None
    except (OSError, ValueError) as e:
        raise ParticleFileError(f"{path}: cannot map the MRC data ({e})") from None
    _open_maps[path] = data
    while len(_open_maps) > MAX_OPEN_STACKS:
        _open_maps.popitem(last=False)  # unmapped when the last reference goes
    return data


class ImageStack:
    """A memory-mapped image stack, opened on first read (cheap to create and to pickle).

    ``stack[i]`` or ``stack[array_of_indices]`` (0-based) returns float32 ``(n, ny, nx)``.
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        self._header = None

    @property
    def header(self) -> MRCHeader:
        if self._header is None:
            self._header = read_header(self.path)
        return self._header

    @property
    def shape(self) -> tuple:
        h = self.header
        return (h.nz, h.ny, h.nx)

    def __len__(self) -> int:
        return self.header.nz

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        data = _mapped(self.path, self.header)
        n = data.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise IndexError(f"{self.path}: image index {bad} (0-based) out of range for a "
                             f"stack of {n} images")
        return np.asarray(data[idx]).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"ImageStack({self.path!r})"


# ---------------------------------------------------------------------------------------
# Maps
# ---------------------------------------------------------------------------------------

def read_map(path) -> tuple:
    """Read a 3D map: ``(array (z, y, x) float32, apix, origin_xyz in Angstrom)``."""
    path = os.fspath(path)
    read_header(path)  # clear errors for missing / truncated files
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, permissive=True) as m:
                h = m.header
                data = np.asarray(m.data)
                vs = m.voxel_size
                voxel = np.array([vs.x, vs.y, vs.z], dtype=np.float64)
                origin = np.array([h.origin.x, h.origin.y, h.origin.z], dtype=np.float64)
                nstart = np.array([h.nxstart, h.nystart, h.nzstart], dtype=np.float64)
                axes = (int(h.mapc), int(h.mapr), int(h.maps))
    except Exception as e:  # noqa: BLE001
        raise ParticleFileError(f"{path}: not a readable MRC map ({e})") from None
    if data.ndim == 2:
        data = data[None]
    if sorted(axes) != [1, 2, 3]:
        axes = (1, 2, 3)  # invalid axis fields: assume the standard order, as most readers do
    # The array is (section, row, column); axes[i] is the map axis (1=x, 2=y, 3=z) of the
    # column (i=0), row (1) and section (2). Put z, y, x first, second and third.
    file_axis_of = {axes[2]: 0, axes[1]: 1, axes[0]: 2}  # map axis -> array axis
    data = np.transpose(data, (file_axis_of[3], file_axis_of[2], file_axis_of[1]))
    nstart_xyz = np.empty(3)
    for i, a in enumerate(axes):  # nxstart belongs to the column axis, and so on
        nstart_xyz[a - 1] = nstart[i]
    apix = float(voxel[0])
    if apix <= 0:
        raise ParticleFileError(f"{path}: voxel size is missing from the MRC header "
                                "(cella / mx is 0); expected a positive pixel size in Angstrom")
    if not np.allclose(voxel, apix, rtol=1e-3):
        raise ParticleFileError(f"{path}: voxels are not cubic ({voxel[0]:g}, {voxel[1]:g}, "
                                f"{voxel[2]:g} Angstrom); expected one voxel size")
    if not np.any(origin):
        origin = nstart_xyz * apix
    return np.ascontiguousarray(data, dtype=np.float32), apix, origin


def _write_mrc(path, data: np.ndarray, apix, stack: bool, origin_xyz=None) -> None:
    with atomic_output(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(data)
            m.set_image_stack() if stack else m.set_volume()
            m.voxel_size = float(apix)
            if origin_xyz is not None:
                m.header.origin = tuple(float(v) for v in origin_xyz)
            m.update_header_stats()


def write_map(path, array_zyx, apix, origin_xyz=(0.0, 0.0, 0.0)) -> None:
    """Write a (z, y, x) map as float32 MRC with voxel size ``apix`` and the given origin."""
    data = np.ascontiguousarray(array_zyx, dtype=np.float32)
    if data.ndim != 3:
        raise InputError(f"write_map needs a 3D (z, y, x) array, got shape {data.shape}")
    _write_mrc(path, data, apix, stack=False, origin_xyz=origin_xyz)


def write_stack(path, images, apix) -> None:
    """Write images (n, y, x) as a float32 MRC image stack with pixel size ``apix``."""
    data = np.ascontiguousarray(images, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"write_stack needs (n, y, x) images, got shape {data.shape}")
    _write_mrc(path, data, apix, stack=True)
