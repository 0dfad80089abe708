"""Smoke tests of the ChimeraX-GaussianEM bundle in a real headless ChimeraX session.

The cx_session/cx fixtures (tests/bundle/chimerax_fixture.py, imported by conftest.py) build and
install the bundle wheel when the installed one is missing or out of date.
"""

import numpy as np
import pytest

from chimerax_fixture import osmesa_available, run_chimerax

BUNDLE_COMMANDS = ["train", "open", "show", "trajectory", "markers", "subset", "analyze", "reconstruct", "movie",
                   "fitdomains", "jobs", "stop", "version"]


def _write_map(path, shape=(12, 10, 8), voxel_size=(1.5, 1.5, 1.5), seed=0):
    """A small random map (z, y, x order, as mrcfile stores it)."""
    import mrcfile
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel_size
    return data


def _logged(session, command):
    """Run a command and return (its result, the plain text it logged)."""
    from chimerax.core.commands import run
    from chimerax.core.logger import StringPlainTextLog
    with StringPlainTextLog(session.logger) as log:
        result = run(session, command)
    return result, log.getvalue()


def test_session_starts(cx_session):
    # Also reports how long the embedded session took to start (pytest -s).
    print(f"\nembedded ChimeraX session started in {cx_session.start_seconds:.2f} s")
    assert not cx_session.ui.is_gui
    assert cx_session.start_seconds < 60


def test_bundle_registered_with_all_commands(cx_session):
    bundle = cx_session.toolshed.find_bundle("ChimeraX-GaussianEM", cx_session.logger)
    assert bundle is not None, "bundle not discovered by the toolshed"
    assert bundle.name == "ChimeraX-GaussianEM"
    assert [c.name for c in bundle.commands] == [f"gaussianem {c}" for c in BUNDLE_COMMANDS]
    assert [t.name for t in bundle.tools] == ["GaussianEM Latent Explorer"]


def test_version_logs_bundle_and_engine(cx):
    from importlib.metadata import version
    result, text = _logged(cx, "gaussianem version")
    bundle, engine = version("ChimeraX-GaussianEM"), version("gaussianem")
    assert result == {"bundle": bundle, "engine": engine}
    assert f"GaussianEM bundle {bundle}, engine {engine}" in text


def test_open_map_gives_volume_with_same_data(cx, tmp_path):
    from chimerax.map import Volume
    data = _write_map(tmp_path / "map.mrc", voxel_size=(2.0, 2.0, 2.0))
    models, text = _logged(cx, f"open {tmp_path / 'map.mrc'}")
    assert len(models) == 1 and isinstance(models[0], Volume)
    v = models[0]
    np.testing.assert_array_equal(v.full_matrix(), data)
    assert v.data.size == (8, 10, 12)  # ChimeraX gives sizes in x, y, z order
    assert v.data.step == pytest.approx((2.0, 2.0, 2.0))
    assert "Opened map.mrc as #1" in text


def test_unknown_subcommand_is_user_error(cx):
    from chimerax.core.commands import run
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="Unknown command"):
        run(cx, "gaussianem nosuchthing")


@pytest.mark.skipif(not osmesa_available(), reason="OSMesa (libosmesa6) not installed")
def test_offscreen_png(cx, tmp_path):
    from chimerax.core.commands import run
    _write_map(tmp_path / "map.mrc")
    run(cx, f"open {tmp_path / 'map.mrc'}")
    run(cx, f"save {tmp_path / 'view.png'} width 64 height 48 supersample 1")
    from PIL import Image
    with Image.open(tmp_path / "view.png") as im:
        assert im.size == (64, 48)


def test_bundle_in_subprocess(tmp_path):
    # A fresh `python -m chimerax.core --nogui --exit` finds the installed bundle too.
    _write_map(tmp_path / "map.mrc")
    script = tmp_path / "check.cxc"
    script.write_text("gaussianem version\nopen map.mrc\nmeasure mapstats #1\n")
    r = run_chimerax(script, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "GaussianEM bundle" in r.stdout
    assert "Opened map.mrc as #1" in r.stdout
