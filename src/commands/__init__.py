"""The ``gaussianem`` commands, grouped by what the user does:

- :mod:`.explore`: open a result and move through its latent space (``open``, ``show``,
  ``trajectory``, ``markers``, ``fitdomains``);
- :mod:`.train`: training and the session's engine jobs (``train``, ``jobs``, ``stop``,
  ``version``);
- :mod:`.results`: files made from a result (``subset``, ``analyze``, ``reconstruct``,
  ``movie``).

Each command is a thin function over the engine, through the session's
:class:`~chimerax.gaussianem.session_result.GaussianEMResult` and :mod:`..jobs`: parse, call,
show, log. Users see keywords in camelCase (``zdimConf``); Python uses snake_case
(``zdim_conf``). Shared argument types and keyword lists are in :mod:`.args`.

To add a subcommand: write ``gaussianem_xxx(session, ...)`` and ``gaussianem_xxx_desc`` in
the module of its group, add it to :data:`COMMANDS` and list it in bundle_info.xml
(ChimeraX calls :func:`register_command` only for the commands listed there).
"""

from __future__ import annotations

import importlib

# Command name -> (module of this package, function); its CmdDesc is the function's name
# + "_desc" in the same module. Every name here must also be in bundle_info.xml.
COMMANDS = {
    "gaussianem train": ("train", "gaussianem_train"),
    "gaussianem open": ("explore", "gaussianem_open"),
    "gaussianem show": ("explore", "gaussianem_show"),
    "gaussianem trajectory": ("explore", "gaussianem_trajectory"),
    "gaussianem markers": ("explore", "gaussianem_markers"),
    "gaussianem subset": ("results", "gaussianem_subset"),
    "gaussianem analyze": ("results", "gaussianem_analyze"),
    "gaussianem movie": ("results", "gaussianem_movie"),
    "gaussianem reconstruct": ("results", "gaussianem_reconstruct"),
    "gaussianem fitdomains": ("explore", "gaussianem_fitdomains"),
    "gaussianem jobs": ("train", "gaussianem_jobs"),
    "gaussianem stop": ("train", "gaussianem_stop"),
    "gaussianem version": ("train", "gaussianem_version"),
}


def command(command_name: str):
    """(function, CmdDesc) of a command."""
    module_name, function_name = COMMANDS[command_name]
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, function_name), getattr(module, function_name + "_desc")


def register_command(command_name, logger):
    """Register one command; called lazily by the bundle API on its first use."""
    from chimerax.core.commands import register

    from ..errors import user_errors
    if command_name not in COMMANDS:
        logger.warning(f"{command_name!r} is listed in bundle_info.xml "
                       "but not implemented in this version of ChimeraX-GaussianEM")
        return
    function, desc = command(command_name)
    register(command_name, desc, user_errors(function), logger=logger)
