"""The code's structure (docs/engine.md, "Map of the code" and "The bundle's map").

The engine's layers point one way: every import between engine modules, inside functions
too, goes from a higher layer to the same or a lower one; there is no import loop; no
engine module imports ChimeraX; an engine module imports another engine module only at its
top (an import inside a function must not hide a loop; the command-line modules in
``gaussianem.cli`` are the exception: they import their library when the command runs, so
that ``gaussianem --help`` answers without loading torch).

The ChimeraX bundle (``src/``, package ``chimerax.gaussianem``) imports its own modules
lazily, inside functions, as ChimeraX bundles do (a command's module is loaded when it is
first used); those imports count too: no loop among its modules, top-level or not.

No module of the engine, the bundle, ``benchmarks/`` or ``tools/`` is over 400 lines (a script
known to be over it and due to be split may be listed in :data:`LONG_SCRIPTS`; none is now)."""

from __future__ import annotations

import ast
import os

import gaussianem

PKG = os.path.dirname(os.path.abspath(gaussianem.__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLE = os.path.join(REPO, "src")
BUNDLE_PACKAGE = "chimerax.gaussianem"
SCRIPT_FOLDERS = ("benchmarks", "tools")
# Scripts over the limit that are known and will be split (their owner splits them; see
# issue 30): each entry names one file, and the test fails once it is short again, so the
# entry is removed then.
LONG_SCRIPTS: set[str] = set()
LAYERS = {"errors": 0, "progress": 0, "device": 0, "physics": 1, "io": 2, "model": 3, "train": 4,
          "analysis": 5, "sim": 6, "bench": 7, "cluster": 7, "cli": 8}
MAX_LINES = 400


def _modules(folder: str = PKG, package: str = "gaussianem") -> dict[str, str]:
    """Module name -> file of every module of the package in ``folder``."""
    out = {}
    for dp, _, files in os.walk(folder):
        if "__pycache__" in dp:
            continue
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dp, f), folder)[:-3]
                name = ".".join([package] + rel.split(os.sep))
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = os.path.join(dp, f)
    return out


def _imports(name: str, path: str, mods: dict[str, str] | None = None,
             roots: tuple[str, ...] = ("gaussianem", "chimerax")):
    """(imported module, inside a function?) for every import in ``path`` of a module
    under one of ``roots`` (``mods``: the package's modules, to tell a module imported with
    ``from package import module`` from a name)."""
    tree = ast.parse(open(path).read())
    is_pkg = path.endswith("__init__.py")
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in funcs for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    mods = _modules() if mods is None else mods
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[:len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            # "from pkg import module" imports the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in roots:
                yield t, id(node) in inner


def _loops(graph: dict[str, set]) -> list[str]:
    """Every import loop of ``graph`` (module -> modules it imports), by depth-first search."""
    state, stack, loops = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                loops.append("import loop: " + " -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return loops


def _bundle_graph(folder: str = BUNDLE, package: str = BUNDLE_PACKAGE) -> dict[str, set]:
    """The bundle's modules and the bundle modules each imports (at its top or in a function)."""
    mods = _modules(folder, package)
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        for t, _ in _imports(m, path, mods, roots=("chimerax",)):
            while t not in mods and t.startswith(package + "."):     # a name imported from a module
                t = t.rsplit(".", 1)[0]
            if t in mods and t != m and t != package:
                graph[m].add(t)
    return graph


def _long(paths, limit: int = MAX_LINES) -> dict[str, int]:
    return {p: n for p in paths if (n := len(open(p).read().splitlines())) > limit}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], -1) if len(parts) > 1 else -1


def test_layers_point_one_way_and_no_loops():
    mods = _modules()
    graph = {m: set() for m in mods}
    problems = []
    for m, path in mods.items():
        for t, in_function in _imports(m, path):
            if t.startswith("chimerax"):
                problems.append(f"{m} imports {t}: the engine never imports ChimeraX")
                continue
            if t == "gaussianem":                   # __version__
                continue
            assert t in mods, f"{m} imports {t}, which is not an engine module"
            if in_function and not m.startswith("gaussianem.cli."):
                problems.append(f"{m} imports {t} inside a function (import it at the top)")
            if _layer(t) > _layer(m):
                problems.append(f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)}): a lower layer "
                                f"imports a higher one")
            if t != m:
                graph[m].add(t)
    problems += _loops(graph)
    assert not problems, "\n".join(problems)


