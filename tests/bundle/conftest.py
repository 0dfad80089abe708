"""Bundle tests: the embedded headless ChimeraX session (skips when ChimeraX is not
installed); the engine fixtures (tiny_sim, tiny_result) come from tests/conftest.py."""

import pytest

from chimerax_fixture import cx, cx_session  # noqa: F401


@pytest.fixture(autouse=True)
def keep_locale():
    """ChimeraX's PDB reader sets this process's LC_CTYPE to "C"; put it back so that
    later subprocess output (decoded with the locale's encoding) still reads as UTF-8."""
    import locale
    saved = locale.setlocale(locale.LC_CTYPE)
    yield
    locale.setlocale(locale.LC_CTYPE, saved)
