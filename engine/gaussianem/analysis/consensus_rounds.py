"""Rounds that rebuild the consensus from the decoded motion (``--consensus-rounds N``).

The consensus map of a flexible sample is the average of its states: a moving domain is
smeared along its path, the base Gaussians fitted to it are the smear, and a smear moved
rigidly matches a sharp domain about as well at half the motion as at the whole. So the
images do not ask the decoder for the rest (docs/validation.md, "The whole motion").

A trained run already knows most of the motion. Its deformable reconstruction of all the
particles into their mean state (:func:`gaussianem.analysis.reconstruct.reconstruct`: each
particle's rays bent by its decoded motion) is sharper where the sample moves than the
consensus was, and it is made of the images themselves, not of a model. Training again on
it carries more of the motion: on the robustness matrix's hinge cell (SNR 0.1, 2,000
particles, ``--cut-graph 3``) motion arrival 0.39 -> 0.62 -> 0.64 over two rounds, where
two domains move at once 0.65 -> 0.73 -> 0.76, with the latent as good or better
(docs/validation.md, "The whole motion, session 17"). Without ``--cut-graph`` it brought
nothing there: the neighbour-distance term then holds the motion back on the sharper map
too.

``N`` rounds train in ``OUTDIR/round1`` .. ``OUTDIR/roundN`` (complete runs of their own,
each the full ``--epochs``), each writing ``consensus.mrc`` (the next round's consensus,
with the reconstruction's FSC files beside it). Each training after a round starts from
that round's networks (``--init-from``; the Gaussians are the new map's own): the latent
and the motion found so far carry on, and the decoder moves the domains from the first
epoch instead of finding them again (on the matrix's hinge cell, arrival 0.76 -> 0.84;
docs/validation.md, "The whole motion, session 21"). The last training runs in ``OUTDIR`` on
the last round's map; its ``config.json`` names that map as its consensus, so every reader
(``load_result``) deforms the map it was trained on. ``--resume`` continues whichever
round was interrupted; a finished round is not trained again. A round whose latent holds
no motion the images show (its health's ``motion_found`` or ``latent_signal`` not
healthy) rebuilds nothing: the next training keeps the consensus it had, and says why.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from gaussianem.analysis.reconstruct import output_paths, reconstruct, write_reconstruction
from gaussianem.analysis.result import load_result
from gaussianem.analysis.selection import select_particles
from gaussianem.errors import TrainingError
from gaussianem.io.rundir import RunDir
from gaussianem.progress import Progress
from gaussianem.train import health
from gaussianem.train.distributed import Dist, init_distributed
from gaussianem.train.loop import train as train_once
from gaussianem.train.resume import saved_settings

ROUND_MAP = "consensus.mrc"
# what the rounds set for the training after them (not the user: a resume does not compare them)
SET_BY_ROUNDS = frozenset({"consensus", "consensus_rounds", "init_from"})
# a round whose health has one of these not healthy found no motion the images hold: its
# reconstruction would only trade the consensus for a noisier map (the matrix's SNR 0.01 cell:
# FSC AUC 0.72 -> 0.64), so the next round keeps the consensus it had
NO_MOTION_CHECKS = ("motion_found", "latent_signal")


def no_motion(run: str) -> str | None:
    """Why ``run``'s latent holds no motion to rebuild the consensus with (its health's
    :data:`NO_MOTION_CHECKS`), or None."""
    report = health.read(RunDir(run)) or {}
    bad = [c for c in report.get("checks", []) if c.get("name") in NO_MOTION_CHECKS and c.get("status") != "healthy"]
    return "; ".join(c.get("message", c["name"]) for c in bad) or None


def round_dir(outdir: str, k: int) -> str:
    return RunDir(outdir).round(k).path


def rebuilt_consensus(run: str, progress: Progress | None = None, dd: Dist | None = None) -> str:
    """``run/consensus.mrc``: the deformable reconstruction of ``run``'s particles into
    their mean state, on the consensus map's grid (Fourier-padded from the training box,
    so it has the map's pixel size), the low-signal ones left out (images matching the
    consensus at under half their optics group's scale: junk without the protein, whose
    noise the map does not need). Written once: its FSC summary, written last, marks it
    done, so an interrupted write is redone. Under torchrun the main process writes it while the
    others wait."""
    path = os.path.join(run, ROUND_MAP)
    dd = dd or Dist()
    if dd.main and not os.path.exists(output_paths(path)["summary"]):
        result = load_result(run)
        low = select_particles(result, low_signal=True).indices
        keep = np.setdiff1d(np.arange(result.n_particles), low)
        rec = reconstruct(result, keep, progress=progress)          # at the training box (--downsample)
        write_reconstruction(rec.on_grid(result.grid), path, selection=f"{len(keep)} particles bent into their mean state "
                                                  f"(--consensus-rounds; {len(low)} low-signal particles left out)")
    if dd.world > 1:
        torch.distributed.barrier()
    return path


class RoundProgress(Progress):
    """``progress`` for a round: its end and its reconstruction's start and end are
    messages, not ``start`` and ``done`` events (which ChimeraX and scripts read as a
    training starting and the whole training finished)."""

    def __init__(self, progress: Progress, k: int):
        super().__init__(progress.mode)
        self.outer, self.k = progress, k

    def event(self, event: str, **fields) -> None:
        if event == "start" and fields.get("task") == "reconstruct":
            self.outer.message(f"consensus round {self.k}: reconstructing {fields.get('particles')} particles "
                               "bent into their mean state")
        elif event == "done" and fields.get("task") == "reconstruct":
            self.outer.message(f"consensus round {self.k}: {fields.get('particles')} particles reconstructed")
        elif event == "done":
            self.outer.message(f"consensus round {self.k} trained ({fields.get('epochs')} epochs, health "
                               f"{fields.get('health')})")
        else:
            self.outer.event(event, **fields)


def train(cfg, resume=False, progress: Progress | None = None, given=None) -> str:
    """:func:`gaussianem.train.loop.train`, after ``cfg.consensus_rounds`` rounds that
    rebuild the consensus (module docstring); returns the output folder."""
    progress = progress or Progress("none")
    rounds = int(cfg.consensus_rounds or 0)
    saved, _ = saved_settings(RunDir(cfg.outdir))
    if rounds <= 0 or saved is not None:
        # OUTDIR's own training has begun, so its rounds (if any) are done; or it holds a run
        # trained without rounds (an older default, or --consensus-rounds 0): a resume goes on
        # with that run as saved, and a new training is refused there at once
        if saved is not None and saved.consensus_rounds:
            given = set(given or ()) - SET_BY_ROUNDS
        return train_once(cfg, resume=resume, progress=progress, given=given)
    if not resume and os.path.exists(round_dir(cfg.outdir, 1)):
        raise TrainingError(f"{cfg.outdir} holds a run's consensus rounds: --resume continues it, or train into "
                            "another folder")
    given = set(given or ()) - SET_BY_ROUNDS
    consensus, networks = cfg.consensus, cfg.init_from
    for k in range(1, rounds + 1):
        where = round_dir(cfg.outdir, k)
        progress.message(f"consensus round {k} of {rounds} in {where}"
                         + (f", on {consensus}" if consensus != cfg.consensus else ""))
        r = replace(cfg, outdir=where, consensus=consensus, consensus_rounds=0, init_from=networks)
        inner = RoundProgress(progress, k)
        train_once(r, resume="auto" if resume else False, progress=inner, given=given)
        why = no_motion(where)
        if why:
            progress.message(f"consensus round {k} found no motion to rebuild the consensus with ({why}): "
                             f"the next training keeps {consensus}")
            continue
        consensus = rebuilt_consensus(where, inner, init_distributed(cfg.device))
        networks = where                     # the next training starts from this round's networks
        progress.message(f"consensus round {k}: the particles bent into their mean state, {consensus}")
    return train_once(replace(cfg, consensus=consensus, init_from=networks), resume=resume, progress=progress,
                      given=given)
