"""Deformable reconstruction (gaussianem reconstruct, analysis.reconstruct): on simulated
hinge data, particles backprojected through their decoded motions into an end state match
that state's true map better than a plain backprojection of the same particles; the files,
half sets and errors a user meets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gaussianem.analysis import evaluate as ev
from gaussianem.analysis.reconstruct import half_split, reconstruct
from gaussianem.analysis.result import load_result
from gaussianem.cli.main import main
from gaussianem.errors import ResultError
from gaussianem.io.mrc import read_map
from gaussianem.physics import fsc as fsc_mod


def _auc(a, b, apix):
    return fsc_mod.auc(fsc_mod.fsc(a, b, apix)[1])


def _corr(a, b, where=None):
    a, b = np.ravel(a), np.ravel(b)
    if where is not None:
        a, b = a[np.ravel(where)], b[np.ravel(where)]
    return float(np.corrcoef(a, b)[0, 1])


def test_deformable_beats_rigid_at_the_end_states(tiny_trained, tiny_sim):
    r = load_result(tiny_trained)
    truth = ev.load_truth(str(tiny_sim))
    motion, present, levels = truth["motion"], truth["present"].astype(bool), truth["eval_motion"]
    every = np.flatnonzero(present)
    for k in (0, len(levels) - 1):
        z = np.median(r.z[present & (np.abs(motion - levels[k]) <= 0.2)], axis=0)
        rec = reconstruct(r, every, state=z)
        ref = read_map(truth["truth_maps"][k])[0]
        mid = read_map(truth["truth_maps"][len(levels) // 2])[0]
        moving = np.abs(ref - mid) > 0.1 * ref.max()              # where this state differs
        d, g = rec.maps["deformed"], rec.maps["rigid"]
        assert _auc(d, ref, r.grid.apix) > _auc(g, ref, r.grid.apix) + 0.01, k
        assert _corr(d, ref) > _corr(g, ref), k
        assert _corr(d, ref, moving) > _corr(g, ref, moving) + 0.03, k
        assert rec.n_particles == len(every) and abs(rec.n_half[0] - rec.n_half[1]) <= 1
        assert rec.split == "random"
        # the halves agree well beyond chance, and the final map is their combination
        assert rec.curves["deformed"][: len(rec.freqs) // 2].min() > 0.5
        assert _corr(rec.maps["deformed"], rec.halves["deformed"][0]) > 0.7


def test_cli_files(tiny_trained, tiny_sim, tmp_path):
    out = tmp_path / "rec" / "c.mrc"
    assert main(["reconstruct", str(tiny_trained), "--pc-range", "1,-1,1", "--progress", "none",
                 "-o", str(out)]) == 0
    summary = json.loads((tmp_path / "rec" / "c_fsc.json").read_text())
    for name in ("c.mrc", "c_masked.mrc", "c_mask.mrc", "c_half1.mrc", "c_half2.mrc", "c_rigid.mrc", "c_fsc.txt",
                 "c_fsc.png"):
        assert (tmp_path / "rec" / name).stat().st_size > 0, name
    assert summary["selection"].startswith("PC1 between -1 and 1")
    assert set(summary["resolution_0.143"]) == {"deformed", "deformed unmasked", "rigid", "rigid unmasked"}
    assert 6.0 <= summary["resolution_0.143"]["deformed"] < 40
    vol, apix, origin = read_map(out)
    cons, capix, corigin = read_map(tiny_sim / "consensus.mrc")
    assert vol.shape == cons.shape and apix == pytest.approx(capix) and np.allclose(origin, corigin)
    table = np.loadtxt(tmp_path / "rec" / "c_fsc.txt")
    assert table.shape == (16, 7) and np.allclose(table[:, 2], 1 / table[:, 1])
    # not replaced without --force
    assert main(["reconstruct", str(tiny_trained), "-o", str(out), "--progress", "none"]) == 1


def test_bad_input(tiny_trained, tmp_path, capsys):
    sel = tmp_path / "six.txt"
    sel.write_text("0 1 2 3 4 5\n")
    assert main(["reconstruct", str(tiny_trained), "--select", str(sel), "-o", str(tmp_path / "a.mrc")]) == 1
    assert "too few for two half maps" in capsys.readouterr().err
    assert main(["reconstruct", str(tiny_trained), "--z", "1 2", "-o", str(tmp_path / "b.mrc")]) == 1
    assert "has 3 values, got 2" in capsys.readouterr().err
    assert main(["reconstruct", str(tiny_trained), "--state", "particle", "-o", str(tmp_path / "c.mrc")]) == 1
    assert "--state particle needs --particle" in capsys.readouterr().err
    r = load_result(tiny_trained)
    with pytest.raises(ResultError, match="even size"):
        reconstruct(r, np.arange(40), box=33)


def test_half_sets_follow_rln_random_subset():
    class Data:
        table = pd.DataFrame({"rlnRandomSubset": [1, 2, 2, 1, 2, 1]})
    half, how = half_split(Data(), np.array([0, 1, 2, 4]))
    assert how == "rlnRandomSubset" and half.tolist() == [0, 1, 1, 1]
    Data.table = pd.DataFrame({"rlnRandomSubset": [1, 1, 1, 1]})      # one half only: random instead
    half, how = half_split(Data(), np.arange(4))
    assert how == "random" and sorted(half.tolist()) == [0, 0, 1, 1]


def test_no_signal_is_said(noise_run, tmp_path, capsys):
    """Pure-noise images: the half maps do not agree, the summary says so and the command
    exits 3 with a warning, the files written."""
    out = tmp_path / "noise" / "m.mrc"
    assert main(["reconstruct", str(noise_run), "-o", str(out), "--progress", "none"]) == 3
    assert "holds no signal" in capsys.readouterr().err
    assert json.loads((tmp_path / "noise" / "m_fsc.json").read_text())["status"] == "no signal"
    assert out.is_file()
