"""The documentation works from a clone (issue 29, item 19): nothing it relies on lives
outside the repository, and the headless ChimeraX that ``make setup`` installs runs as
docs/headless_chimerax.md says (``tools/chimerax_headless.sh``, not a ``chimerax``
program, which .venv does not have)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

from chimerax_fixture import REPO, ensure_bundle_installed, require_chimerax

DOCS = ["README.md", *(f"docs/{n}" for n in sorted(os.listdir(REPO / "docs")) if n.endswith((".md", ".py"))),
        "src/docs/user/commands/gaussianem.html", "tools/setup_env.sh", "tools/install_chimerax.py",
        "tools/demo.sh", "tools/doc_pictures.sh", "tests/bundle/chimerax_fixture.py"]


def test_docs_point_at_nothing_outside_the_repository():
    for name in DOCS:
        text = (REPO / name).read_text(encoding="utf-8")
        assert "../shared" not in text and "shared/chimerax" not in text, name


def test_every_headless_command_line_in_the_docs_names_what_runs_it():
    """A ``chimerax --nogui`` line is said to be the ChimeraX app's; the project's own runs
    go through tools/chimerax_headless.sh."""
    for name in DOCS:
        for line in (REPO / name).read_text(encoding="utf-8").splitlines():
            if re.search(r"(^|\s)chimerax --nogui", line):
                assert "ChimeraX app" in line, f"{name}: {line.strip()}"
    assert "tools/chimerax_headless.sh --script" in (REPO / "docs" / "chimerax.md").read_text()


def test_headless_chimerax_runs_as_the_docs_say(tmp_path):
    require_chimerax()
    ensure_bundle_installed()
    doc = (REPO / "docs" / "headless_chimerax.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("tools/chimerax_headless.sh --cmd"))
    env = dict(os.environ, GAUSSIANEM_CHIMERAX_XDG=str(tmp_path / "xdg"))
    p = subprocess.run(shlex.split(line), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "GaussianEM bundle" in p.stdout and ", engine " in p.stdout
    assert (tmp_path / "xdg" / "config" / "ChimeraX").is_dir()               # settings in the folder given
    p = subprocess.run(["tools/chimerax_headless.sh", "--cmd", "gaussianem nosuchcommand"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 70                                                # a failed command stops a script
