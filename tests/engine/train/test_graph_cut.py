"""``--cut-graph N``: training finds the decoder's rigid domains and its distance term lets go
of the edges between them (``train.graph_cut``); the cut is logged and survives a resume."""

import json
import os

import numpy as np
import pytest

from gaussianem.errors import TrainingError
from gaussianem.progress import Progress
from gaussianem.train import graph_cut
from gaussianem.train.config import TrainConfig
from gaussianem.train.loop import Trainer, train


def _cfg(sim, out, **kw):
    base = dict(particles=str(sim / "particles.star"), consensus=str(sim / "consensus.mrc"), outdir=str(out),
                epochs=2, batch_size=32, zdim_conf=2, zdim_comp=1, fit_steps=40, device="cpu", seed=3,
                lowpass_start=None, cut_graph=1)
    base.update(kw)
    return TrainConfig(**base)


def test_the_cut_is_logged_kept_in_the_checkpoint_and_restored_on_resume(tiny_sim, tmp_path, monkeypatch):
    halves = {}

    def by_x(centres, states, edges, seed=0):      # the decoder's domains, made known: two halves in x
        halves["labels"] = (centres[:, 0] > np.median(centres[:, 0])).astype(int)
        return {"labels": halves["labels"], "motion_rms": 1.0, "domains": 2, "sizes": [1, 1]}

    monkeypatch.setattr(graph_cut, "find_domains", by_x)
    out = tmp_path / "run"
    train(_cfg(tiny_sim, out))                       # one pass, after epoch 1 of 2
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    cuts = [r for r in log if r["kind"] == "graph_cut"]
    assert [r["epoch"] for r in cuts] == [1] and 0 < cuts[0]["edges_held"] < cuts[0]["edges"]
    import torch
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert np.array_equal(ck["graph_labels"], halves["labels"])
    resumed = Trainer(_cfg(tiny_sim, out, epochs=3), Progress("none"), resume=True)
    e = resumed.graph.strained.numpy()
    assert len(e) == cuts[0]["edges_held"]
    assert (halves["labels"][e[:, 0]] == halves["labels"][e[:, 1]]).all()


def test_a_pass_is_logged_whether_it_cuts_or_not(tiny_sim, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny_sim, out, epochs=2))
    cuts = [json.loads(line) for line in open(out / "log.jsonl") if '"graph_cut"' in line]
    assert len(cuts) == 1 and "motion_rms" in cuts[0]
    assert (cuts[0]["edges_held"] == cuts[0]["edges"]) == (cuts[0]["domains"] == 1)


def test_a_negative_count_is_refused(tiny_sim, tmp_path):
    with pytest.raises(TrainingError, match="--cut-graph"):
        _cfg(tiny_sim, tmp_path / "x", cut_graph=-1)


def test_the_distance_weight_changes_only_once_the_graph_is_cut(monkeypatch):
    import dataclasses
    import torch
    from gaussianem.bench import real_step
    from gaussianem.model import losses
    from gaussianem.train.step import compute_losses
    # an untrained decoder barely strains the graph: a fixed strain makes the weight visible
    monkeypatch.setattr(losses, "distance_loss", lambda *a, **k: torch.tensor(1.0))
    _, p = real_step(6, 300, 32, "cpu", seed=2)
    batch = dataclasses.replace(p["batch"], noise=torch.zeros(6, p["model"].cfg.zdim))
    n = len(p["model"].centres)
    graph = p["graph"]
    cut = graph.cut(np.arange(n) % 2)             # two interleaved "domains": most edges let go
    relaxed = dataclasses.replace(p["schedule"], distance_cut=0.25)
    with torch.no_grad():
        whole, _, _ = compute_losses(p["model"], batch, graph, p["schedule"])
        whole_relaxed, _, _ = compute_losses(p["model"], batch, graph, relaxed)
        held, terms, _ = compute_losses(p["model"], batch, cut, p["schedule"])
        held_relaxed, _, _ = compute_losses(p["model"], batch, cut, relaxed)
    assert float(whole_relaxed) == pytest.approx(float(whole), rel=1e-6)
    w = p["schedule"].weights.distance
    assert float(terms["distance"]) > 0
    assert float(held - held_relaxed) == pytest.approx((w - 0.25) * float(terms["distance"]), rel=1e-4)
    with pytest.raises(TrainingError, match="--w-distance-cut"):
        TrainConfig(particles="p.star", consensus="c.mrc", outdir="o", distance_cut=-1.0)


def test_domain_motion_takes_the_domains_of_the_cut_into_the_weights(tiny_sim, tmp_path, monkeypatch):
    import torch
    from gaussianem.analysis.result import load_result
    halves = {}

    def by_x(centres, states, edges, seed=0):
        halves["labels"] = (centres[:, 0] > np.median(centres[:, 0])).astype(int)
        return {"labels": halves["labels"], "motion_rms": 1.0, "domains": 2, "sizes": [1, 1]}

    monkeypatch.setattr(graph_cut, "find_domains", by_x)
    out = tmp_path / "run"
    train(_cfg(tiny_sim, out, domain_motion=True))
    res = load_result(str(out))
    assert np.array_equal(res.model.domain_field.labels.numpy(), halves["labels"])
    with torch.no_grad():
        decoded = res.model.decode(torch.as_tensor(res.z[:4]).float())
    assert decoded["domain_rigid"] is not None and float(decoded["domain_rigid"].abs().max()) > 0
    with pytest.raises(TrainingError, match="--cut-graph"):
        _cfg(tiny_sim, tmp_path / "x", cut_graph=0, domain_motion=True)


def test_domain_motion_waits_for_a_motion_large_enough_to_tell_domains_apart():
    from types import SimpleNamespace
    import torch
    from gaussianem.model.gaussians import GaussianSet
    from gaussianem.model.networks import HeterogeneityModel, ModelConfig
    c = torch.randn(30, 3) * 5
    model = HeterogeneityModel(ModelConfig(box=16, zdim=3, zdim_conf=2, zdim_comp=1, enc_dim=16, gauss_dim=16,
                                           dec_dim=16, domain_motion=True, gaussian_features=False,
                                           encoder_input="image"),
                               GaussianSet(c, torch.ones(30), torch.full((30,), 2.0)))
    trainer = SimpleNamespace(model=model)
    labels = (c[:, 0] > 0).long().numpy()
    small = {"labels": labels, "motion_rms": graph_cut.DOMAIN_MOTION / 2}
    assert not graph_cut.move_domains(trainer, small) and not model.domain_field.assigned
    assert graph_cut.move_domains(trainer, {**small, "motion_rms": graph_cut.DOMAIN_MOTION * 2})
    assert np.array_equal(model.domain_field.labels.numpy(), labels)
