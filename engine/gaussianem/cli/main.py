"""``gaussianem``: the engine's command line (runs without ChimeraX, e.g. on GPU nodes).

Each subcommand is a module of this package with ``add_args(parser)`` and ``main(args)``;
its docstring is its help text.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from gaussianem import __version__
from gaussianem.errors import GaussianEMError

COMMANDS = ["simulate", "fit", "train", "status", "stop", "analyze", "generate", "reconstruct", "export", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaussianem",
        description="Cryo-EM heterogeneity analysis with deformable 3D Gaussians.",
        epilog="Run 'gaussianem COMMAND -h' for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"gaussianem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f".{name}", __package__)
        doc = (mod.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_args(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = warning_printer(args.command)
            return args._main(args) or 0
    except KeyboardInterrupt:
        print("interrupted; a resumable checkpoint was kept where one was being written",
              file=sys.stderr)
        return 130
    except (GaussianEMError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"gaussianem {args.command}: error: {e}", file=sys.stderr)
        return 1


def warning_printer(command: str):
    """A ``warnings.showwarning`` for the command line: each warning as one line,
    ``gaussianem COMMAND: warning: ...``, without Python's file, line and source, and each
    text once per command (a file read twice, e.g. by training's set-up and its loop, warns
    once; the filters' once-per-location memory is reset whenever a ``catch_warnings``
    block changes them, as reading MRC headers does)."""
    seen = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text in seen:
            return
        seen.add(text)
        try:
            print(f"gaussianem {command}: warning: {text}", file=file or sys.stderr, flush=True)
        except OSError:               # stderr gone: as warnings.showwarning, say nothing
            pass
    return show


if __name__ == "__main__":
    sys.exit(main())
