"""TrainConfig is the one home of training options: the CLI parser is built from its
fields, the bundle's keywords map onto the same fields, defaults exist once, and a
resumed run keeps its own settings."""

from __future__ import annotations

import argparse
import ast
import os
from dataclasses import fields

import pytest

from gaussianem.errors import TrainingError
from gaussianem.io.rundir import RunDir
from gaussianem.model.losses import LossWeights
from gaussianem.model.networks import BEFORE_RECORDED, DEFAULT_SPLIT, ModelConfig
from gaussianem.train.config import (TrainConfig, add_arguments, cli_fields, command_line, from_arguments,
                                     resumed)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _parse(argv, resume=False):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return from_arguments(p.parse_args(argv), resume=resume)


def test_parser_defaults_are_the_dataclass_defaults():
    cfg = _parse(["p.star", "--consensus", "c.mrc", "-o", "out"])
    ref = TrainConfig(particles="p.star", consensus="c.mrc", outdir="out")
    assert cfg == ref
    assert (cfg.zdim_conf, cfg.zdim_comp) == DEFAULT_SPLIT and cfg.weights == LossWeights()


def test_every_option_reaches_its_field():
    argv = ["p.star", "--consensus", "c.mrc", "-o", "out", "--epochs", "7", "--batch-size", "16", "--lr", "1e-4",
            "--zdim-conf", "4", "--zdim-comp", "2", "--loss", "corr", "--no-gaussian-features", "--invert",
            "--lowpass-start", "0", "--beta", "1e-3", "--w-distance", "2", "--device", "cpu", "--threads", "1"]
    cfg = _parse(argv)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.zdim) == (7, 16, 1e-4, 6)
    assert cfg.loss == "corr" and not cfg.gaussian_features and cfg.invert
    assert cfg.lowpass_start is None                                  # 0: off
    assert cfg.weights.kl == 1e-3 and cfg.weights.distance == 2.0 and cfg.weights.alignment == LossWeights().alignment
    with pytest.raises(SystemExit):
        _parse(["p.star", "--consensus", "c.mrc", "-o", "out", "--loss", "l3"])


def test_command_line_round_trips_through_the_parser():
    opts = {"particles": "/d/p.star", "consensus": "/d/c.mrc", "outdir": "/r", "epochs": 3, "zdim_conf": 4,
            "zdim_comp": 1, "invert": True, "gaussian_features": False, "device": "cpu", "model": None}
    args = command_line(opts)
    assert args[0] == "/d/p.star" and "--model" not in args
    cfg = _parse(args)
    for k, v in opts.items():
        if v is not None:
            assert getattr(cfg, k) == v, k
    with pytest.raises(Exception, match="unknown training option"):
        command_line({"epoch": 3})


def test_cli_help_is_built_from_the_fields():
    p = argparse.ArgumentParser()
    add_arguments(p)
    text = p.format_help()
    for f in cli_fields():
        if not f.metadata["positional"]:
            assert "--" + f.name.replace("_", "-") in text, f.name
    assert "(default: 20)" in text and "(default: 8)" in text


def test_bundle_keywords_are_engine_options():
    """src/commands/train.py's TRAIN_OPTIONS names only TrainConfig command-line fields (read from the
    source: the bundle module needs ChimeraX to import)."""
    tree = ast.parse(open(os.path.join(ROOT, "src", "commands", "train.py")).read())
    names = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "TRAIN_OPTIONS":
            names = [elt.elts[0].value for elt in node.value.elts]
    assert names, "TRAIN_OPTIONS not found in src/commands/train.py"
    known = {f.name for f in cli_fields()}
    assert set(names) <= known, set(names) - known


def test_resume_keeps_the_run_settings(tmp_path):
    run = RunDir(tmp_path / "run")
    os.makedirs(run.path)
    saved = TrainConfig(particles="/d/p.star", consensus="/d/c.mrc", outdir=run.path, epochs=12, lr=5e-4,
                        zdim_conf=3, zdim_comp=2)
    run.write_config({"train": saved.as_dict()})
    # no --epochs: the run's own; other options given now do not change the run
    cfg = _parse(["other.star", "--consensus", "x.mrc", "-o", run.path, "--lr", "1", "--device", "cpu"], resume=True)
    assert cfg.epochs == 12
    r = resumed(cfg, run)
    assert (r.epochs, r.lr, r.zdim_conf, r.particles, r.device) == (12, 5e-4, 3, "/d/p.star", "cpu")
    r = resumed(_parse(["p", "--consensus", "c", "-o", run.path, "--epochs", "30"], resume=True), run)
    assert r.epochs == 30                                             # a resumed run may be extended


def test_model_config_defaults_agree_with_training_and_old_runs_load():
    t = TrainConfig(particles="p", consensus="c", outdir="o")
    m = ModelConfig(box=64, zdim=t.zdim)
    for name in ("encoder_input", "gaussian_features", "width_change", "max_displacement", "window",
                 "centre_by"):
        assert getattr(m, name) == getattr(t, name), name
    assert m.centre_displacements and m.centre_by == "core"
    old = {"box": 64, "zdim": 10}                         # a checkpoint from before these settings
    o = ModelConfig.from_saved(old)
    assert {k: getattr(o, k) for k in BEFORE_RECORDED} == BEFORE_RECORDED
    assert ModelConfig.from_saved({**old, "centre_displacements": True}).centre_displacements
    assert ModelConfig.from_saved(old).centre_by == "mass"         # what runs did before core became the default
    assert {f.name for f in fields(ModelConfig)} >= set(BEFORE_RECORDED)


def test_loader_workers_default(monkeypatch):
    """No workers on a CPU; on a GPU the cores per process less one, at most 8."""
    import gaussianem.io.images as images
    assert images.loader_workers("cpu") == 0
    monkeypatch.setattr(images.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert images.loader_workers("cuda") == 8
    assert images.loader_workers("cuda", processes=8) == 3
    monkeypatch.setattr(images.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert images.loader_workers("cuda") == 0
    assert TrainConfig(particles="p", consensus="c", outdir="o").num_workers is None      # automatic


def test_a_run_saved_before_the_robust_distance_loss_resumes_with_the_squared_one(tmp_path):
    from gaussianem.train.config import BEFORE_RECORDED as TRAIN_BEFORE
    run = RunDir(tmp_path / "run")
    os.makedirs(run.path)
    saved = TrainConfig(particles="/d/p.star", consensus="/d/c.mrc", outdir=run.path, epochs=12).as_dict()
    assert saved["distance_robust"] == 0.0                       # the default: the squared penalty
    assert TrainConfig(particles="/d/p.star", consensus="/d/c.mrc", outdir=run.path,
                       distance_robust=0.1).as_dict()["distance_robust"] == 0.1     # an option, recorded
    del saved["distance_robust"]                                 # a config written before it existed
    run.write_config({"train": saved})
    r = resumed(_parse(["p", "--consensus", "c", "-o", run.path], resume=True), run)
    assert r.distance_robust == 0.0 == TRAIN_BEFORE["distance_robust"]
    with pytest.raises(TrainingError, match="distance-robust"):
        _parse(["p", "--consensus", "c", "-o", "o", "--distance-robust", "-1"])
