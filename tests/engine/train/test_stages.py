"""Coarse to fine in one training call: when it is planned, what each stage trains on,
progress across both, and resuming whichever stage was interrupted (exactly)."""

import json
import os
import shutil

import numpy as np
import pytest

from gaussianem.analysis.result import load_result
from gaussianem.errors import TrainingError
from gaussianem.io.mrc import read_map
from gaussianem.io.rundir import RunDir
from gaussianem.model.gaussians import COUNT_RESOLUTION, auto_count, count_for_resolution
from gaussianem.progress import Progress
from gaussianem.train import stages
from gaussianem.train.loop import train
from test_train import cfg_for, read_log


class Recorder(Progress):
    def __init__(self):
        super().__init__("none")
        self.events = []

    def event(self, event, **fields):
        self.events.append((event, fields))


def test_count_for_resolution_grows_below_the_reference(tiny_sim):
    vol, apix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    n = auto_count(vol, apix)
    counts = [count_for_resolution(vol, apix, d) for d in (8.0, COUNT_RESOLUTION, 3.0, 2.0, 1.0)]
    assert counts[0] == counts[1] == n                     # never fewer than the default
    assert counts[1] < counts[2] < counts[3] < counts[4]
    assert counts[3] >= 3 * n                              # 2 A: several Gaussians per residue
    assert count_for_resolution(vol, apix, 0.05) == 20000  # capped
    with pytest.raises(ValueError, match="positive"):
        count_for_resolution(vol, apix, 0.0)


def test_plan_is_automatic_only_where_the_box_resolves_more(tiny_sim, tmp_path):
    vol, apix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    cfg = cfg_for(tiny_sim, tmp_path / "p", epochs=20)
    assert stages.plan(cfg, vol, apix, train_apix=3.0) is None          # 6 A Nyquist: one stage
    p = stages.plan(cfg, vol, apix, train_apix=1.0)                      # 2 A Nyquist: two
    assert p.coarse_gaussians == auto_count(vol, apix)
    assert p.fine_gaussians >= stages.REFINE_FACTOR * p.coarse_gaussians
    assert (p.coarse_epochs, p.epochs, p.resolution) == (10, 20, 2.0)
    assert stages.plan(cfg_for(tiny_sim, tmp_path, epochs=20, coarse_epochs=5), vol, apix, 1.0).coarse_epochs == 5
    # off, explicit counts, atomic-model Gaussians: no automatic stage
    for kw in (dict(fine_gaussians=0), dict(num_gaussians=50), dict(init="model")):
        assert stages.plan(cfg_for(tiny_sim, tmp_path, epochs=20, **kw), vol, apix, 1.0) is None, kw
    # explicit: at any pixel size, but it must add Gaussians and leave epochs for both stages
    p = stages.plan(cfg_for(tiny_sim, tmp_path, epochs=4, fine_gaussians=500), vol, apix, 3.0)
    assert (p.fine_gaussians, p.coarse_epochs) == (500, 2)
    with pytest.raises(TrainingError, match="must exceed"):
        stages.plan(cfg_for(tiny_sim, tmp_path, epochs=4, fine_gaussians=10), vol, apix, 3.0)
    with pytest.raises(TrainingError, match="coarse-epochs"):
        stages.plan(cfg_for(tiny_sim, tmp_path, epochs=1, fine_gaussians=500), vol, apix, 3.0)
    with pytest.raises(TrainingError, match="init model"):
        stages.plan(cfg_for(tiny_sim, tmp_path, epochs=4, fine_gaussians=500, init="model"), vol, apix, 3.0)


KW = dict(zdim_conf=2, zdim_comp=1, lowpass_start=15.0, log_every=2)


@pytest.fixture(scope="module")
def two_stage(tiny_sim, tmp_path_factory):
    """A two-stage run (1 coarse epoch on the default count, 1 fine epoch on 30 more)."""
    vol, apix, _ = read_map(str(tiny_sim / "consensus.mrc"))
    fine = auto_count(vol, apix) + 30
    out = tmp_path_factory.mktemp("c2f") / "run"
    rec = Recorder()
    train(cfg_for(tiny_sim, out, epochs=2, fine_gaussians=fine, **KW), progress=rec)
    return out, fine, rec.events


