#!/usr/bin/env python3
"""Make a real ChimeraX 1.7.1 core run headless in the current Python environment.

Run it with the venv's python (tools/setup_env.sh does):

    .venv/bin/python tools/install_chimerax.py [--force] [--no-verify]

PyPI carries one wheel of the ChimeraX core, ``ChimeraX==0.1.71`` (built from ChimeraX
1.7.1; yanked, so the exact pin is needed). It does not run as shipped; this script applies
the fixes described in docs/headless_chimerax.md:

1. the wheel is installed with ``--no-deps``, then a smaller working set of its
   dependencies, pinned by a constraints file made from the wheel's own ``Requires-Dist``
   (minus imagecodecs; pkginfo raised to 1.12.1.2; setuptools<81; numpy 1.26.4). Packages
   already in the environment keep their version, so the engine's pins are never changed;
2. the dependencies the wheel forgets (tinyarray, tomli, grako) are added and grako is
   patched for Python 3.11 (``collections.Mapping`` and friends moved to ``collections.abc``);
3. the missing ``chimerax/core/nogui.py`` is written (our own text-only UI, NOGUI_SOURCE);
4. a ``<Name>-<version>.dist-info`` folder is written for each built-in bundle listed in
   tools/chimerax/builtin_bundles_1.7.1.json (in the repository), so the toolshed registers them and all the
   usual commands (open, volume, measure, save, ...) exist;
5. libOSMesa (Debian's libosmesa6) is installed with apt-get when missing and we are root,
   for offscreen PNG rendering; otherwise it is skipped and recorded as unavailable;
6. PyQt6 and qtshim are added, for tool panels driven with ``QT_QPA_PLATFORM=offscreen``;
7. ffmpeg for ``movie encode``: ChimeraX's movie bundle runs ``ffmpeg`` from ChimeraX's
   ``bin`` folder (``chimerax.app_bin_dir``, here the environment's ``bin``), then from
   PATH. The app ships one; here the static ffmpeg of the pinned PyPI package
   imageio-ffmpeg is linked as ``<env>/bin/ffmpeg``.

Then a short headless ChimeraX run checks the result (open a map, set a level, measure it,
save a PNG when OSMesa is there). A stamp file in the environment (``sys.prefix``) records
success; a later run with the same script and bundle list returns at once.
"""

from __future__ import annotations

import argparse
import ctypes.util
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The built-in bundles of ChimeraX 1.7.1, kept in the repository so that a
# clone installs on its own (the data come from ChimeraX 1.7.1's bundle descriptions).
BUILTIN_BUNDLES_JSON = REPO / "tools" / "chimerax" / "builtin_bundles_1.7.1.json"
STAMP = Path(sys.prefix) / "chimerax-headless.json"
SCRATCH = REPO / ".cache" / "chimerax"  # git-ignored; XDG dirs for ChimeraX runs

CHIMERAX_DIST = "ChimeraX"
CHIMERAX_VERSION = "0.1.71"  # the PyPI wheel of the ChimeraX 1.7.1 core

# Pins that replace or extend the wheel's own Requires-Dist pins.
PIN_OVERRIDES = {
    "numpy": "==1.26.4",  # the core's compiled modules are built against numpy 1.x
    "pkginfo": "==1.12.1.2",  # 1.9.6 reads Metadata-Version 2.4 as "no classifiers"
    "setuptools": "<81",  # 81+ has no pkg_resources, which the toolshed imports
}
EXTRA_PINS = {
    # Dependencies missing from the wheel's metadata.
    "tinyarray": "==1.2.5",  # builds from source (about 10 s)
    "tomli": "==2.0.1",
    "grako": "==3.16.5",  # patched below for Python 3.11
    # Offscreen rendering and Qt, as used with ChimeraX 1.7.1.
    "PyOpenGL": "==3.1.7",
    "PyQt6": "==6.6.1",
    "PyQt6-Qt6": "==6.6.1",
    "qtshim": "==1.2",
    # ffmpeg for 'movie encode' (a static build, ffmpeg 7.0.2 with libx264), linked into bin/
    "imageio-ffmpeg": "==0.6.0",
}
DROPPED = {"imagecodecs"}  # its pinned release has no cp311 wheel

