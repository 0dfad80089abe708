"""Movies of a path through latent space, with ChimeraX's own ``movie record/encode``.

:func:`record_path` shows the latents of a :class:`~.latent_paths.LatentPath` on the
live map and atomic model (and markers, when shown) while ``movie record`` captures one
frame each, with ``frames_per_step`` frames from one of the path's states to the next
(the latents between them interpolated on the path, each with its own map, so the motion
is smooth); it encodes them with ``movie encode ... wait true`` and then puts the map and
model back at the state they showed before. What the movie shows is what the session
shows: its view, surface levels, colours, lighting. An existing movie file is replaced
only when asked (``replace``).

Encoding runs ffmpeg. ChimeraX's movie bundle looks for it in ChimeraX's ``bin`` folder
(``chimerax.app_bin_dir``; the ChimeraX app ships one) and then on ``PATH``;
:func:`find_ffmpeg` also looks beside this Python (a virtual environment's ``bin``, where
tools/install_chimerax.py links one) and at the ffmpeg of the ``imageio-ffmpeg`` package
(PyPI's static ffmpeg, which the project's environment installs), and hands the one it
finds to ``movie encode`` (:func:`ffmpeg_on_path`), so a movie works out of the box in a
Python install of ChimeraX whose ``bin`` folder has none.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
from chimerax.core.commands import quote_path_if_necessary as quote
from chimerax.core.errors import UserError

MOVIE_SUFFIXES = (".mp4", ".mov", ".avi", ".webm")   # formats ChimeraX's movie encode writes
QUALITIES = ("highest", "higher", "high", "good", "medium", "fair", "low")


FFMPEG = "ffmpeg.exe" if os.name == "nt" else "ffmpeg"


def _chimerax_ffmpeg() -> str | None:
    """The ffmpeg ChimeraX's ``movie encode`` finds itself: in its bin folder, else on PATH."""
    import chimerax
    folders = [getattr(chimerax, "app_bin_dir", None)] + os.environ.get("PATH", "").split(os.pathsep)
    for folder in folders:
        if folder and os.path.isfile(os.path.join(folder, FFMPEG)):
            return os.path.join(folder, FFMPEG)
    return None


def find_ffmpeg() -> str | None:
    """The ffmpeg to encode with: the one ChimeraX finds itself (its bin folder, PATH), else
    the one beside this Python (``sys.executable``'s folder, not resolved: a virtual
    environment's bin), else the imageio-ffmpeg package's; None when there is none."""
    found = _chimerax_ffmpeg()
    if found is not None:
        return found
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable or "")), FFMPEG)
    if sys.executable and os.path.isfile(beside):
        return beside
    try:
        import imageio_ffmpeg
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 (not installed, or it has no binary for this platform)
        return None
    return exe if exe and os.path.isfile(exe) else None


@contextlib.contextmanager
def ffmpeg_on_path(ffmpeg: str):
    """Within the block, ``ffmpeg`` is the ffmpeg ChimeraX's ``movie encode`` finds: when it
    is not the one ChimeraX finds itself, a folder holding it under the name ``ffmpeg`` (a
    link in ChimeraX's cache folder when its file is named otherwise, as imageio-ffmpeg's
    is) is put first on PATH."""
    if _chimerax_ffmpeg() == ffmpeg:
        yield
        return
    folder = os.path.dirname(ffmpeg)
    if os.path.basename(ffmpeg) != FFMPEG:
        import chimerax
        cache = getattr(getattr(chimerax, "app_dirs", None), "user_cache_dir", None) or os.path.expanduser("~/.cache")
        folder = os.path.join(cache, "gaussianem", "ffmpeg")
        os.makedirs(folder, exist_ok=True)
        link = os.path.join(folder, FFMPEG)
        if not (os.path.islink(link) and os.readlink(link) == ffmpeg):
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(ffmpeg, link)
    saved = os.environ.get("PATH")
    os.environ["PATH"] = folder + (os.pathsep + saved if saved else "")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


FRAMES_PER_STEP = 10      # default frames from one state of the path to the next
FRAMERATE = 25            # default frames per second: 10 states -> 91 frames, 3.6 s


