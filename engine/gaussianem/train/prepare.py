"""What training reads and builds before its first step: the consensus map checked
against the particles (box and pixel size, then its projections against the images:
:mod:`gaussianem.model.consensus_check`), the base Gaussians (from the map or an atomic model, fitted to
the map), the coarse-to-fine plan, and networks started from an earlier run."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from gaussianem import __version__

from gaussianem.errors import TrainingError
from gaussianem.io.models import read_model
from gaussianem.io.mrc import read_map
from gaussianem.io.particles import load_particles
from gaussianem.io.rundir import RunDir
from gaussianem.model.consensus_check import consensus_match
from gaussianem.model.gaussians import fit_to_map, init_from_atoms, init_from_map
from gaussianem.model.networks import HeterogeneityModel
from gaussianem.physics.grid import Grid
from gaussianem.physics.resample import even_box, fourier_crop_volume
from gaussianem.progress import Progress
from gaussianem.train import stages
from gaussianem.train.config import TrainConfig


FIT_BOX = 128            # larger consensus maps are fitted at the training pixel size


def training_box(cfg: TrainConfig, particle_box: int) -> int:
    box = cfg.downsample or min(particle_box, 128)
    if box > particle_box:
        raise TrainingError(f"--downsample {box} is larger than the particle box {particle_box}")
    return box


def check_consensus(cfg: TrainConfig, data, grid: Grid) -> None:
    """The consensus map must describe the particles' box: same physical pixel size (1%)
    as at least one optics group, and a physical extent no smaller than the images'. Then
    (a new run, unless ``skip_consensus_check``) it must match the images clearly better
    than its mirror image, its low-pass and itself rescaled (:func:`match_images`)."""
    groups = np.unique(np.round(data.apix, 4))
    if not np.any(np.abs(groups - grid.apix) / groups < 0.01):
        raise TrainingError(
            f"pixel size mismatch: consensus map {cfg.consensus} has {grid.apix:.4f} A/pixel but "
            f"particles in {cfg.particles} have {', '.join(f'{g:.4f}' for g in groups)} A/pixel "
            "(resample the map to the particles' pixel size, e.g. with ChimeraX 'volume resample')")
    if grid.box * grid.apix < 0.99 * data.box * float(np.max(data.apix)):
        raise TrainingError(
            f"the consensus map {cfg.consensus} ({grid.box} voxels at {grid.apix:.3f} A) is smaller "
            f"than the particle images ({data.box} pixels at {np.max(data.apix):.3f} A)")
    fresh = cfg.first_epoch == 0 and not RunDir(cfg.outdir).has_checkpoint()   # not a fine stage, nor resumed
    if fresh and not cfg.skip_consensus_check:
        match_images(cfg, data)


def match_images(cfg: TrainConfig, data) -> None:
    """Stop with a :class:`TrainingError` saying what looks wrong when the consensus map's
    projections do not match the images clearly better than those of its controls
    (:func:`gaussianem.model.consensus_check.consensus_match`)."""
    vol, apix, _ = read_map(cfg.consensus)
    match = consensus_match(vol, apix, data, invert=cfg.invert, seed=cfg.seed)
    problems = match.problems() if match is not None else []
    if problems:
        raise TrainingError(
            f"the consensus map {cfg.consensus} does not match the particle images of {cfg.particles}: compared "
            f"on {match.particles} particles (their poses and CTFs, at {match.apix:.2f} A/pixel), "
            + "; ".join(problems) + ". Check that the map is the one these poses were refined against, with the "
            "same hand, box and pixel size as the particles; --skip-consensus-check trains on it anyway")


def build_base_gaussians(cfg: TrainConfig, vol: np.ndarray, grid: Grid, device, progress: Progress,
                         train_apix: float | None = None):
    """Base Gaussians from the consensus map (k-means or grid) or an atomic model, then fit.

    A map of more than ``FIT_BOX`` voxels that is finer than the training pixel size
    ``train_apix`` is first Fourier-cropped to it: the Gaussians only need the detail
    training sees, and a 256^3 map's voxels cost 8 times the memory and time (one took
    24 GB and was killed). Smaller maps are fitted as they are (their voxels also bound
    how many Gaussians k-means can place)."""
    if train_apix and train_apix > 1.01 * grid.apix and grid.box > FIT_BOX:
        box = max(even_box(grid.box * grid.apix, train_apix), FIT_BOX)
        if box < grid.box:
            progress.message(f"consensus map {grid.box}^3 at {grid.apix:.3f} A Fourier-cropped to {box}^3 "
                             f"({grid.apix * grid.box / box:.3f} A, the training pixel size) for the Gaussians")
            vol = fourier_crop_volume(vol, box)
            apix = grid.apix * grid.box / box
            grid = Grid(box, apix, grid.centre - (box // 2) * apix)      # the same frame origin
    if cfg.init == "model":
        if not cfg.model:
            raise TrainingError("--init model needs --model MODEL.pdb|.cif")
        base = init_from_atoms(read_model(cfg.model), grid, vol, cfg.atoms_per_gaussian,
                               name=f"the atomic model {cfg.model}")
    else:
        base = init_from_map(vol, grid.apix, n=cfg.num_gaussians, method=cfg.init,
                             threshold=cfg.threshold, seed=cfg.seed, device=device)
    if cfg.init != "model" and cfg.num_gaussians and len(base) < cfg.num_gaussians:
        progress.message(f"warning: --num-gaussians {cfg.num_gaussians}: the consensus map has only "
                         f"{len(base)} voxels above the threshold at {grid.apix:.3f} A, one Gaussian each at "
                         f"most: using {len(base)} (a lower --threshold or a finer map allows more)")
    progress.message(f"fitting {len(base)} Gaussians to the consensus map")
    base, report = fit_to_map(base, vol, grid.apix, steps=cfg.fit_steps, fit_centres=True, device=device)
    return base, report


def plan_stages(cfg: TrainConfig):
    """stages.plan from the consensus map and the training box's pixel size."""
    if not stages.considered(cfg):
        return None                       # no need to read the particles and the map
    data = load_particles(cfg.particles, **cfg.particle_files())
    vol, apix, _ = read_map(cfg.consensus)
    box = training_box(cfg, data.box)
    return stages.plan(cfg, vol, apix, float(np.max(data.apix)) * data.box / box)


