"""The engine's layers point one way (docs/engine.md, "Map of the code").

Every import between engine modules, inside functions too, goes from a higher layer to
the same or a lower one; there is no import loop; no engine module imports ChimeraX;
an engine module imports another engine module only at its top (an import inside a
function must not hide a loop; the command-line modules in ``gaussianem.cli`` are the
exception: they import their library when the command runs, so that ``gaussianem --help``
answers without loading torch); no module is over 400 lines."""

from __future__ import annotations

import ast
import os

import gaussianem

PKG = os.path.dirname(os.path.abspath(gaussianem.__file__))
LAYERS = {"errors": 0, "progress": 0, "device": 0, "physics": 1, "io": 2, "model": 3, "train": 4,
          "analysis": 5, "sim": 6, "bench": 7, "cluster": 7, "cli": 8}
MAX_LINES = 400


def _modules() -> dict[str, str]:
    out = {}
    for dp, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dp, f), os.path.dirname(PKG))[:-3]
                name = rel.replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = os.path.join(dp, f)
    return out


def _imports(name: str, path: str):
    """(imported engine module, inside a function?) for every import in ``path``."""
    tree = ast.parse(open(path).read())
    is_pkg = path.endswith("__init__.py")
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in funcs for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    mods = _modules()
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
            if t.split(".")[0] in ("gaussianem", "chimerax"):
                yield t, id(node) in inner


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
    # cycles, by depth-first search
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                problems.append("import loop: " + " -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
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