def test_two_stages_in_one_call(two_stage, tiny_sim):
    out, fine, events = two_stage
    coarse = load_result(str(out / "coarse"))
    result = load_result(str(out))
    assert len(coarse.base) < len(result.base) <= fine
    assert result.z.shape == coarse.z.shape == (256, 3)
    cfg = json.load(open(out / "config.json"))["train"]
    assert cfg["first_epoch"] == 1 and cfg["init_from"] == str(out / "coarse") and cfg["epochs"] == 2
    assert [r["epoch"] for r in read_log(out / "coarse") if r["kind"] == "epoch"] == [1]
    assert [r["epoch"] for r in read_log(out) if r["kind"] == "epoch"] == [2]
    # the fine stage has its own low-pass ramp (it starts band-limited again)
    assert read_log(out)[0]["band"] is not None and read_log(out)[0]["band"] < 15.0
    # progress counts epochs over both stages, and the job ends once
    assert [(f["epoch"], f["epochs"]) for e, f in events if e == "epoch"] == [(1, 2), (2, 2)]
    assert [e for e, _ in events].count("done") == 1
    texts = [f.get("text", "") for e, f in events if e == "message"]
    assert any(t.startswith("coarse to fine") for t in texts)
    assert any("networks initialised from" in t for t in texts)
    assert RunDir(out).epochs_asked() == 2
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg_for(tiny_sim, out, epochs=2, **KW))


def _drop_fine_stage(out):
    for f in ("checkpoint.pt", "config.json", "latents.npz", "log.jsonl", "gaussians.pt"):
        os.remove(out / f)
    shutil.rmtree(out / "checkpoints")


def test_resume_between_the_stages_and_inside_the_coarse_one(two_stage, tiny_sim, tmp_path):
    out, fine, _ = two_stage
    z_straight = np.load(out / "latents.npz")["z"]
    # interrupted after the coarse stage: resume trains the fine stage only, the same way
    b = tmp_path / "b"
    shutil.copytree(out, b)
    _drop_fine_stage(b)
    assert RunDir(b).epochs_asked() == 2              # from the plan
    train(cfg_for(tiny_sim, b, epochs=2, **KW), resume=True)
    assert [r["epoch"] for r in read_log(b / "coarse") if r["kind"] == "epoch"] == [1]
    assert np.allclose(np.load(b / "latents.npz")["z"], z_straight, atol=1e-5)
    # interrupted inside the coarse stage (half-way through a 2-epoch coarse stage)
    c = tmp_path / "c"
    straight = train(cfg_for(tiny_sim, tmp_path / "s", epochs=3, coarse_epochs=2, fine_gaussians=fine, **KW))
    p = stages.plan(cfg_for(tiny_sim, c, epochs=3, coarse_epochs=2, fine_gaussians=fine, **KW),
                    *read_map(str(tiny_sim / "consensus.mrc"))[:2], train_apix=3.0)
    stages.save_plan(RunDir(c), p)
    first = p.coarse_config(cfg_for(tiny_sim, c, epochs=3, fine_gaussians=fine, **KW), str(c))
    first.epochs = 1                                       # its first epoch only
    train(first)
    os.remove(c / "coarse" / "latents.npz")              # the coarse stage had not finished
    assert not stages.coarse_finished(RunDir(c)) and RunDir(c).exists()
    # resume with other settings on the command line: the run's own are kept (all but epochs)
    train(cfg_for(tiny_sim, c, epochs=3, zdim=7, fine_gaussians=None), resume=True)
    assert [r["epoch"] for r in read_log(c / "coarse") if r["kind"] == "epoch"] == [1, 2]
    assert np.allclose(np.load(c / "coarse" / "latents.npz")["z"],
                       np.load(os.path.join(straight, "coarse", "latents.npz"))["z"], atol=1e-5)
    assert np.allclose(np.load(c / "latents.npz")["z"], np.load(os.path.join(straight, "latents.npz"))["z"],
                       atol=1e-5)