def load_networks(model: HeterogeneityModel, run: str, device) -> None:
    """Start ``model`` from the encoders and decoders of a finished run on another Gaussian
    set (e.g. fewer Gaussians: coarse to fine). The decoder reads each Gaussian's
    position, so what it learned carries over to new Gaussians; the parent's feature
    scale is kept so that positions are read on the same scale."""
    parent = RunDir(run)
    if not parent.has_checkpoint():
        raise TrainingError(f"--init-from {run}: no {RunDir.CHECKPOINT} there (not a finished GaussianEM run)")
    own = ("centres", "amplitudes", "widths")           # this run's Gaussians stay its own
    state = torch.load(parent.checkpoint, map_location=device, weights_only=False)["model"]
    state = {k: v for k, v in state.items() if k not in own}
    try:
        missing = [k for k in model.load_state_dict(state, strict=False).missing_keys if k not in own]
    except RuntimeError as e:
        raise TrainingError(f"--init-from {run}: its networks do not fit this run's settings (training box, "
                            f"latent sizes and encoder input must match): {str(e).splitlines()[0]}") from None
    if missing:
        raise TrainingError(f"--init-from {run}: its checkpoint lacks {', '.join(missing[:5])}")


def write_run_config(run: RunDir, cfg: TrainConfig, grid: Grid, data, box: int, fit_report) -> None:
    """``config.json``: the settings (input paths made absolute), the consensus grid, the
    particles' box and pixel size, the Gaussians' fit to the map, the engine version."""
    d = {"train": cfg.as_dict(), "grid": grid.as_dict(), "train_box": box,
         "n_particles": len(data), "particle_box": data.box, "particle_apix": float(np.median(data.apix)),
         "fit": fit_report.as_dict() if fit_report else None,
         "engine_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for key in ("particles", "consensus", "model", "poses", "ctf", "ind"):
        if d["train"].get(key):
            d["train"][key] = os.path.abspath(d["train"][key])
    run.write_config(d)
