"""How the bundle runs the engine: ``python -m gaussianem.cli.main ...`` with the Python and
the ``gaussianem`` package that this ChimeraX uses."""

from __future__ import annotations

import importlib.util
import os
import sys

ENGINE_MODULE = "gaussianem.cli.main"


def engine_command(args: list[str]) -> list[str]:
    """The command line that runs the engine's CLI with ``args``."""
    return [python_executable(), "-m", ENGINE_MODULE] + list(args)


def python_executable() -> str:
    """The Python to run the engine with: ChimeraX's own Python in the ChimeraX app
    (whose sys.executable is the ChimeraX program), else this interpreter."""
    exe = os.path.realpath(sys.executable or "python3")
    if "chimerax" in os.path.basename(exe).lower():
        try:
            from chimerax.core.python_utils import chimerax_python_executable
            py = chimerax_python_executable()
            if os.path.exists(py):
                return py
        except ImportError:
            pass
    return sys.executable


def engine_environment() -> dict:
    """Environment for the engine process: this Python's, with the folder holding the
    ``gaussianem`` package this bundle imports first on PYTHONPATH (so both use the same
    engine), and ChimeraX's user site when running inside the ChimeraX app."""
    env = dict(os.environ)
    try:
        from chimerax.core.python_utils import chimerax_environment
        with chimerax_environment():
            env = dict(os.environ)
    except Exception:  # noqa: BLE001 (not inside the ChimeraX app; keep this environment)
        pass
    spec = importlib.util.find_spec("gaussianem")
    if spec is not None and spec.submodule_search_locations:
        parent = os.path.dirname(list(spec.submodule_search_locations)[0])
        env["PYTHONPATH"] = os.pathsep.join([parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"   # read back as UTF-8 whatever this process's locale
    return env
