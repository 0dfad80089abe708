"""Movies of a path through latent space, with ChimeraX's own ``movie record/encode``.

:func:`record_path` shows each latent of a :class:`~.latent_paths.LatentPath` on the
live map and atomic model (and markers, when shown), draws ``frames_per_step`` frames
of each while ``movie record`` captures them, encodes them with ``movie encode ... wait
true`` and then puts the map and model back at the state they showed before. What the
movie shows is what the session shows: its view, surface levels, colours, lighting.

Encoding runs ffmpeg, which ChimeraX's movie bundle looks for in ChimeraX's ``bin``
folder (``chimerax.app_bin_dir``; the ChimeraX app ships one) and then on ``PATH``
(:func:`find_ffmpeg` does the same look-up, so a missing ffmpeg is a clear error before
anything is recorded). The project's headless ChimeraX gets a pinned static ffmpeg from
PyPI (imageio-ffmpeg), linked as ``.venv/bin/ffmpeg`` by tools/install_chimerax.py.
"""

from __future__ import annotations

import os

from chimerax.core.commands import quote_path_if_necessary as quote
from chimerax.core.errors import UserError

MOVIE_SUFFIXES = (".mp4", ".mov", ".avi", ".webm")   # formats ChimeraX's movie encode writes
QUALITIES = ("highest", "higher", "high", "good", "medium", "fair", "low")


def find_ffmpeg() -> str | None:
    """The ffmpeg ChimeraX's ``movie encode`` runs: in ChimeraX's bin folder, else on PATH."""
    import chimerax
    name = "ffmpeg.exe" if os.name == "nt" else "ffmpeg"
    folders = [getattr(chimerax, "app_bin_dir", None)] + os.environ.get("PATH", "").split(os.pathsep)
    for folder in folders:
        if folder and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def check_movie(session, output: str) -> str:
    """The movie file's absolute path, after checking that it can be made here."""
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.splitext(output)[1].lower() not in MOVIE_SUFFIXES:
        raise UserError(f"cannot make {output}: a movie is saved as {', '.join(MOVIE_SUFFIXES)} "
                        "(.mp4 is the one that plays everywhere)")
    if not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"cannot make {output}: the folder {os.path.dirname(output)} does not exist")
    if not getattr(session.ui, "has_graphics", True) or session.main_view.render is None:
        raise UserError("a movie needs rendering: run ChimeraX with its window, or with --offscreen "
                        "(OSMesa) without it")
    if find_ffmpeg() is None:
        raise UserError("ChimeraX's 'movie encode' needs ffmpeg, found neither in ChimeraX's bin folder "
                        "nor on PATH (the ChimeraX app ships one; for a Python install, "
                        "tools/install_chimerax.py links the imageio-ffmpeg package's ffmpeg)")
    return output


def record_path(session, gres, path, output: str, *, kind: str | None = None, frames_per_step: int = 1,
                framerate: int = 10, size=None, round_trip: bool = False, quality: str = "good") -> dict:
    """Record the states of ``path`` on the live map and model into ``output``; returns
    ``{"file", "frames", "steps"}`` (frames: images in the movie, doubled by ``round_trip``,
    which plays the path forward then back)."""
    from chimerax.core.commands import run
    output = check_movie(session, output)
    if frames_per_step < 1 or framerate < 1:
        raise UserError("framesPerStep and framerate must be at least 1")
    if quality not in QUALITIES:
        raise UserError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
    movie = getattr(session, "movie", None)
    if movie is not None and movie.is_recording():
        raise UserError("a movie is already being recorded ('movie stop' ends it)")
    before = gres.z
    record = "movie record" + ("" if size is None else f" size {int(size[0])},{int(size[1])}")
    gens = [gres.generate(z, kind) for z in path.z]         # the maps first: no pauses in the movie
    run(session, record, log=False)
    recorded = False
    try:
        for gen in gens:
            gres.apply(gen)
            run(session, f"wait {int(frames_per_step)}", log=False)
        recorded = True
    finally:
        run(session, "movie stop", log=False)
        if not recorded:
            run(session, "movie reset clear", log=False)        # drop the frames of a broken recording
        if before is not None:
            gres.apply(gres.generate(before))
    run(session, f"movie encode {quote(output)} framerate {int(framerate)} quality {quality} "
                 f"roundTrip {str(bool(round_trip)).lower()} wait true", log=False)
    if not os.path.isfile(output) or os.path.getsize(output) == 0:
        raise UserError(f"ffmpeg wrote no movie to {output}: see the log for its messages")
    frames = len(gens) * int(frames_per_step)
    return {"file": output, "frames": frames * (2 if round_trip else 1), "steps": len(gens)}
