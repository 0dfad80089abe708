"""The `gaussianem` command line: help, simulate and fit through main(), error exits."""

import json

import mrcfile
import numpy as np
import pytest

from gaussianem.cli.main import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("simulate", "fit", "train", "analyze", "generate", "export", "bench"):
        assert cmd in out


def test_train_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "torchrun" in out and "--zdim-conf" in out


def test_simulate_and_fit(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "--test-model", "-o", str(sim), "-n", "16", "--box", "32", "--apix", "3",
                 "--states", "4"]) == 0
    with mrcfile.open(sim / "particles.mrcs") as m:
        assert m.data.shape == (16, 32, 32)
    assert main(["fit", str(sim / "consensus.mrc"), "-o", str(tmp_path / "g.pt"), "--steps", "80",
                 "--write-map", str(tmp_path / "g.mrc")]) == 0
    rep = json.load(open(tmp_path / "g_fit.json"))
    assert rep["correlation"] > 0.95
    with mrcfile.open(tmp_path / "g.mrc") as a, mrcfile.open(sim / "consensus.mrc") as b:
        assert a.data.shape == b.data.shape
        assert np.corrcoef(a.data.ravel(), b.data.ravel())[0, 1] > 0.95
    assert "correlation" in capsys.readouterr().out


def test_errors_exit_with_one_line(tmp_path, capsys):
    code = main(["fit", str(tmp_path / "missing.mrc"), "-o", str(tmp_path / "g.pt")])
    err = capsys.readouterr().err
    assert code == 1 and "missing.mrc" in err and "Traceback" not in err
    code = main(["simulate", "--test-model", "-o", str(tmp_path / "s"), "--box", "33"])
    assert code == 1 and "--box must be even" in capsys.readouterr().err
