"""A run folder written by engine 0.1.0 before the package was split into subpackages
(tests/data/run_0.1.0: 64 particles, box 24, split latent 2 + 1, one epoch; optimizer
state stripped to keep it small) still opens and generates maps and models."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from gaussianem.analysis.result import load_result
from gaussianem.io.models import read_model

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data", "run_0.1.0")


@pytest.fixture()
def old_run(tmp_path):
    run = tmp_path / "run_0.1.0"
    shutil.copytree(DATA, run)
    return run


def test_old_run_opens_and_generates(old_run):
    r = load_result(str(old_run))
    assert r.z.shape == (64, 3) and r.model_config.split
    assert r.health is not None and r.health["status"] in ("healthy", "warning", "failed")
    vol = r.volume(r.z[:2])
    assert vol.shape == (2, r.grid.box, r.grid.box, r.grid.box) and np.isfinite(vol).all()
    assert float(np.abs(vol).max()) > 0
    pca = r.pca("conf")
    assert pca.scores.shape[0] == 64
    model = read_model(str(old_run / "model.pdb"))
    moved = r.displace_model(model, r.z[0])
    assert np.isfinite(moved.coords).all()
    assert float(np.abs(moved.coords - model.coords).max()) < 30.0   # within the decoder's bound


def test_old_run_generate_cli(old_run, tmp_path):
    from gaussianem.cli.main import main
    out = tmp_path / "gen"
    assert main(["generate", str(old_run), "--pc", "1", "--steps", "3", "-o", str(out)]) == 0
    assert len([f for f in os.listdir(out) if f.endswith(".mrc")]) == 3