def check_movie(session, output: str, replace: bool = False) -> tuple[str, str]:
    """(the movie file's absolute path, the ffmpeg to encode it with), after checking that
    it can be made here; an existing file is refused unless ``replace``."""
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.splitext(output)[1].lower() not in MOVIE_SUFFIXES:
        raise UserError(f"cannot make {output}: a movie is saved as {', '.join(MOVIE_SUFFIXES)} "
                        "(.mp4 is the one that plays everywhere)")
    if not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"cannot make {output}: the folder {os.path.dirname(output)} does not exist")
    if os.path.exists(output) and not replace:
        raise UserError(f"{output} already exists: add 'replace true' to write over it, or choose another name")
    if not getattr(session.ui, "has_graphics", True) or session.main_view.render is None:
        raise UserError("a movie needs rendering: run ChimeraX with its window, or with --offscreen "
                        "(OSMesa) without it")
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        raise UserError("ChimeraX's 'movie encode' needs ffmpeg, found none: not in ChimeraX's bin folder, on "
                        f"PATH, beside {sys.executable} nor from the imageio-ffmpeg package (the ChimeraX app "
                        "ships one; in a Python install, 'pip install imageio-ffmpeg' provides one)")
    return output, ffmpeg


def interpolate(zs, frames_per_step: int) -> np.ndarray:
    """The latents of a movie: ``frames_per_step`` frames from each state of ``zs`` (steps,
    zdim) to the next, on the straight line between them, and the last state:
    (steps - 1) * frames_per_step + 1 latents."""
    zs = np.asarray(zs, dtype=np.float32)
    f = int(frames_per_step)
    if len(zs) < 2 or f == 1:
        return zs
    t = (np.arange(f, dtype=np.float64) / f)[None, :, None]
    inner = zs[:-1, None, :] + t * (zs[1:, None, :] - zs[:-1, None, :])
    return np.concatenate([inner.reshape(-1, zs.shape[1]), zs[-1:]]).astype(np.float32)


def record_path(session, gres, path, output: str, *, kind: str | None = None,
                frames_per_step: int = FRAMES_PER_STEP, framerate: int = FRAMERATE, size=None,
                round_trip: bool = False, quality: str = "good", replace: bool = False) -> dict:
    """Record the path on the live map and model into ``output``, ``frames_per_step``
    frames from each of its states to the next (:func:`interpolate`); returns ``{"file",
    "frames", "steps", "seconds"}`` (frames: images in the movie, doubled by
    ``round_trip``, which plays the path forward then back)."""
    from chimerax.core.commands import run
    if frames_per_step < 1 or framerate < 1:
        raise UserError("framesPerStep and framerate must be at least 1")
    if quality not in QUALITIES:
        raise UserError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
    output, ffmpeg = check_movie(session, output, replace)
    movie = getattr(session, "movie", None)
    if movie is not None and movie.is_recording():
        raise UserError("a movie is already being recorded ('movie stop' ends it)")
    before = gres.z
    zs = interpolate(path.z, frames_per_step)
    record = "movie record" + ("" if size is None else f" size {int(size[0])},{int(size[1])}")
    run(session, record, log=False)
    recorded = False
    try:
        for i, z in enumerate(zs):     # generated between frames: the movie has no pauses
            session.logger.status(f"GaussianEM movie: frame {i + 1} of {len(zs)}")
            gres.apply(gres.generate(z, kind))
            run(session, "wait 1", log=False)
        recorded = True
    finally:
        run(session, "movie stop", log=False)
        if not recorded:
            run(session, "movie reset clear", log=False)        # drop the frames of a broken recording
        if before is not None:
            gres.apply(gres.generate(before))
    if os.path.exists(output):             # replace true: a failed encoding must not leave the old movie
        os.remove(output)
    with ffmpeg_on_path(ffmpeg):
        run(session, f"movie encode {quote(output)} framerate {int(framerate)} quality {quality} "
                     f"roundTrip {str(bool(round_trip)).lower()} wait true", log=False)
    if not os.path.isfile(output) or os.path.getsize(output) == 0:
        raise UserError(f"ffmpeg wrote no movie to {output}: see the log for its messages")
    frames = len(zs) * (2 if round_trip else 1)
    return {"file": output, "frames": frames, "steps": len(path.z), "seconds": frames / float(framerate)}
