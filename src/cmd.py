"""The ``gaussianem`` commands: ``gaussianem <subcommand> ...``.

Each command is a thin function over the ``gaussianem`` engine: parse, call the engine,
show the result, log. To add a subcommand:

1. write ``def gaussianem_xxx(session, ...)`` and its ``gaussianem_xxx_desc = CmdDesc(...)``;
2. add ``"gaussianem xxx": (gaussianem_xxx, gaussianem_xxx_desc)`` to ``_COMMANDS``;
3. list it in bundle_info.xml (a ``ChimeraX :: Command :: gaussianem xxx :: ...`` line),
   which is how ChimeraX knows to call ``register_command`` for it.
"""

from chimerax.core.commands import CmdDesc, register
from chimerax.core.errors import UserError

BUNDLE_DIST = "ChimeraX-GaussianEM"
ENGINE_DIST = "gaussianem"


def _dist_version(dist):
    """Version of an installed distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def gaussianem_version(session):
    """Report the versions of this bundle and of the GaussianEM engine."""
    bundle = _dist_version(BUNDLE_DIST) or "unknown (not installed as a wheel)"
    engine = _dist_version(ENGINE_DIST)
    if engine is None:
        raise UserError(f"GaussianEM bundle {bundle}: the GaussianEM engine (Python "
                        f"package {ENGINE_DIST!r}) is not installed in ChimeraX's Python")
    session.logger.info(f"GaussianEM bundle {bundle}, engine {engine}")
    return {"bundle": bundle, "engine": engine}


gaussianem_version_desc = CmdDesc(synopsis="report GaussianEM bundle and engine versions")


# Command name -> (function, CmdDesc). Every name here must also be in bundle_info.xml.
_COMMANDS = {
    "gaussianem version": (gaussianem_version, gaussianem_version_desc),
}


def register_command(command_name, logger):
    """Register one command; called lazily by the bundle API on its first use."""
    try:
        function, desc = _COMMANDS[command_name]
    except KeyError:
        logger.warning(f"{command_name!r} is listed in bundle_info.xml "
                       "but not implemented in this version of ChimeraX-GaussianEM")
        return
    register(command_name, desc, function, logger=logger)
