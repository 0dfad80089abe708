"""RunDir: the run folder's files, its state, and the one "training has not finished" error."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from gaussianem.errors import GaussianEMError, ResultError
from gaussianem.io.rundir import RunDir


def test_empty_folder_is_no_run(tmp_path):
    run = RunDir(tmp_path)
    assert not run.exists() and not run.finished() and run.epochs_asked() is None and run.epochs_done() == 0
    with pytest.raises(ResultError, match="training has not finished") as e:
        run.latents()
    assert isinstance(e.value, GaussianEMError) and "--resume" in str(e.value)
    with pytest.raises(ResultError, match="config.json is missing"):
        run.read_config()


def test_states_of_a_run(tmp_path):
    run = RunDir(tmp_path)
    os.makedirs(run.coarse.path)
    open(run.coarse.checkpoint, "w").close()
    assert run.exists() and not run.finished()                    # between coarse-to-fine stages
    run.write_config({"train": {"epochs": 7}})
    assert run.epochs_asked() == 7
    for e in (1, 2):
        run.append_log({"kind": "epoch", "epoch": e})
    with open(run.log, "a") as f:
        f.write('{"kind": "step", "epo')                          # a line cut off by a crash
    assert run.epochs_done() == 2 and len(run.read_log()) == 2
    run.write_latents({"z": np.ones((3, 2), np.float32)})
    assert run.finished() and run.latents()["z"].shape == (3, 2)
    assert run.epoch_checkpoint(3).endswith(os.path.join("checkpoints", "epoch_003.pt"))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []      # no temporary files left


def test_plan_gives_the_epochs_before_any_config(tmp_path):
    run = RunDir(tmp_path)
    with open(run.plan, "w") as f:
        json.dump({"epochs": 9}, f)
    assert run.exists() and run.epochs_asked() == 9


def test_latents_also_written_as_cryodrgn_z_pkl(tmp_path):
    # cryoDRGN's z.pkl / z.{epoch}.pkl: a pickled float32 (N, zdim) array of z means,
    # which its analysis tools read with a single pickle.load
    run = RunDir(tmp_path)
    z = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    run.write_latents({"z": z, "z_conf": z[:, :2]})
    with open(tmp_path / "z.pkl", "rb") as f:
        back = pickle.load(f)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32 and back.shape == (4, 3)
    np.testing.assert_array_equal(back, z.astype(np.float32))
    assert run.z_pkl == str(tmp_path / "z.pkl")
    np.testing.assert_array_equal(run.latents()["z"], z)
