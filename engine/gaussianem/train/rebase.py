"""Un-smearing the base Gaussians during training (``--unsmear N``).

``N`` times in a stage, at evenly spaced epoch ends (a 12-epoch run with ``--unsmear 2``:
after epochs 4 and 8), the base is refitted so that its states, deformed by the decoded
motion of ``STATES`` particles, average to the consensus it carried before
(:func:`gaussianem.model.unsmear.unsmear`). The networks train on from the sharper base;
``RUN/gaussians.pt`` is rewritten with it, so that every analysis reads the base the
networks were trained on. Every process computes the same update (same particles, same
seed) and rank 0's is broadcast.
"""

from __future__ import annotations

import numpy as np
import torch

from gaussianem.model.encoding import encode_particles
from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.unsmear import unsmear

STATES = 16          # particles whose decoded states the base must average to


def due(passes: int, epochs_in_stage: int, done: int) -> bool:
    """Whether an un-smearing pass follows the ``done``-th epoch (1-based) of a stage of
    ``epochs_in_stage`` epochs with ``passes`` passes in all."""
    if passes <= 0 or epochs_in_stage < 2:
        return False
    at = {int(round(epochs_in_stage * (i + 1) / (passes + 1))) for i in range(passes)}
    return done in at - {0, epochs_in_stage}


@torch.no_grad()
def rebase(model, images, phys, image_std: float, box: int, apix: float, seed: int, dd=None) -> dict:
    """Refit ``model``'s base buffers in place; returns the report of
    :func:`~gaussianem.model.unsmear.unsmear`."""
    dev = model.centres.device
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(images), size=min(STATES, len(images)), replace=False))
    raw = images.__getitems__(rows)["image"].to(dev)
    idx = torch.from_numpy(rows).to(dev)
    was_training = model.training
    model.eval()
    z = encode_particles(model, raw, idx, phys, image_std)
    out = model.decode(z.float())
    model.train(was_training)
    with torch.enable_grad():
        c, a, s, report = unsmear(model.centres, model.amplitudes, model.widths, out["displacement"],
                                  out["amp_factor"], box, apix)
    model.centres.copy_(c)
    model.amplitudes.copy_(a)
    model.widths.copy_(s)
    if dd is not None and dd.world > 1:
        for t in (model.centres, model.amplitudes, model.widths):
            torch.distributed.broadcast(t, 0)
    return report


def after_epoch(trainer, done: int) -> None:
    """The pass due after the ``done``-th epoch (1-based, of the run) of a
    :class:`~gaussianem.train.loop.Trainer`, if any: the base refitted, written to
    ``RUN/gaussians.pt``, logged."""
    cfg = trainer.cfg
    if not due(cfg.unsmear, cfg.epochs - cfg.first_epoch, done - cfg.first_epoch):
        return
    m = trainer.model
    report = rebase(m, trainer.images, trainer.phys, trainer.image_std, trainer.box, trainer.coarsest_apix,
                    cfg.seed + done, trainer.dd)
    if trainer.dd.main:
        GaussianSet(m.centres.detach().cpu(), m.amplitudes.detach().cpu(), m.widths.detach().cpu()).save(
            trainer.run_dir.gaussians)
        trainer.run_dir.append_log({"kind": "unsmear", "epoch": done, **report})
    trainer.progress.message(
        f"base un-smeared by the decoded motion after epoch {done}: widths x{report['width_ratio_median']:.2f} "
        f"(median), centres moved {report['centre_shift_mean']:.2f} A (mean), states' average misfit "
        f"{report['misfit_before']:.3f} -> {report['misfit_after']:.3f}")
