"""Bundle tests: the embedded headless ChimeraX session (skips when ChimeraX is not
installed); the engine fixtures (tiny_sim, tiny_result) come from tests/conftest.py."""

from chimerax_fixture import cx, cx_session  # noqa: F401
