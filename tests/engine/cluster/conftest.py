"""The SLURM daemons these tests start are stopped when the session ends.

``slurm_up`` (tests/conftest.py) starts a one-node SLURM with tools/setup_slurm.sh when it
is not running; a cluster that was already up when the session began (someone else's, or
started by hand with 'make slurm') is left running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SLURM_SETUP = Path(__file__).resolve().parents[3] / "tools" / "setup_slurm.sh"


def _slurm_running() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


@pytest.fixture(scope="session", autouse=True)
def slurm_stopped_at_the_end():
    was_running = _slurm_running()
    yield
    if not was_running and _slurm_running() and os.geteuid() == 0:
        subprocess.run(["bash", str(SLURM_SETUP), "--stop"], capture_output=True, timeout=120)
