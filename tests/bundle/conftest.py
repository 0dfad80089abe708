"""Bundle tests: the embedded headless ChimeraX session (skips when ChimeraX is not
installed) and ``opened`` (tiny_result opened in it); the engine fixtures (tiny_sim,
tiny_result) come from tests/conftest.py."""

import pytest

from chimerax_fixture import cx, cx_session, run  # noqa: F401


@pytest.fixture
def opened(cx, tiny_result):  # noqa: F811
    """The tiny result opened in the session (its map and atomic model)."""
    return run(cx, f"gaussianem open {tiny_result}")


@pytest.fixture(autouse=True)
def keep_locale():
    """ChimeraX's PDB reader sets this process's LC_CTYPE to "C"; put it back so that
    later subprocess output (decoded with the locale's encoding) still reads as UTF-8."""
    import locale
    saved = locale.setlocale(locale.LC_CTYPE)
    yield
    locale.setlocale(locale.LC_CTYPE, saved)
