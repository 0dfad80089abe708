"""Real ChimeraX sessions for the tests (no mocks): see docs/headless_chimerax.md.

- ``cx_session`` (pytest fixture, one per test run): an embedded ChimeraX 1.7.1 session
  without a GUI in the pytest process, built the way ``python -m chimerax.core --nogui``
  builds its own. Use it with ``from chimerax.core.commands import run``.
- ``cx`` (pytest fixture, per test): the same session, with all models closed after the test.
- ``run_chimerax(...)``: headless ChimeraX in a subprocess
  (``python -m chimerax.core --nogui --offscreen --exit --script X``).

Both make sure the ChimeraX-GaussianEM bundle installed in this Python matches src/ and
bundle_info.xml, rebuilding and reinstalling it (tools/build_bundle.py --install) when it
does not, so the tests never run a stale copy. Tests are skipped only when ChimeraX
itself is not importable (run tools/setup_env.sh). ChimeraX writes its settings and
caches into a scratch folder, never into the user's home.

conftest.py imports the fixtures: ``from chimerax_fixture import cx_session, cx``.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
BUNDLE_DIST = "ChimeraX-GaussianEM"
BUNDLE_PACKAGE = "chimerax.gaussianem"


def chimerax_available() -> bool:
    try:
        return importlib.util.find_spec("chimerax.core") is not None
    except ImportError:
        return False


def osmesa_available() -> bool:
    """Whether offscreen rendering (``save x.png``) can work here."""
    return ctypes.util.find_library("OSMesa") is not None


def require_chimerax() -> None:
    if not chimerax_available():
        pytest.skip("ChimeraX core is not installed in this Python "
                    "(tools/setup_env.sh installs it)")


def scratch_env(root: Path, base: dict | None = None) -> dict:
    """Environment with ChimeraX's XDG folders under root and Qt offscreen.

    The ChimeraX folders inside them are made here: run as root, ChimeraX does not make
    them itself, and saving any setting then fails.
    """
    from importlib.metadata import PackageNotFoundError, version
    try:
        major_minor = ".".join(version("ChimeraX-Core").split(".")[:2])
    except PackageNotFoundError:
        major_minor = "1.7"
    env = dict(os.environ if base is None else base)
    for kind in ("cache", "data", "config"):
        d = root / kind
        (d / "ChimeraX" / major_minor).mkdir(parents=True, exist_ok=True)
        env[f"XDG_{kind.upper()}_HOME"] = str(d)
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env


# --------------------------------------------------------------------------- the bundle

def _load_build_bundle():
    spec = importlib.util.spec_from_file_location("build_bundle", REPO / "tools" / "build_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bundle_is_current(build_bundle) -> bool:
    """True if the installed bundle has src/'s files and bundle_info.xml's metadata."""
    from importlib import metadata
    try:
        md = metadata.metadata(BUNDLE_DIST)
        spec = importlib.util.find_spec(BUNDLE_PACKAGE)
    except (metadata.PackageNotFoundError, ImportError):
        return False
    if spec is None or spec.origin is None:
        return False
    info = build_bundle.read_bundle_info()
    if md["Version"] != info["version"] or md.get_all("Classifier") != info["classifiers"]:
        return False
    installed = Path(spec.origin).parent

    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

    have, want = files(installed), files(SRC)
    wanted_py = {p for p in want if p.suffix == ".py"}
    if not wanted_py <= have or not have <= want:
        return False
    return all((installed / p).read_bytes() == (SRC / p).read_bytes() for p in have)


def ensure_bundle_installed() -> None:
    """Build and pip-install the bundle wheel if the installed one is missing or stale."""
    build_bundle = _load_build_bundle()
    if _bundle_is_current(build_bundle):
        return
    r = subprocess.run([sys.executable, str(REPO / "tools" / "build_bundle.py"), "--install"],
                       capture_output=True, text=True, encoding="utf-8", errors="replace")
    if r.returncode != 0:
        raise RuntimeError("tools/build_bundle.py --install failed:\n" + r.stdout + r.stderr)
    importlib.invalidate_caches()


# --------------------------------------------------------------------------- embedded session

def start_session(*, offscreen: bool | None = None):
    """Create a ChimeraX session without a GUI in this process.

    Does what ``chimerax.core.__main__.init`` does for ``--nogui``: application folders,
    Session, core settings, misc commands, attribute registration, a log that prints,
    the toolshed with every installed bundle, tools and undo. XDG_* must already point at
    a scratch folder. Offscreen rendering is on when OSMesa is found (offscreen=None).
    """
    import appdirs
    import chimerax
    from chimerax.core import version
    from packaging.version import Version

    v = Version(version)
    chimerax.app_dirs = appdirs.AppDirs("ChimeraX", appauthor="UCSF",
                                        version=f"{v.major}.{v.minor}")
    chimerax.app_dirs_unversioned = appdirs.AppDirs("ChimeraX", appauthor="UCSF")
    for d in (chimerax.app_dirs.user_data_dir, chimerax.app_dirs.user_config_dir,
              chimerax.app_dirs.user_cache_dir):
        os.makedirs(d, exist_ok=True)
    root = Path(sys.prefix)  # the venv plays the role of ChimeraX's application folder
    chimerax.app_bin_dir = str(root / "bin")
    chimerax.app_data_dir = str(root / "share")
    chimerax.app_lib_dir = str(root / "lib")

    from chimerax.core import attributes, core_settings, toolshed, tools, undo
    from chimerax.core.nogui import NoGuiLog
    from chimerax.core.session import Session, register_misc_commands

    if offscreen is None:
        offscreen = osmesa_available()
    session = Session("ChimeraX", debug=False, silent=False, minimal=False,
                      offscreen_rendering=offscreen)
    core_settings.init(session)
    register_misc_commands(session)
    attributes.RegAttrManager(session)
    session.logger.add_log(NoGuiLog())
    session.ui.initialize_color_output(False)
    toolshed.init(session.logger, debug=False, check_available=False, session=session)
    session.toolshed = toolshed.get_toolshed()
    session.toolshed.bootstrap_bundles(session, False)
    session.tools = tools.Tools(session, first=True)
    session.undo = undo.Undo(session, first=True)
    return session


@pytest.fixture(scope="session")
def cx_session(tmp_path_factory):
    """One embedded ChimeraX session (no GUI) shared by all tests of the run."""
    t0 = time.perf_counter()
    require_chimerax()  # the first `import chimerax` (~1.4 s: it imports all its bundles)
    ensure_bundle_installed()
    xdg = tmp_path_factory.mktemp("chimerax_xdg")
    saved = {k: os.environ.get(k) for k in
             ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "QT_QPA_PLATFORM")}
    os.environ.update(scratch_env(xdg, base={}))
    session = start_session()
    session.start_seconds = time.perf_counter() - t0  # reported by the smoke test
    yield session
    from chimerax.core.commands import run
    run(session, "close session", log=False)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cx(cx_session):
    """The shared session, with every model closed after the test."""
    yield cx_session
    from chimerax.core.commands import run
    run(cx_session, "close", log=False)


# --------------------------------------------------------------------------- subprocess

def run_chimerax(script: Path | str | None = None, *, commands: list[str] = (),
                 cwd: Path | None = None, offscreen: bool | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m chimerax.core --nogui [--offscreen] --exit`` in a subprocess.

    ``script`` is a .cxc or .py file (a .py script gets ``session``); ``commands`` are
    run first, each as ``--cmd``. Returns the CompletedProcess (text stdout/stderr); exit
    status 0 means success, 70 that a command failed. Skips if ChimeraX is missing.
    """
    require_chimerax()
    ensure_bundle_installed()
    if offscreen is None:
        offscreen = osmesa_available()
    args = [sys.executable, "-m", "chimerax.core", "--nogui", "--exit"]
    if offscreen:
        args.append("--offscreen")
    for c in commands:
        args += ["--cmd", c]
    if script is not None:
        args += ["--script", str(script)]
    with tempfile.TemporaryDirectory(prefix="chimerax_xdg_") as xdg:
        return subprocess.run(args, env=scratch_env(Path(xdg)), cwd=cwd, timeout=timeout,
                              capture_output=True, text=True, encoding="utf-8", errors="replace")


def run(session, command):
    """Run a ChimeraX command in ``session`` (as a user would type it); returns its result."""
    from chimerax.core.commands import run as cx_run
    return cx_run(session, command)


def logged(session, command):
    """(result, logged text) of a command."""
    from chimerax.core.logger import StringPlainTextLog
    with StringPlainTextLog(session.logger) as log:
        result = run(session, command)
    return result, log.getvalue()
