"""ChimeraX-GaussianEM: the ChimeraX bundle of GaussianEM (package ``chimerax.gaussianem``).

ChimeraX calls the methods of ``bundle_api`` lazily: a command's module is imported the
first time the command is used, a tool's the first time it is started. The commands and
the tool are listed in bundle_info.xml; the numerics live in the separate ``gaussianem``
engine package, which this bundle never re-implements.

Scripting: ``from chimerax.gaussianem import open_result`` (see opening.py and
session_result.py). The name is loaded on first use, so importing the package does not
import torch. The modules are mapped in docs/engine.md ("The bundle's map").
"""

from chimerax.core.toolshed import BundleAPI

# The tool named in bundle_info.xml -> (module, class) that implements it.
_TOOLS = {
    "GaussianEM Latent Explorer": ("explorer.tool", "LatentExplorer"),
}

# Classes a ChimeraX session file names, found by get_class when it is restored:
# class name -> module. The session's GaussianEM state (the current result) is one.
_SESSION_CLASSES = {
    "GaussianEMState": "session_state",
    **{name: module for module, name in _TOOLS.values()},
}


class _API(BundleAPI):

    api_version = 1  # register_command/start_tool receive BundleInfo and CommandInfo/ToolInfo

    @staticmethod
    def register_command(bi, ci, logger):
        """Register the command ``ci.name`` ("gaussianem <subcommand>")."""
        from . import commands
        commands.register_command(ci.name, logger)

    @staticmethod
    def start_tool(session, bi, ti):
        """Start the tool ``ti.name``."""
        import importlib
        try:
            module_name, class_name = _TOOLS[ti.name]
        except KeyError:
            raise ValueError(f"GaussianEM bundle has no tool named {ti.name!r}") from None
        module = importlib.import_module(f".{module_name}", __name__)
        return getattr(module, class_name)(session, ti.name)

    @staticmethod
    def get_class(class_name):
        """The class with this name, for restoring sessions."""
        import importlib
        module_name = _SESSION_CLASSES.get(class_name)
        if module_name is None:
            return None
        return getattr(importlib.import_module(f".{module_name}", __name__), class_name)


bundle_api = _API()

# Names of the scripting interface -> module that defines them (imported on first use).
_LAZY = {
    "open_result": "opening",
    "current_result": "session_state",
    "GaussianEMResult": "session_result",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
