#!/usr/bin/env python3
"""Make a real ChimeraX 1.7.1 core run headless in the current Python environment.

Run it with the venv's python (tools/setup_env.sh does):

    .venv/bin/python tools/install_chimerax.py [--force] [--no-verify]

PyPI carries one wheel of the ChimeraX core, ``ChimeraX==0.1.71`` (built from ChimeraX
1.7.1; yanked, so the exact pin is needed). It does not run as shipped; this script applies
the fixes described in docs/headless_chimerax.md (steps 2-4 and 7 are in
tools/chimerax_mend.py):

1. the wheel is installed with ``--no-deps``, then a smaller working set of its
   dependencies, pinned by a constraints file made from the wheel's own ``Requires-Dist``
   (minus imagecodecs; pkginfo raised to 1.12.1.2; setuptools<81; numpy 1.26.4). Packages
   already in the environment keep their version, so the engine's pins are never changed;
2. the dependencies the wheel forgets (tinyarray, tomli, grako) are added and grako is
   patched for Python 3.11 (``collections.Mapping`` and friends moved to ``collections.abc``);
3. the missing ``chimerax/core/nogui.py`` is written (our own text-only UI,
   tools/chimerax/nogui.py);
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
success; a later run with the same scripts, nogui.py and bundle list returns at once.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chimerax_mend  # noqa: E402
from chimerax_mend import (BUILTIN_BUNDLES_JSON, NOGUI, link_ffmpeg, load_builtin_bundles, log,  # noqa: E402
                           patch_grako, write_bundle_dist_infos, write_nogui)

REPO = Path(__file__).resolve().parent.parent
# The built-in bundles of ChimeraX 1.7.1, kept in the repository so that a
# clone installs on its own (the data come from ChimeraX 1.7.1's bundle descriptions).
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
    """Hash of what decides the result: this script, its mends, nogui.py and the built-in
    bundle list."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for part in (Path(chimerax_mend.__file__), NOGUI, BUILTIN_BUNDLES_JSON):
        h.update(part.read_bytes())
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


# --------------------------------------------------------------------------- OSMesa

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
