"""`make demo` checks itself (issue 29, item 10): tools/demo_check.py scores the result
against the simulated truth (the conformational component that follows the motion, the
presence), prints PASS/FAILED lines and exits non-zero on a miss; tools/demo.sh then ends
with a FAILED line and a non-zero exit status, after taking its pictures along the
component that carries the motion.

Fixtures: ``tiny_sim`` and ``tiny_result`` (tests/conftest.py: 2 epochs, far from the
targets).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess

from chimerax_fixture import REPO, ensure_bundle_installed, osmesa_available, require_chimerax


def _demo_check():
    spec = importlib.util.spec_from_file_location("demo_check", REPO / "tools" / "demo_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_check_names_the_motion_component_and_fails_loudly(tiny_result, tiny_sim, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_result, run, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    dc = _demo_check()
    rc = dc.main([str(run), str(tiny_sim)])
    out = capsys.readouterr().out
    c = json.loads((run / "demo_check.json").read_text())
    assert c["motion_spearman"] == max(c["motion_spearman_per_pc"])             # the component that follows it
    assert c["motion_pc"] == 1 + c["motion_spearman_per_pc"].index(c["motion_spearman"])
    assert f"conf PC{c['motion_pc']} with the true motion" in out
    if c["passed"]:
        assert rc == 0 and "FAILED" not in out
    else:
        assert rc == 1 and out.splitlines()[-1].startswith("FAILED: the demo's result misses its target(s)")


def test_demo_that_misses_its_targets_exits_non_zero_with_a_failed_line(tmp_path):
    """The real tools/demo.sh on 300 particles for 2 epochs (minutes): far from the targets."""
    require_chimerax()
    ensure_bundle_installed()
    env = dict(os.environ, DEMO_PARTICLES="300", DEMO_EPOCHS="2", DEMO_THREADS="1", OMP_NUM_THREADS="1",
               GAUSSIANEM_CHIMERAX_XDG=str(tmp_path / "xdg"))
    p = subprocess.run(["bash", "tools/demo.sh", str(tmp_path / "demo")], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=1200)
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert lines[-1].startswith("FAILED: make demo's result misses its targets")
    assert any(x.startswith("FAILED motion") or x.startswith("FAILED presence") for x in lines)
    assert re.search(r"== \[0 min \d\d s\] 2/6 train", p.stdout)               # progress, with the time so far
    assert "[epoch] epoch=2 epochs=2" in p.stdout + p.stderr
    pc = json.loads((tmp_path / "demo" / "run" / "demo_check.json").read_text())["motion_pc"]
    if osmesa_available():                                                    # the pictures, along that component
        assert (tmp_path / "demo" / "chimerax" / f"pc{pc}_p95.png").is_file()
