"""cryoDRGN's preprocessed inputs: particle images with ``pose.pkl`` and ``ctf.pkl``.

cryoDRGN (``cryodrgn train_vae particles.mrcs --poses pose.pkl --ctf ctf.pkl [--ind
ind.pkl]``) keeps the poses and the CTF beside the images, in pickles that its
``parse_pose_star`` / ``parse_pose_csparc`` and ``parse_ctf_star`` / ``parse_ctf_csparc``
commands write (checked against cryoDRGN 4.3.1's source and by running it, docs/engine.md):

``pose.pkl``  a tuple ``(rots, trans)``: ``rots`` (N, 3, 3) are RELION's matrices ``A``
              (``utils.R_from_relion(rot, tilt, psi)`` equals
              :func:`gaussianem.physics.poses.euler_to_matrix`; from cryoSPARC, the
              transpose of the Rodrigues matrix of ``alignments3D/pose``), ``trans`` (N, 2)
              RELION's origin (same sign) in pixels divided by the box ``D``: a fraction of
              the box, unchanged by downsampling. A pickle of ``rots`` alone (or a tuple of
              one) means no shifts. Two files ``(rot.pkl, trans.pkl)`` are accepted too.
``ctf.pkl``   a float32 array (N, 9): ``D`` (box, px), pixel size (A), defocus U, V (A),
              astigmatism angle (degrees), voltage (kV), Cs (mm), amplitude contrast,
              phase shift (degrees); RELION's values, copied. ``D`` and the pixel size are
              those of the images it was parsed for: as cryoDRGN does, the pixel size of
              images of box ``d`` is ``D * apix / d`` (images downsampled afterwards).
``ind.pkl``   optional 0-based indices of the particles used: the images, the CTF rows and
              the poses are selected by them (poses already of ``len(ind)`` rows are used
              as they are, as cryoDRGN does).

In the engine's conventions: rotations = ``rots``, origin in Angstrom =
``trans * D * apix`` (= ``trans * d`` pixels of the images used), CTF from the columns
above with no B-factor. The images are a ``.mrcs`` stack, a ``.txt`` list of stacks (one
per line, relative to the list's folder, every image of each in order), or a RELION
``.star`` / cryoSPARC ``.cs`` file, of which only the image names are used (``datadir``
as for those files).

Pickles are read with an unpickler that builds only NumPy arrays, tuples and lists: a
pickle that asks for anything else is refused instead of run.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np

from gaussianem.errors import ParticleFileError
from gaussianem.io.cryosparc import read_cs_images
from gaussianem.io.mrc import read_header
from gaussianem.io.particle_data import ParticleData, group_optics, report_pixel_sizes
from gaussianem.io.relion import read_star_images
from gaussianem.physics.ctf import CTFParams

CTF_COLUMNS = ("box (px)", "pixel size (A)", "defocus U (A)", "defocus V (A)",
               "astigmatism angle (deg)", "voltage (kV)", "Cs (mm)", "amplitude contrast",
               "phase shift (deg)")
IMAGE_SOURCES = (".mrcs", ".mrc", ".txt", ".star", ".cs")

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, not a NumPy array")


def load_pickle(path, what: str):
    """The object in a cryoDRGN pickle (NumPy arrays in tuples or lists only)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise ParticleFileError(f"{path}: {what} file not found")
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(io.BytesIO(f.read())).load()
    except Exception as e:  # noqa: BLE001 (pickle raises many kinds)
        raise ParticleFileError(f"{path}: not a readable cryoDRGN {what} pickle ({e}); expected "
                                "NumPy arrays as cryoDRGN writes them") from None