# The "smaller working set" of HEADLESS.md (about 640 MB with the core, without torch),
# plus the packages of EXTRA_PINS and a few small ones the core imports on common paths
# (distro: image and session metadata; msgpack, lz4: session files; psutil: map memory
# limits). tcia-utils is installed on its own with --no-deps.
WORKING_SET = [
    "numpy", "tinyarray", "tomli", "grako", "pkginfo", "appdirs", "packaging",
    "sortedcontainers", "Cython", "pydicom", "requests", "pandas", "matplotlib",
    "ipywidgets", "PyOpenGL", "setuptools", "PyQt6", "PyQt6-Qt6", "qtshim",
    "distro", "msgpack", "lz4", "psutil", "imageio-ffmpeg",
]
NO_DEPS = ["tcia-utils"]

# grako 3.16.5 takes these names from `collections`; Python 3.10+ has them only in
# `collections.abc`.
GRAKO_ABC_NAMES = ("Mapping", "Iterable", "Callable", "MutableMapping", "Sequence")


def log(msg: str) -> None:
    print(f"[install_chimerax] {msg}", flush=True)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    log("$ pip install " + " ".join(args))
    subprocess.run(cmd, check=True)


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fingerprint() -> str:
    """Hash of what decides the result: this script and the built-in bundle list."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(BUILTIN_BUNDLES_JSON.read_bytes())
    h.update(sys.prefix.encode())
    return h.hexdigest()[:16]


def chimerax_env(base: dict | None = None) -> dict:
    """Environment for running ChimeraX: scratch XDG dirs, offscreen Qt.

    The ChimeraX folders inside the XDG dirs are made here: run as root, ChimeraX does
    not make them itself, and saving any setting then fails.
    """
    env = dict(os.environ if base is None else base)
    for var in ("CACHE", "DATA", "CONFIG"):
        d = SCRATCH / "xdg" / var.lower()
        (d / "ChimeraX" / "1.7").mkdir(parents=True, exist_ok=True)
        env[f"XDG_{var}_HOME"] = str(d)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


# --------------------------------------------------------------------------- pip steps

def install_core() -> None:
    if installed_version(CHIMERAX_DIST) == CHIMERAX_VERSION:
        log(f"{CHIMERAX_DIST} {CHIMERAX_VERSION} already installed")
        return
    # --no-deps: its pinned imagecodecs cannot be installed on cp311.
    pip("--no-deps", f"{CHIMERAX_DIST}=={CHIMERAX_VERSION}")


def write_constraints(path: Path) -> list[str]:
    """Constraints from the wheel's Requires-Dist, with our overrides.

    A package that is already installed is constrained to its installed version (numpy,
    pkginfo and setuptools excepted) so that nothing the engine pinned is moved.
    """
    from packaging.requirements import Requirement  # pip's dependency, always present

    pins: dict[str, str] = {}
    for line in metadata.requires(CHIMERAX_DIST) or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        if canonical(req.name) in {canonical(d) for d in DROPPED}:
            continue
        pins[req.name] = str(req.specifier)
    pins.update(EXTRA_PINS)
    pins.update(PIN_OVERRIDES)
    overrides = {canonical(n) for n in PIN_OVERRIDES}
    lines = []
    for name, spec in sorted(pins.items(), key=lambda kv: kv[0].lower()):
        have = installed_version(name)
        if have is not None and canonical(name) not in overrides:
            spec = f"=={have}"
        lines.append(f"{name}{spec}")
    path.write_text("\n".join(lines) + "\n")
    return lines


def install_dependencies(workdir: Path) -> None:
    constraints = workdir / "constraints.txt"
    write_constraints(constraints)
    log("pip will list ChimeraX pins that are left out on purpose (imagecodecs, Sphinx, "
        "...) as unmet or incompatible: expected")
    pip("-c", str(constraints), *WORKING_SET)
    pip("--no-deps", "-c", str(constraints), *NO_DEPS)


# --------------------------------------------------------------------------- file fixes

def chimerax_dir() -> Path:
    """The installed `chimerax` package folder (found without importing it)."""
    for base in (sysconfig.get_paths()["platlib"], sysconfig.get_paths()["purelib"]):
        p = Path(base) / "chimerax"
        if (p / "core").is_dir():
            return p
    raise SystemExit("install_chimerax: chimerax package not found after install")


def patch_grako() -> None:
    import importlib.util

    spec = importlib.util.find_spec("grako")
    if spec is None or spec.origin is None:
        raise SystemExit("install_chimerax: grako is not installed")
    names = "|".join(GRAKO_ABC_NAMES)
    patched = []
    for py in Path(spec.origin).parent.rglob("*.py"):
        text = py.read_text()
        new = re.sub(rf"\bcollections\.({names})\b", r"collections.abc.\1", text)
        # `from collections import defaultdict, Mapping` -> split the abc names out.
        def split_import(m: re.Match) -> str:
            items = [s.strip() for s in m.group(2).split(",")]
            plain = [s for s in items if s not in GRAKO_ABC_NAMES]
            abc = [s for s in items if s in GRAKO_ABC_NAMES]
            out = []
            if plain:
                out.append(f"{m.group(1)}from collections import {', '.join(plain)}")
            if abc:
                out.append(f"{m.group(1)}from collections.abc import {', '.join(abc)}")
            return "\n".join(out)
        new = re.sub(r"^([ \t]*)from collections import ([\w, ]+)$", split_import, new,
                     flags=re.M)
        if new != text:
            if "collections.abc." in new and "import collections.abc" not in new:
                new = re.sub(r"^import collections$", "import collections\nimport collections.abc",
                             new, count=1, flags=re.M)
            py.write_text(new)
            patched.append(py.name)
    if patched:
        log(f"patched grako for Python 3.11: {', '.join(sorted(patched))}")


NOGUI_SOURCE = '''\
"""Text-only user interface for ChimeraX without a GUI (``--nogui``, embedded sessions).