def test_every_subpackage_has_a_layer_and_modules_stay_small():
    mods = _modules()
    assert {m.split(".")[1] for m in mods if "." in m} <= set(LAYERS)
    long = {m: n for m, p in mods.items() if (n := len(open(p).read().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_check_sees_a_loop_and_a_hidden_import(tmp_path):
    """The checker itself: a function-level import and an upward import are reported."""
    src = tmp_path / "m.py"
    src.write_text("from gaussianem.errors import GaussianEMError\n"
                   "def f():\n    from gaussianem.train.loop import train\n")
    found = list(_imports("gaussianem.physics.m", str(src)))
    assert ("gaussianem.errors", False) in found and ("gaussianem.train.loop", True) in found
    assert _layer("gaussianem.train.loop") > _layer("gaussianem.physics.m")


def test_the_bundle_has_no_import_loop_and_small_modules():
    graph = _bundle_graph()
    assert f"{BUNDLE_PACKAGE}.session_result" in graph and f"{BUNDLE_PACKAGE}.commands.train" in graph
    assert graph[f"{BUNDLE_PACKAGE}.commands.explore"], "the bundle's imports were not read"
    problems = _loops(graph)
    assert not problems, "\n".join(problems)
    long = _long(_modules(BUNDLE, BUNDLE_PACKAGE).values())
    assert not long, f"bundle modules over {MAX_LINES} lines: {long}"


def test_benchmarks_and_tools_stay_small():
    scripts = {os.path.relpath(os.path.join(dp, f), REPO).replace(os.sep, "/")
               for folder in SCRIPT_FOLDERS for dp, _, files in os.walk(os.path.join(REPO, folder))
               for f in files if f.endswith(".py") and "__pycache__" not in dp}
    assert "tools/build_bundle.py" in scripts and "benchmarks/robustness.py" in scripts
    long = _long([os.path.join(REPO, p) for p in sorted(scripts)])
    long = {os.path.relpath(p, REPO).replace(os.sep, "/"): n for p, n in long.items()}
    assert set(long) <= LONG_SCRIPTS, f"scripts over {MAX_LINES} lines: " \
        f"{ {p: n for p, n in long.items() if p not in LONG_SCRIPTS} }"
    short_again = LONG_SCRIPTS - set(long)
    assert not short_again, f"{sorted(short_again)} are no longer over {MAX_LINES} lines: remove them from LONG_SCRIPTS"


def test_the_check_sees_a_loop_in_the_bundle(tmp_path):
    """The bundle's checker itself: a loop made of imports inside functions (as the markers
    <-> session_result loop was), across a subpackage and by relative imports, is found,
    and one module's name imported from another is not taken for a module."""
    pkg = tmp_path / "src"
    (pkg / "commands").mkdir(parents=True)
    (pkg / "__init__.py").write_text("def f():\n    from . import commands\n")
    (pkg / "commands" / "__init__.py").write_text("")
    (pkg / "commands" / "explore.py").write_text("def f():\n    from ..result import Result\n")
    (pkg / "result.py").write_text("import numpy\nfrom .colours import blue\n")
    (pkg / "colours.py").write_text("def blue():\n    from .commands.explore import f\n")
    graph = _bundle_graph(str(pkg), "chimerax.x")
    assert graph["chimerax.x.result"] == {"chimerax.x.colours"}
    loops = _loops(graph)
    assert loops == ["import loop: chimerax.x.colours -> chimerax.x.commands.explore -> chimerax.x.result "
                     "-> chimerax.x.colours"], loops
    (pkg / "colours.py").write_text("def blue():\n    pass\n")
    assert not _loops(_bundle_graph(str(pkg), "chimerax.x"))

