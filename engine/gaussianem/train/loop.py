"""Training the heterogeneity model on particle images with known poses and CTF.

``train(config)`` writes into ``config.outdir``:

* ``config.json``: every setting, input path, the consensus grid and the engine version;
* ``gaussians.pt``: the base Gaussian set fitted to the consensus map (or model);
* ``checkpoint.pt`` (latest, atomic) and ``checkpoints/epoch_NNN.pt``;
* ``latents.npz``: ``z`` (N_particles x zdim, float32, input order), plus ``z_conf`` and
  ``z_comp`` when the latent is split;
* ``log.jsonl``: one JSON object per logged step and per epoch.

Resuming (``resume=True``) continues exactly: the epoch's particle order comes from
``seed + epoch``, the optimizer/scaler/RNG states and the position inside the epoch are
in the checkpoint. SIGINT/SIGTERM save a checkpoint at the next step boundary. Several
processes (``torchrun``) train with DistributedDataParallel, each on its share of every
epoch's permutation; latents are gathered back into particle order.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from gaussianem import __version__
from gaussianem.train import health, stages
from gaussianem.model import intensity, losses
from gaussianem.physics import render
from gaussianem.io.images import ParticleImages, make_loader
from gaussianem.io.particles import load_particles
from gaussianem.model.encoding import Physics, encode_particles, encoder_inputs
from gaussianem.device import resolve_device
from gaussianem.errors import TrainingError
from gaussianem.model.gaussians import GaussianSet, fit_to_map, init_from_map, init_from_model
from gaussianem.io.atomic import atomic_torch_save
from gaussianem.physics.grid import Grid
from gaussianem.train.config import TrainConfig
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.progress import Progress
from gaussianem.io.models import read_model
from gaussianem.io.mrc import read_map


MAX_RECOVERIES = 3          # diverged epochs restarted from the last good state ...
RECOVERY_LR_FACTOR = 0.3    # ... each time with the learning rate times this


# ----------------------------------------------------------------------------- set-up


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        backend = "nccl" if (device_name != "cpu" and torch.cuda.is_available()) else "gloo"
        dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def check_consensus(cfg: TrainConfig, data, grid: Grid) -> None:
    """The consensus map must describe the particles' box: same physical pixel size (1%)
    as at least one optics group, and a physical extent no smaller than the images'."""
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