Written by ChimeraX-GaussianEM's tools/install_chimerax.py: the ChimeraX 0.1.71 wheel
(ChimeraX 1.7.1 core) lacks this module, which ``Session()`` and
``python -m chimerax.core --nogui`` import.
"""

import sys
import weakref

from .logger import PlainTextLog
from .tasks import FINISHED, TERMINATED, Task

_LEVEL_NAMES = {
    PlainTextLog.LEVEL_INFO: "INFO",
    PlainTextLog.LEVEL_WARNING: "WARNING",
    PlainTextLog.LEVEL_ERROR: "ERROR",
    PlainTextLog.LEVEL_BUG: "BUG",
}
_COLORS = {}  # level name -> (start, end) escape codes, filled when colour is on


def _emit(kind, msg):
    start, end = _COLORS.get(kind, ("", ""))
    text = msg if msg.endswith("\\n") else msg + "\\n"
    if _COLORS:
        sys.stdout.write(f"{start}{text}{end}")
    else:
        sys.stdout.write(f"{kind}:\\n{text}")
    sys.stdout.flush()


class NoGuiLog(PlainTextLog):
    """Print log messages and primary status messages on standard output."""

    def log(self, level, msg):
        _emit(_LEVEL_NAMES.get(level, "INFO"), msg)
        return True

    def status(self, msg, color, secondary):
        if msg and not secondary:
            _emit("STATUS", msg)
        return True


class UI:
    """The user interface of a session without a GUI (one per process)."""

    _instance = None

    def __new__(cls, session):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance._queue = None
            cls._instance._qt_app = None
        ui = cls._instance
        # The latest session owns the UI (tests may build more than one).
        ui._session = weakref.ref(session)
        ui.is_gui = False
        ui.has_graphics = False
        ui.stereo = False
        ui.autostart_tools = False
        return ui

    @classmethod
    def instance(cls):
        return cls._instance

    def initialize_color_output(self, color_output):
        """Colour log text when asked, or by default on a terminal (needs colorama)."""
        if not (color_output or (color_output is None and sys.stdout.isatty())):
            return
        try:
            from colorama import Fore, Style
        except ImportError:
            return
        reset = Style.RESET_ALL
        _COLORS.update({
            "INFO": (Fore.GREEN, reset), "WARNING": (Fore.YELLOW, reset),
            "ERROR": (Fore.RED, reset), "BUG": (Fore.RED + Style.BRIGHT, reset),
            "STATUS": (Fore.MAGENTA, reset),
        })

    def initialize_offscreen_rendering(self):
        """Render with OSMesa; without it the session runs with has_graphics False."""
        session = self._session()
        from chimerax import graphics
        try:
            context = graphics.OffScreenRenderingContext()
        except Exception as e:  # libOSMesa missing or too old
            if not session.silent:
                session.logger.info(f"Offscreen rendering is not available: {e}")
            self.has_graphics = False
            return
        session.main_view.initialize_rendering(context)
        self.has_graphics = True
        self._start_offscreen_qt()

    def _start_offscreen_qt(self):
        # 2D labels draw their text with Qt; an offscreen QApplication is enough.
        try:
            from PyQt6.QtWidgets import QApplication
        except ImportError:
            return
        if QApplication.instance() is None:
            self._qt_app = QApplication(["ChimeraX", "-platform", "offscreen"])

    def splash_info(self, message, splash_step=None, num_splash_steps=None):
        if splash_step is None:
            print(message, file=sys.stderr)
        else:
            print(f"{100 * splash_step / num_splash_steps:.2f}% done: {message}",
                  file=sys.stderr)

    def build(self):
        pass  # nothing to build without a GUI

    def quit(self):
        import os
        session = self._session()
        session.logger.status("Exiting ...", blank_after=0)
        session.logger.clear()  # stop the status timers
        sys.exit(os.EX_OK)

    def event_loop(self):
        """Read commands from standard input until end of file."""
        from queue import Queue
        self._queue = Queue()
        reader = _Input(self._session())
        reader.start()
        try:
            while reader.state not in (FINISHED, TERMINATED):
                func, args, kw = self._queue.get()
                try:
                    func(*args, **kw)
                finally:
                    self._queue.task_done()
        finally:
            self._queue = None

    def thread_safe(self, func, *args, **kw):
        """Run func in the main thread: queued while the event loop runs, else now."""
        if self._queue is not None:
            self._queue.put((func, args, kw))
        else:
            func(*args, **kw)


class _Input(Task):
    """Reads command lines in a thread and runs them in the main thread."""

    SESSION_ENDURING = True

    def __init__(self, session):
        super().__init__(session)
        from threading import Semaphore
        from .commands import Command
        self._command = Command(session)
        self._turn = Semaphore()  # one command at a time

    def run(self):
        ui = self.session.ui
        while True:
            self._turn.acquire()
            try:
                text = input("cmd> ")
            except EOFError:
                ui.thread_safe(self.session.logger.clear)  # wake the main loop
                break
            ui.thread_safe(self._execute, text)

    def _execute(self, text):
        from . import errors
        logger = self.session.logger
        try:
            if text.strip():
                self._command.run(text.strip())
        except errors.NotABug as e:
            logger.error(str(e))
        except Exception:
            import traceback
            logger.bug(traceback.format_exc())
        finally:
            self._turn.release()

    def take_snapshot(self, session, flags):
        return None

    @staticmethod
    def restore_snapshot(session, data):
        return None
'''


def write_nogui(cx: Path) -> None:
    target = cx / "core" / "nogui.py"
    if not target.exists() or target.read_text() != NOGUI_SOURCE:
        target.write_text(NOGUI_SOURCE)
        log(f"wrote {target}")


def load_builtin_bundles() -> dict:
    if not BUILTIN_BUNDLES_JSON.is_file():
        raise SystemExit(
            f"install_chimerax: {BUILTIN_BUNDLES_JSON} is missing.\n"
            "It lists ChimeraX 1.7.1's built-in bundles (it is part of the repository:\n"
            "'git checkout tools/chimerax' restores it). Without it the toolshed\n"
            "registers no bundle and ChimeraX has no 'open', 'volume', ... commands.")
    return json.loads(BUILTIN_BUNDLES_JSON.read_text())


def write_bundle_dist_infos(cx: Path, bundles: dict) -> int:
    """One dist-info per built-in bundle, carrying its ChimeraX classifiers.

    The toolshed finds bundles by these classifiers (METADATA) and finds a bundle's
    packages from the ``__init__.py`` rows of its RECORD. RECORD lists only those
    ``__init__.py`` files and the dist-info itself, so uninstalling a bundle's record
    never removes the core's other files.
    """
    site = cx.parent
    stale = {p.name for p in site.glob("ChimeraX_*.dist-info")
             if (p / "INSTALLER").is_file()
             and (p / "INSTALLER").read_text().strip() == "gaussianem-install-chimerax"}
    written = 0
    for name, b in bundles.items():
        pkg_dir = site / Path(*b["package"].split("."))
        if not (pkg_dir / "__init__.py").is_file():
            log(f"warning: {name}: package {b['package']} not in the wheel; skipped")
            continue
        info_name = f"{name.replace('-', '_')}-{b['version']}.dist-info"
        info = site / info_name
        stale.discard(info_name)
        info.mkdir(exist_ok=True)
        md = [
            "Metadata-Version: 2.1",
            f"Name: {name}",
            f"Version: {b['version']}",
            f"Summary: {b['summary']}",
            *(f"Classifier: {c}" for c in b["classifiers"]),
        ]
        (info / "METADATA").write_text("\n".join(md) + "\n")
        (info / "INSTALLER").write_text("gaussianem-install-chimerax\n")
        rows = sorted(str(p.relative_to(site)) + ",," for p in pkg_dir.rglob("__init__.py"))
        rows += [f"{info_name}/{f},," for f in ("METADATA", "INSTALLER", "RECORD")]
        (info / "RECORD").write_text("\n".join(rows) + "\n")
        written += 1
    for old in stale:  # from an older bundle list
        shutil.rmtree(site / old)
    return written


# --------------------------------------------------------------------------- OSMesa

def link_ffmpeg() -> Path:
    """``<env>/bin/ffmpeg`` -> the imageio-ffmpeg package's ffmpeg binary, where ChimeraX's
    ``movie encode`` looks first (``chimerax.app_bin_dir``)."""
    import importlib
    importlib.invalidate_caches()
    import imageio_ffmpeg
    exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
    link = Path(sys.prefix) / "bin" / ("ffmpeg.exe" if os.name == "nt" else "ffmpeg")
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(exe)
    log(f"ffmpeg for movie encode: {link} -> {exe}")
    return link


def ensure_osmesa() -> bool:
    """libOSMesa for offscreen rendering: apt-get install it when root, else skip."""
    if ctypes.util.find_library("OSMesa"):
        return True
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        log("libOSMesa not found and not root: offscreen PNG rendering unavailable "
            "(install Debian's libosmesa6 to enable it)")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "libosmesa6"]
    log("$ " + " ".join(cmd))
    if subprocess.run(cmd, env=env).returncode != 0:
        # The package lists may be missing or stale: update them once and retry.
        subprocess.run(["apt-get", "update", "-q"], env=env)
        subprocess.run(cmd, env=env)
    found = bool(ctypes.util.find_library("OSMesa"))
    if not found:
        log("libosmesa6 could not be installed: offscreen PNG rendering unavailable")
    return found


# --------------------------------------------------------------------------- check

def verify(osmesa: bool, workdir: Path) -> None:
    """Run headless ChimeraX on a small map; raise if anything fails."""
    try:
        import mrcfile  # an engine dependency (requirements/engine.txt)
    except ImportError:
        raise SystemExit("install_chimerax: the check needs mrcfile; install "
                         "requirements/engine.txt first, or pass --no-verify") from None
    import numpy as np

    z, y, x = np.mgrid[-8:8, -8:8, -8:8].astype(np.float32)
    density = np.exp(-(x * x + y * y + z * z) / 18.0).astype(np.float32)
    map_path = workdir / "check.mrc"
    with mrcfile.new(map_path, overwrite=True) as m:
        m.set_data(density)
        m.voxel_size = 1.5
    png = workdir / "check.png"
    commands = [f"open {map_path}", "volume #1 level 0.5", "measure mapstats #1"]
    if osmesa:
        commands.append(f"save {png} width 64 height 64 supersample 1")
    cmd = [sys.executable, "-m", "chimerax.core", "--nogui", "--exit"]
    if osmesa:
        cmd.append("--offscreen")
    for c in commands:
        cmd += ["--cmd", c]
    log("checking: " + "; ".join(commands))
    r = subprocess.run(cmd, env=chimerax_env(), capture_output=True, text=True, cwd=workdir)
    out = r.stdout + r.stderr
    ok = r.returncode == 0 and "maximum" in out.lower() and (not osmesa or png.is_file())
    if not ok:
        sys.stderr.write(out)
        raise SystemExit(f"install_chimerax: headless ChimeraX check failed "
                         f"(exit status {r.returncode})")
    log("headless ChimeraX check passed" + (" (PNG rendered offscreen)" if osmesa else ""))


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="redo every step")
    ap.add_argument("--no-verify", action="store_true", help="skip the headless check")
    args = ap.parse_args(argv)

    bundles = load_builtin_bundles()
    fp = fingerprint()
    if not args.force and STAMP.is_file():
        stamp = json.loads(STAMP.read_text())
        if (stamp.get("fingerprint") == fp
                and installed_version(CHIMERAX_DIST) == CHIMERAX_VERSION):
            log(f"headless ChimeraX already set up ({STAMP}); --force to redo")
            return 0

    t0 = time.monotonic()
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    with tempfile.TemporaryDirectory(prefix="install_chimerax_") as tmp:
        work = Path(tmp)
        install_core()
        install_dependencies(work)
        patch_grako()
        cx = chimerax_dir()
        write_nogui(cx)
        n = write_bundle_dist_infos(cx, bundles)
        log(f"registered {n} built-in bundles")
        link_ffmpeg()
        osmesa = ensure_osmesa()
        if not args.no_verify:
            verify(osmesa, work)
    seconds = round(time.monotonic() - t0, 1)
    STAMP.write_text(json.dumps({
        "fingerprint": fp,
        "chimerax": CHIMERAX_VERSION,
        "builtin_bundles": n,
        "osmesa": osmesa,
        "verified": not args.no_verify,
        "seconds": seconds,
    }, indent=2) + "\n")
    log(f"done in {seconds} s (OSMesa {'available' if osmesa else 'not available'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