def _array(value, path: str, what: str, shape_tail: tuple, expected: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise ParticleFileError(f"{path}: {what}: a {type(value).__name__}; expected {expected}")
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        raise ParticleFileError(f"{path}: {what} of shape {a.shape}; expected {expected}")
    bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
    if bad.size:
        raise ParticleFileError(f"{path}: {what}, row {bad[0] + 1}: not a finite number")
    return a


def _select(a: np.ndarray, ind, n_full: int, path: str, what: str, already_selected_ok: bool):
    """Rows ``ind`` of a full-length array (or the array itself when it is already selected
    and ``already_selected_ok``)."""
    if ind is None:
        if len(a) != n_full:
            raise ParticleFileError(f"{path}: {len(a)} rows of {what} for {n_full} images; "
                                    "expected one row per image")
        return a
    if len(a) == n_full:
        return a[ind]
    if already_selected_ok and len(a) == len(ind):
        return a
    raise ParticleFileError(f"{path}: {len(a)} rows of {what}; expected one per image "
                            f"({n_full})" + (f" or one per selected particle ({len(ind)})"
                                              if already_selected_ok else ""))


def read_poses(poses, n_full: int, ind=None) -> tuple:
    """(rotations (N, 3, 3), shifts as fractions of the box (N, 2)) from ``pose.pkl`` (or a
    pair ``(rot.pkl, trans.pkl)``); shifts are 0 when the pickle has none."""
    if isinstance(poses, (list, tuple)):
        if len(poses) != 2:
            raise ParticleFileError(f"poses: {len(poses)} files given; expected pose.pkl or "
                                    "(rot.pkl, trans.pkl)")
        paths = [os.path.abspath(os.fspath(p)) for p in poses]
        parts = (load_pickle(paths[0], "rotation"), load_pickle(paths[1], "translation"))
    else:
        paths = [os.path.abspath(os.fspath(poses))] * 2
        parts = load_pickle(paths[0], "pose")
        if isinstance(parts, list):
            parts = tuple(parts)
        if not isinstance(parts, tuple):
            parts = (parts,)
        if len(parts) not in (1, 2):
            raise ParticleFileError(f"{paths[0]}: pose pickle holds {len(parts)} objects; "
                                    "expected (rotations, translations) or rotations")
    rots = _array(parts[0], paths[0], "rotations", (3, 3), "an (N, 3, 3) array of rotation matrices")
    rots = _select(rots, ind, n_full, paths[0], "rotations", True)
    err = np.abs(rots @ np.swapaxes(rots, 1, 2) - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero((err > 1e-3) | (np.linalg.det(rots) < 0))
    if bad.size:
        raise ParticleFileError(f"{paths[0]}: rotation {bad[0] + 1} is not a rotation matrix "
                                "(orthonormal, determinant +1)")
    if len(parts) == 1:
        return rots, np.zeros((len(rots), 2))
    trans = _array(parts[1], paths[1], "translations", (2,), "an (N, 2) array of shifts")
    trans = _select(trans, ind, n_full, paths[1], "translations", True)
    big = np.flatnonzero(np.abs(trans).max(axis=1) > 1)
    if big.size:
        raise ParticleFileError(
            f"{paths[1]}: translation {big[0] + 1} is {trans[big[0]].tolist()}; expected fractions "
            "of the box (cryoDRGN >= 0.3's format, |t| <= 1), not pixels")
    return rots, trans


def read_ctf(ctf, n_full: int, ind=None) -> np.ndarray:
    """The (N, 9) ``ctf.pkl`` rows of the particles used (columns: :data:`CTF_COLUMNS`)."""
    path = os.path.abspath(os.fspath(ctf))
    a = _array(load_pickle(path, "CTF"), path, "CTF parameters", (9,),
               "an (N, 9) array: " + ", ".join(CTF_COLUMNS))
    a = _select(a, ind, n_full, path, "CTF parameters", False)
    for col in (0, 1, 5):
        bad = np.flatnonzero(a[:, col] <= 0)
        if bad.size:
            raise ParticleFileError(f"{path}: column {col + 1} ({CTF_COLUMNS[col]}), row "
                                    f"{bad[0] + 1}: {a[bad[0], col]:g}; expected a positive value")
    bad = np.flatnonzero((a[:, 7] < 0) | (a[:, 7] >= 1))
    if bad.size:
        raise ParticleFileError(f"{path}: column 8 (amplitude contrast), row {bad[0] + 1}: "
                                f"{a[bad[0], 7]:g}; expected a fraction in [0, 1)")
    return a


def _stack_list(path: str) -> list:
    folder = os.path.dirname(path)
    try:
        with open(path) as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as e:
        raise ParticleFileError(f"{path}: cannot read the list of stacks ({e})") from None
    stacks = [os.path.normpath(s if os.path.isabs(s) else os.path.join(folder, s)) for s in lines if s]
    if not stacks:
        raise ParticleFileError(f"{path}: no stacks listed; expected one .mrcs path per line")
    return stacks


def read_images(images, datadir=None, *, check_images: bool = True) -> tuple:
    """(stack paths, 0-based indices, box, the headers' pixel sizes or None) of a cryoDRGN
    image source: ``.mrcs``/``.mrc`` (every image), ``.txt`` (a list of stacks), or the image
    names of a ``.star`` / ``.cs`` file."""
    path = os.path.abspath(os.fspath(images))
    ext = os.path.splitext(path)[1].lower()
    if ext == ".star":
        stacks, indices, box, _ = read_star_images(path, datadir, check_images=check_images)
        return stacks, indices, box, None
    if ext == ".cs":
        stacks, indices, box, _ = read_cs_images(path, datadir, check_images=check_images)
        return stacks, indices, box, None
    if ext not in (".mrcs", ".mrc", ".txt"):
        raise ParticleFileError(f"{path}: unknown image source {ext!r}; expected one of "
                                f"{', '.join(IMAGE_SOURCES)} (as cryoDRGN reads them)")
    if not os.path.isfile(path):
        raise ParticleFileError(f"{path}: image file not found")
    listed = _stack_list(path) if ext == ".txt" else [path]
    headers = []
    for s in listed:
        if not os.path.isfile(s):
            raise ParticleFileError(f"{path}: stack {s} (line {listed.index(s) + 1}) not found")
        h = read_header(s)
        if h.nx != h.ny:
            raise ParticleFileError(f"{s}: images are {h.nx} x {h.ny} pixels; expected square images")
        if headers and h.nx != headers[0][1].nx:
            raise ParticleFileError(f"{path}: stacks have different box sizes: {listed[0]} is "
                                    f"{headers[0][1].nx} px, {s} is {h.nx} px")
        headers.append((s, h))
    stacks = np.array([s for s, h in headers for _ in range(h.nz)], dtype=object)
    indices = np.concatenate([np.arange(h.nz, dtype=np.int64) for _, h in headers])
    header_apix = np.array([h.apix for _, h in headers for _ in range(h.nz)])
    return stacks, indices, int(headers[0][1].nx), header_apix


def _indices(ind, n_full: int) -> np.ndarray:
    if ind is None:
        return None
    if isinstance(ind, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(ind))
        value = load_pickle(path, "index")
    else:
        path, value = "ind", ind
    a = np.asarray(value)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ParticleFileError(f"{path}: particle indices have shape {a.shape} and type {a.dtype}; "
                                "expected a 1D array of 0-based integer indices")
    bad = np.flatnonzero((a < 0) | (a >= n_full))
    if bad.size:
        raise ParticleFileError(f"{path}: index {int(a[bad[0]])} (entry {bad[0] + 1}) is out of "
                                f"range for {n_full} images")
    return a.astype(np.int64)


def read_cryodrgn(images, poses, ctf, *, datadir=None, ind=None,
                  check_images: bool = True) -> ParticleData:
    """Particles from cryoDRGN's inputs: ``images`` (.mrcs, .txt, .star or .cs), ``poses``
    (``pose.pkl``, or ``(rot.pkl, trans.pkl)``), ``ctf`` (``ctf.pkl``) and optionally
    ``ind`` (``ind.pkl`` or an index array) selecting particles. ``datadir`` is used for
    .star / .cs image names. With ``check_images`` the stacks' headers are checked (for a
    .mrcs or .txt source they are always read, to count the images)."""
    if poses is None or ctf is None:
        raise ParticleFileError(f"{images}: cryoDRGN inputs need both poses (pose.pkl) and ctf "
                                "(ctf.pkl); " + ("poses" if poses is None else "ctf") + " not given")
    source = os.path.abspath(os.fspath(images))
    stacks, indices, box, header_apix = read_images(source, datadir, check_images=check_images)
    n_full = len(indices)
    sel = _indices(ind, n_full)
    rots, trans = read_poses(poses, n_full, sel)
    c = read_ctf(ctf, n_full, sel)
    if sel is not None:
        stacks, indices = stacks[sel], indices[sel]
        header_apix = None if header_apix is None else header_apix[sel]
    apix = c[:, 0] * c[:, 1] / box  # cryoDRGN: the images' pixel size from ctf.pkl's box and apix
    if header_apix is not None:
        uniq, first = np.unique(stacks.astype(str), return_index=True)
        report_pixel_sizes(source, zip(uniq, header_apix[first], apix[first]))
    ctf_params = CTFParams(defocus_u=c[:, 2], defocus_v=c[:, 3], defocus_angle=c[:, 4],
                           voltage=c[:, 5], cs=c[:, 6], amp_contrast=c[:, 7], phase_shift=c[:, 8],
                           bfactor=np.zeros(len(c)))
    return ParticleData(
        image_paths=stacks, image_indices=indices, rotations=rots,
        shifts=trans * (box * apix)[:, None], ctf=ctf_params, apix=apix, box=int(box),
        optics_group=group_optics(apix, c[:, 5], c[:, 6], c[:, 7]), source=source, table=None)