def build_base_gaussians(cfg: TrainConfig, vol: np.ndarray, grid: Grid, device, progress: Progress):
    """Base Gaussians from the consensus map (k-means or grid) or an atomic model, then fit."""
    if cfg.init == "model":
        if not cfg.model:
            raise TrainingError("--init model needs --model MODEL.pdb|.cif")
        m = read_model(cfg.model)
        centres = grid.to_engine(m.group_centres(cfg.atoms_per_gaussian) if cfg.atoms_per_gaussian
                                 else m.residue_centres())
        inside = np.all(np.abs(centres) < grid.box * grid.apix / 2, axis=1)
        if inside.mean() < 0.5:
            raise TrainingError(f"the atomic model {cfg.model} does not overlap the consensus map "
                                f"{cfg.consensus} (only {inside.mean():.0%} of residues inside the box)")
        base = init_from_model(centres[inside], grid.apix)
        base.amplitudes = base.amplitudes * float(np.percentile(vol, 99.9))
    else:
        base = init_from_map(vol, grid.apix, n=cfg.num_gaussians, method=cfg.init,
                             threshold=cfg.threshold, seed=cfg.seed, device=device)
    progress.message(f"fitting {len(base)} Gaussians to the consensus map")
    base, report = fit_to_map(base, vol, grid.apix, steps=cfg.fit_steps, fit_centres=True, device=device)
    return base, report


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of epoch ``epoch``'s permutation (seeded by seed + epoch),
    starting after ``skip`` of its samples (for resuming inside an epoch)."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int):
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch, self.skip = 0, 0

    def order(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.n, generator=g).numpy()
        per = self.n // self.world                       # equal shares keep DDP in step
        return perm[self.rank * per:(self.rank + 1) * per]

    def steps_per_epoch(self) -> int:
        return int(np.ceil((self.n // self.world) / self.batch_size))

    def __iter__(self):
        return iter(self.order(self.epoch)[self.skip:].tolist())

    def __len__(self):
        return self.n // self.world - self.skip


# ----------------------------------------------------------------------------- the step

def loss_band(cfg: TrainConfig, t: float, apix: float) -> float | None:
    """The image loss's resolution limit (Angstrom) at epoch ``t`` (fractional), or None
    for the full band: from ``lowpass_start`` linearly in spatial frequency to Nyquist."""
    ramp = cfg.lowpass_epochs
    if not cfg.lowpass_start or t >= ramp:
        return None
    f0, f1 = 1.0 / cfg.lowpass_start, 1.0 / (2 * apix)
    if f0 >= f1:
        return None
    return 1.0 / (f0 + (f1 - f0) * t / ramp)


def compute_losses(model, images, idx, phys: Physics, edges, min_dist, edge_scale: float,
                   cfg: TrainConfig, box: int, kl_scale: float = 1.0, band: float | None = None):
    """The weighted total loss, its terms, and the step's health numbers
    (:func:`gaussianem.train.health.step_stats`)."""
    core = model.module if hasattr(model, "module") else model
    emb = core.embed()                           # once per step: the features and the decoder read it
    ref, feats = encoder_inputs(core, images, idx, phys, box, emb)
    mu, logvar = model(images, ref, feats)       # forward = image encoder (DDP-wrapped or not)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if core.training else mu
    out = core.decode(z, emb)
    pred = phys.project(out["centres"], out["amplitudes"], out["widths"], idx, box, band) * core.scale
    target = render.lowpass(images, phys.apix[idx], band) if band else images.float()
    mass = core.mass_weights()
    w = cfg.weights
    terms = {
        "image": losses.image_loss(pred, target, cfg.loss),
        "kl": losses.kl_divergence(mu.float(), logvar.float()),
        # structure terms in units of the typical edge length (dimensionless)
        "distance": losses.distance_loss(core.centres, out["centres"], edges) / edge_scale ** 2,
        "alignment": losses.alignment_loss(out["displacement"], edges) / edge_scale ** 2,
        "embedding": losses.embedding_loss(out["embedding"].float(), edges),
        "spacing": losses.spacing_loss(out["centres"], edges, min_dist),
        "amplitude": losses.amplitude_loss(out["amp_factor"], mass),
    }
    if w.contrastive > 0:
        terms["contrastive"] = losses.contrastive_loss(mu, out["displacement"], out["amp_factor"])
    total = sum(getattr(w, k) * v * (kl_scale if k == "kl" else 1.0) for k, v in terms.items())
    with torch.no_grad():
        if ref is None:
            ref = phys.project(core.centres, core.amplitudes, core.widths, idx, box) * core.scale
        cons = render.lowpass(ref, phys.apix[idx], band) if band else ref
        stats = health.step_stats(pred, cons, target, mu, logvar, out, mass,
                                  core.cfg.max_displacement)
    return total, {k: v.detach() for k, v in terms.items()}, stats


# ----------------------------------------------------------------------------- main

def train(cfg: TrainConfig, resume: bool = False, progress: Progress | None = None) -> str:
    """Run (or resume) a training job; returns the output folder.

    When the training box resolves more detail than the default Gaussian count carries,
    or ``cfg.fine_gaussians`` asks for it, this is two stages, coarse then fine
    (:mod:`gaussianem.train.stages`); ``resume`` continues whichever was interrupted."""
    progress = progress or Progress("none")
    out = os.path.abspath(cfg.outdir)
    main = _init_distributed(cfg.device).main
    if resume:
        p = stages.load_plan(out)
        if p is None or os.path.exists(os.path.join(out, "checkpoint.pt")):
            return _train_stage(cfg, True, progress)
        cfg = stages.resumed_config(cfg, out)
    else:
        if main and stages.run_exists(out):
            raise TrainingError(f"{out} already holds a training run: use --resume to continue it "
                                "or choose another output folder")
        p = _plan_stages(cfg)
        if p is None:
            return _train_stage(cfg, False, progress)
        if main:
            stages.save_plan(out, p)
    progress.message(p.describe(cfg.epochs))
    if not stages.coarse_finished(out):
        coarse = p.coarse_config(cfg, out)
        _train_stage(coarse, os.path.exists(os.path.join(coarse.outdir, "checkpoint.pt")), progress,
                     total_epochs=cfg.epochs, final=False)
    return _train_stage(p.fine_config(cfg, out), False, progress)


def _plan_stages(cfg: TrainConfig):
    """stages.plan from the consensus map and the training box's pixel size."""
    if not stages.considered(cfg):
        return None                       # no need to read the particles and the map
    data = load_particles(cfg.particles, datadir=cfg.datadir)
    vol, apix, _ = read_map(cfg.consensus)
    box = cfg.downsample or min(data.box, 128)
    return stages.plan(cfg, vol, apix, float(np.max(data.apix)) * data.box / box)


@torch.enable_grad()         # also when called inside a no_grad context (e.g. a user's script)
def _train_stage(cfg: TrainConfig, resume: bool, progress: Progress, total_epochs: int | None = None,
                 final: bool = True) -> str:
    """One training run in ``cfg.outdir`` (``total_epochs``: what progress reports as the
    whole; ``final``: whether this stage ends the job)."""
    dd = _init_distributed(cfg.device)
    if not dd.main:
        progress = Progress("none")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dd.world > 1:
        device = torch.device("cuda", dd.local_rank)
        torch.cuda.set_device(device)
    out = os.path.abspath(cfg.outdir)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    if dd.main:
        os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    if resume:
        if not os.path.exists(ckpt_path):
            raise TrainingError(f"nothing to resume: {ckpt_path} does not exist")
        with open(os.path.join(out, "config.json")) as f:
            saved = TrainConfig.from_dict(json.load(f)["train"])
        saved.epochs = cfg.epochs            # a resumed run may be extended
        saved.device, saved.num_workers = cfg.device, cfg.num_workers
        cfg = saved
    elif dd.main and os.path.exists(ckpt_path):
        raise TrainingError(f"{out} already holds a training run: use --resume to continue it "
                            "or choose another output folder")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + dd.rank)
    np.random.seed(cfg.seed + dd.rank)

    data = load_particles(cfg.particles, datadir=cfg.datadir)
    vol, apix, origin = read_map(cfg.consensus)
    grid = Grid(vol.shape[0], apix, origin)
    check_consensus(cfg, data, grid)
    box = cfg.downsample or min(data.box, 128)
    if box > data.box:
        raise TrainingError(f"--downsample {box} is larger than the particle box {data.box}")

    gpath = os.path.join(out, "gaussians.pt")
    fit_report = None
    if not resume:
        if dd.main:
            progress.event("start", outdir=out, particles=len(data), box=data.box, train_box=box)
            base, fit_report = build_base_gaussians(cfg, vol, grid, device, progress)
            base.save(gpath)
            _write_config(out, cfg, grid, data, box, fit_report)
        if dd.world > 1:
            dist.barrier()
    base = GaussianSet.load(gpath)

    images = ParticleImages(data, box=box, invert=cfg.invert)
    mcfg = ModelConfig(box=box, zdim=cfg.zdim, zdim_conf=cfg.zdim_conf, zdim_comp=cfg.zdim_comp,
                       window=cfg.window, max_displacement=cfg.max_displacement,
                       encoder_input=cfg.encoder_input, width_change=cfg.width_change,
                       gaussian_features=cfg.gaussian_features, centre_displacements=True)
    model = HeterogeneityModel(mcfg, base).to(device)
    try:                                   # fused: one kernel for all parameters (CPU and CUDA)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    sampler = EpochSampler(len(data), cfg.batch_size, dd.rank, dd.world, cfg.seed)
    start_epoch, start_step = cfg.first_epoch, 0
    image_std, scales, history, recoveries = None, None, [], []
    if cfg.init_from and not resume:
        load_networks(model, cfg.init_from, device)
        progress.message(f"networks initialised from {cfg.init_from}")
    if resume:
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng"]["torch"].cpu())
        np.random.set_state(ck["rng"]["numpy"])
        start_epoch, start_step, image_std = ck["epoch"], ck["step"], ck["image_std"]
        mcfg.centre_displacements = ck["model_config"].get("centre_displacements", False)  # older runs
        scales = intensity.IntensityScale.from_dict(ck.get("intensity"), len(data))
        history, recoveries = ck.get("health_history", []), ck.get("recoveries", [])
        progress.message(f"resuming at epoch {start_epoch + 1}, step {start_step}")
    phys = Physics(data, box, device)
    coarsest_apix = float(phys.apix.max())     # the loss band's Nyquist (read once, not per step)
    if image_std is None:
        image_std = intensity.image_std(images, seed=cfg.seed)
    if scales is None:
        progress.message("measuring the intensity scale and shift of each image against the consensus projections")
        scales = intensity.estimate(base, images, phys, box, image_std, loss_band(cfg, 0.0, coarsest_apix),
                                    device)
        groups = ", ".join(f"{g}: {v:.3g}" for g, v in zip(scales.groups, scales.group_scale))
        p5, p95 = scales.summary()["particle_scale_p5_p95"]
        progress.message(f"intensity scale per optics group {groups}; per particle {p5:.3g} to {p95:.3g} "
                         f"(5th-95th percentile); image-consensus correlation {scales.correlation:.3f}; "
                         f"shift corrections {scales.summary()['shift_correction_rms_A']:.2f} A RMS")
    phys.set_intensity(scales)
    if cfg.lowpass_start and cfg.epochs - cfg.first_epoch < cfg.lowpass_epochs:
        progress.message(f"note: the image loss stays low-pass filtered for all {cfg.epochs} epochs (it reaches "
                         f"Nyquist after --lowpass-epochs {cfg.lowpass_epochs:g}); train longer or lower it")
    edges, radius = losses.radius_graph(base.centres.to(device), cfg.radius)
    d0 = (base.centres[edges[:, 0].cpu()] - base.centres[edges[:, 1].cpu()]).norm(dim=1)
    min_dist = (0.5 * d0).to(device)
    edge_scale = float(d0.median())
    ddp_model = model
    if dd.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    stop = {"flag": False}
    old_handlers = {}
    if dd.main or dd.world == 1:
        def _handler(signum, frame):
            stop["flag"] = True
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old_handlers[s] = signal.signal(s, _handler)
            except ValueError:          # not the main thread (e.g. inside ChimeraX)
                pass

    def state(epoch: int, step: int) -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "step": step, "image_std": image_std, "model_config": mcfg.as_dict(),
                "intensity": scales.as_dict(), "health_history": history, "recoveries": recoveries,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
                "engine_version": __version__}

    def save(epoch: int, step: int, tag: str | None = None):
        if not dd.main:
            return
        st = state(epoch, step)
        atomic_torch_save(st, ckpt_path)
        if tag and cfg.keep_checkpoints:
            atomic_torch_save(st, os.path.join(out, "checkpoints", tag))

    # the last healthy state, restored (with a lower learning rate) when an epoch diverges
    good = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "scaler": scaler.state_dict()})
    log_path = os.path.join(out, "log.jsonl")
    steps = sampler.steps_per_epoch()
    try:
        epoch = start_epoch
        while epoch < cfg.epochs:
            sampler.epoch = epoch
            skip_steps = start_step if epoch == start_epoch else 0
            sampler.skip = skip_steps * cfg.batch_size
            loader = make_loader(images, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                                 sampler=sampler, device=device, seed=cfg.seed)
            model.train()
            t0, seen, sums, nb = time.time(), 0, {}, 0
            step = skip_steps
            epoch_health = health.EpochHealth()
            failure = None
            for batch in loader:
                if stop["flag"]:
                    break
                imgs = intensity.normalise(batch["image"].to(device, non_blocking=True), image_std)
                idx = batch["index"].to(device, non_blocking=True)
                # KL warm-up: the decoder starts from "no deformation" and needs latents that
                # still carry information when it begins to use them (no posterior collapse)
                t = epoch - cfg.first_epoch + step / steps      # epochs into this stage
                kl_scale = min(1.0, t / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
                band = loss_band(cfg, t, coarsest_apix)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    total, terms, stats = compute_losses(ddp_model, imgs, idx, phys, edges, min_dist, edge_scale,
                                                         cfg, box, kl_scale, band)
                opt.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                scaler.step(opt)
                scaler.update()
                step += 1
                seen += len(imgs) * dd.world
                nb += 1
                epoch_health.add(stats)
                # accumulate on the device; read back (one sync) only when logging
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                sums["total"] = sums.get("total", 0.0) + total.detach()
                if step % cfg.log_every == 0 or step == steps or stop["flag"]:
                    loss_now = float(total.detach())
                    if not np.isfinite(loss_now) or not np.isfinite(float(sums["total"])):
                        failure = (f"the loss became non-finite at step {step} (terms: "
                                   f"{ {k: float(v) for k, v in terms.items()} })")
                        break
                    pps = seen / max(time.time() - t0, 1e-9)
                    progress.event("step", epoch=epoch + 1, epochs=total_epochs or cfg.epochs, step=step, steps_per_epoch=steps,
                                   loss=loss_now, particles_per_s=pps)
                    if dd.main:
                        _append_log(log_path, {"kind": "step", "epoch": epoch + 1, "step": step, "loss": loss_now,
                                               "band": band,
                                               **{k: float(v) for k, v in terms.items()},
                                               "particles_per_s": pps, "time": time.time()})
            if stop["flag"]:
                save(epoch, step)
                progress.event("stopped", epoch=epoch + 1, step=step, checkpoint=ckpt_path)
                raise KeyboardInterrupt
            if dd.world > 1:
                epoch_health.reduce(lambda x: dist.all_reduce(x))
            summary = epoch_health.summary()
            failure = failure or health.diverged(summary)
            if failure is not None:
                if len(recoveries) >= MAX_RECOVERIES:
                    history.append({"epoch": epoch + 1, **summary})
                    _write_failure_health(out, dd, history, recoveries, scales, mcfg, failure)
                    raise TrainingError(
                        f"training diverged in epoch {epoch + 1} ({failure}) and did not recover after "
                        f"{len(recoveries)} restarts with lower learning rates. Details: {out}/health.json. "
                        f"Check the inputs (is the consensus map the one the poses refer to? --invert?), "
                        f"or try --lr {cfg.lr * 0.1:g}.")
                lrs = [g["lr"] * RECOVERY_LR_FACTOR for g in opt.param_groups]
                model.load_state_dict(good["model"])
                opt.load_state_dict(good["optimizer"])
                scaler.load_state_dict(good["scaler"])
                for g, lr in zip(opt.param_groups, lrs):
                    g["lr"] = lr
                rec = {"epoch": epoch + 1, "reason": failure, "lr": opt.param_groups[0]["lr"]}
                recoveries.append(rec)
                progress.message(f"epoch {epoch + 1} diverged ({failure}): restored the state after epoch "
                                 f"{epoch}, learning rate lowered to {rec['lr']:.3g}, repeating the epoch")
                if dd.main:
                    _append_log(log_path, {"kind": "recovery", **rec, "time": time.time()})
                start_epoch, start_step = epoch, 0     # the epoch again, from its first step
                continue
            history.append({"epoch": epoch + 1, **summary})
            good = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "scaler": scaler.state_dict()})
            dt = time.time() - t0
            rec = {"kind": "epoch", "epoch": epoch + 1, **{k: float(v) / max(nb, 1) for k, v in sums.items()},
                   "seconds": dt, "particles_per_s": seen / max(dt, 1e-9), "time": time.time(),
                   "health": summary}
            if device.type == "cuda":
                rec["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
            if dd.main:
                _append_log(log_path, rec)
            progress.event("epoch", epoch=epoch + 1, epochs=total_epochs or cfg.epochs, loss=rec.get("total", float("nan")),
                           seconds=dt, particles_per_s=rec["particles_per_s"], explained=summary.get("explained"))
            save(epoch + 1, 0, tag=f"epoch_{epoch + 1:03d}.pt")
            epoch += 1
        z = encode_all(model, images, cfg, device, dd, image_std, phys)
        if dd.main:
            write_latents(out, z, mcfg)
            report = health.final_report(history[-1] if history else {}, health.latent_usage(model, z),
                                         recoveries, scales.summary(), mcfg.split,
                                         judge_latent=final and cfg.epochs - cfg.first_epoch
                                         >= health.MIN_EPOCHS_TO_JUDGE)
            health.write(out, report)
            if report["status"] == "failed":
                raise TrainingError(f"training finished but the run failed its health checks: {report['summary']}. "
                                    f"Latents and maps are kept for inspection; details in {out}/health.json")
            if report["status"] == "warning":
                progress.message(f"warning: {report['summary']} (details in {out}/health.json)")
            if final:
                progress.event("done", outdir=out, epochs=cfg.epochs, health=report["status"])
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if dd.world > 1 and dist.is_initialized():
            dist.barrier()
    return out


def _write_failure_health(out, dd, history, recoveries, scales, mcfg, failure: str) -> None:
    if not dd.main:
        return
    last = history[-1] if history else {}
    report = health.final_report(last, {"displacement_spread": float("nan"), "amplitude_spread": float("nan"),
                                        "particles": 0}, recoveries, scales.summary(), mcfg.split)
    report["status"] = "failed"
    report["summary"] = f"failed: diverged ({failure}); not recovered after {len(recoveries)} restarts"
    health.write(out, report)


def load_networks(model: HeterogeneityModel, run: str, device) -> None:
    """Start ``model`` from the encoders and decoders of a finished run on another Gaussian
    set (e.g. fewer Gaussians: coarse to fine). The decoder reads each Gaussian's
    position, so what it learned carries over to new Gaussians; the parent's feature
    scale is kept so that positions are read on the same scale."""
    path = os.path.join(run, "checkpoint.pt")
    if not os.path.exists(path):
        raise TrainingError(f"--init-from {run}: no checkpoint.pt there (not a finished GaussianEM run)")
    own = ("centres", "amplitudes", "widths")           # this run's Gaussians stay its own
    state = torch.load(path, map_location=device, weights_only=False)["model"]
    state = {k: v for k, v in state.items() if k not in own}
    try:
        missing = [k for k in model.load_state_dict(state, strict=False).missing_keys if k not in own]
    except RuntimeError as e:
        raise TrainingError(f"--init-from {run}: its networks do not fit this run's settings (training box, "
                            f"latent sizes and encoder input must match): {str(e).splitlines()[0]}") from None
    if missing:
        raise TrainingError(f"--init-from {run}: its checkpoint lacks {', '.join(missing[:5])}")


@torch.no_grad()
def encode_all(model: HeterogeneityModel, images: ParticleImages, cfg: TrainConfig, device,
               dd: _Dist, image_std: float, phys: Physics) -> np.ndarray:
    """Posterior means of all particles, in input order (gathered across processes)."""
    model.eval()
    n = len(images)
    per = int(np.ceil(n / dd.world))
    mine = np.arange(dd.rank * per, min(n, (dd.rank + 1) * per))
    loader = make_loader(images, cfg.batch_size * 2, shuffle=False, num_workers=cfg.num_workers,
                         sampler=mine.tolist(), device=device)
    zs, ids = [], []
    for batch in loader:
        mu = encode_particles(model, batch["image"].to(device), batch["index"].to(device), phys, image_std)
        zs.append(mu.float().cpu())
        ids.append(batch["index"].cpu())
    z = torch.cat(zs) if zs else torch.zeros(0, model.cfg.zdim)
    idx = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
    if dd.world > 1:
        zpad = torch.zeros(per, z.shape[1])
        ipad = torch.full((per,), -1, dtype=torch.long)
        zpad[:len(z)], ipad[:len(idx)] = z, idx
        zl = [torch.zeros_like(zpad) for _ in range(dd.world)]
        il = [torch.zeros_like(ipad) for _ in range(dd.world)]
        dist.all_gather(zl, zpad)
        dist.all_gather(il, ipad)
        z, idx = torch.cat(zl), torch.cat(il)
        keep = idx >= 0
        z, idx = z[keep], idx[keep]
    full = np.zeros((n, z.shape[1]), dtype=np.float32)
    full[idx.numpy()] = z.numpy()
    return full


def write_latents(out: str, z: np.ndarray, mcfg: ModelConfig) -> None:
    arrays = {"z": z.astype(np.float32)}
    if mcfg.split:
        arrays["z_conf"] = z[:, :mcfg.zdim_conf]
        arrays["z_comp"] = z[:, mcfg.zdim_conf:]
    tmp = os.path.join(out, ".latents.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(out, "latents.npz"))


def _write_config(out: str, cfg: TrainConfig, grid: Grid, data, box: int, fit_report) -> None:
    d = {"train": cfg.as_dict(), "grid": grid.as_dict(), "train_box": box,
         "n_particles": len(data), "particle_box": data.box,
         "particle_apix": float(np.median(data.apix)),
         "fit": fit_report.as_dict() if fit_report else None,
         "engine_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    d["train"]["particles"] = os.path.abspath(cfg.particles)
    d["train"]["consensus"] = os.path.abspath(cfg.consensus)
    if cfg.model:
        d["train"]["model"] = os.path.abspath(cfg.model)
    tmp = os.path.join(out, ".config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(d, f, indent=2)
    os.replace(tmp, os.path.join(out, "config.json"))


def _append_log(path: str, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
