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


def _star_with_negative_bfactor(tiny_sim, tmp_path):
    """tiny_sim's particles with rlnCtfBfactor -40 (Warp's dose weighting): a file the
    reader warns about."""
    import starfile
    blocks = starfile.read(tiny_sim / "particles.star", always_dict=True)
    p = blocks["particles"]
    p["rlnImageName"] = [f"{n.split('@')[0]}@{tiny_sim / n.split('@')[1]}" for n in p["rlnImageName"]]
    p["rlnCtfBfactor"] = -40.0
    path = tmp_path / "warp.star"
    starfile.write(blocks, path)
    return path


def test_warnings_and_errors_are_printed_once_without_source_lines(tiny_sim, tmp_path):
    """A warning met twice in one command (training reads the particle file more than
    once) is one 'warning:' line without Python's source line; an error under the default
    progress bar is one 'error:' line. In a process of its own, as users run it."""
    import subprocess
    import sys
    star = _star_with_negative_bfactor(tiny_sim, tmp_path)

    def gaussianem(*argv):
        return subprocess.run([sys.executable, "-m", "gaussianem.cli.main", *map(str, argv)], capture_output=True,
                              text=True, timeout=600)

    r = gaussianem("train", star, "--consensus", tiny_sim / "consensus.mrc", "-o", tmp_path / "run", "--epochs", "1",
                   "--zdim", "1", "--downsample", "16", "--threads", "1", "--num-gaussians", "20", "--progress", "none")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "rlnCtfBfactor is negative" in line]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("gaussianem train: warning: ") and "Warning:" not in r.stderr, r.stderr
    r = gaussianem("train", star, "--consensus", tmp_path / "missing.mrc", "-o", tmp_path / "r2", "--epochs", "1",
                   "--threads", "1")                                # the default progress: bar
    assert r.returncode == 1
    assert r.stderr.count("missing.mrc") == 1, r.stderr
    assert "gaussianem train: error: " in r.stderr and "Traceback" not in r.stderr
