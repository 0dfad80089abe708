"""Coarse to fine: one ``train`` call, two stages, when the data resolve more detail than
the default Gaussian count carries.

The default count (``gaussians.auto_count``, about 1.2 Gaussians per residue) is what
the decoder learns the motion on quickly, and it carries the map to about 4 A. Trained
at a finer pixel size, the maps stay at that detail; many more Gaussians from the
start resolve the consensus but their decoder finds the motion late (docs/validation.md).
So when the training box's Nyquist asks for at least ``REFINE_FACTOR`` times the default count
(``gaussians.count_for_resolution``), training runs

1. the *coarse* stage in ``OUTDIR/coarse`` (a complete run of its own, the default
   count, the first ``coarse_epochs`` epochs, half by default), then
2. the *fine* stage in ``OUTDIR``: the fine count, networks started from the coarse
   stage (``--init-from``), epochs ``coarse_epochs + 1`` to ``epochs`` with their own
   low-pass and KL warm-up.

``OUTDIR/stages.json`` (``RunDir.plan``) records the plan, so ``--resume`` continues whichever stage was
interrupted. ``OUTDIR`` is the result every reader opens (``load_result``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace

from gaussianem.errors import TrainingError
from gaussianem.io.atomic import write_json
from gaussianem.io.rundir import RunDir
from gaussianem.model.gaussians import auto_count, count_for_resolution

REFINE_FACTOR = 1.5      # an automatic fine stage only for at least this many more Gaussians


@dataclass
class StagePlan:
    coarse_gaussians: int
    fine_gaussians: int
    coarse_epochs: int
    epochs: int              # in all, as asked at the start (a resume may extend them)
    resolution: float        # Angstrom: the training box's Nyquist the fine count is for

    def coarse_config(self, cfg, outdir: str):
        return replace(cfg, outdir=RunDir(outdir).coarse.path, epochs=self.coarse_epochs,
                       num_gaussians=self.coarse_gaussians, fine_gaussians=0, first_epoch=0,
                       lowpass_epochs=None)

    def fine_config(self, cfg, outdir: str):
        return replace(cfg, outdir=outdir, num_gaussians=self.fine_gaussians, fine_gaussians=0,
                       first_epoch=self.coarse_epochs, lowpass_epochs=None,
                       init_from=RunDir(outdir).coarse.path)

    def describe(self, epochs: int | None = None) -> str:
        epochs = epochs or self.epochs
        return (f"coarse to fine: {self.coarse_gaussians} Gaussians for epochs 1-{self.coarse_epochs}, "
                f"then {self.fine_gaussians} (for {self.resolution:.2f} A) for epochs "
                f"{self.coarse_epochs + 1}-{epochs}")


def considered(cfg) -> bool:
    """Whether ``cfg`` may train in two stages at all (before any map is read): asked for
    with ``fine_gaussians`` N, or automatic for Gaussians from the map at the default
    count; never with ``fine_gaussians`` 0."""
    if cfg.fine_gaussians is not None:
        return cfg.fine_gaussians > 0
    return cfg.init != "model" and cfg.num_gaussians is None


def plan(cfg, vol, map_apix: float, train_apix: float) -> StagePlan | None:
    """The two-stage plan for ``cfg``, or None for a single stage.

    Automatic (``cfg.fine_gaussians`` None) only for Gaussians initialised from the map
    with the default count, and only when the fine count is at least ``REFINE_FACTOR``
    times the coarse one; ``cfg.fine_gaussians`` N asks for it explicitly (N must exceed
    the coarse count); 0 turns it off."""
    if not considered(cfg):
        return None
    explicit = cfg.fine_gaussians is not None
    if cfg.init == "model":
        raise TrainingError("--fine-gaussians does not combine with --init model: the atomic model "
                            "fixes the Gaussians (use --atoms-per-gaussian for more of them)")
    resolution = 2.0 * train_apix
    coarse = cfg.num_gaussians or auto_count(vol, map_apix, cfg.threshold)
    fine = cfg.fine_gaussians if explicit else count_for_resolution(vol, map_apix, resolution, cfg.threshold)
    if explicit and fine <= coarse:
        raise TrainingError(f"--fine-gaussians {fine} must exceed the coarse stage's count ({coarse})")
    if not explicit and fine < REFINE_FACTOR * coarse:
        return None
    epochs = cfg.coarse_epochs if cfg.coarse_epochs is not None else cfg.epochs // 2
    if not 1 <= epochs < cfg.epochs:
        if explicit or cfg.coarse_epochs is not None:
            raise TrainingError(f"coarse to fine needs 1 <= --coarse-epochs < --epochs, got "
                                f"{epochs} and {cfg.epochs}")
        return None
    return StagePlan(int(coarse), int(fine), int(epochs), int(cfg.epochs), float(resolution))


def save_plan(run: RunDir, p: StagePlan) -> None:
    os.makedirs(run.path, exist_ok=True)
    write_json(run.plan, asdict(p))


def load_plan(run: RunDir) -> StagePlan | None:
    if not os.path.exists(run.plan):
        return None
    try:
        with open(run.plan) as f:
            return StagePlan(**json.load(f))
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{run.plan} is not a GaussianEM stage plan ({e}); remove it to start afresh") from None


def coarse_finished(run: RunDir) -> bool:
    """The coarse stage ran to its end (its latents are written last)."""
    return run.coarse.finished()
