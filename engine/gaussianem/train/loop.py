"""Training the heterogeneity model on particle images with known poses and CTF.

``train(config)`` writes the run folder (:class:`~gaussianem.io.rundir.RunDir`):
``config.json``, ``gaussians.pt``, ``checkpoint.pt`` and ``checkpoints/``
(:mod:`gaussianem.train.checkpoints`), ``log.jsonl``, ``health.json`` and, last, ``latents.npz``.

Resuming (:mod:`gaussianem.train.resume`) continues exactly on a CPU, from within an epoch
too: the particle order comes from ``seed + epoch``; the optimizer, scaler and RNG states,
the position in the epoch and its running sums are in the checkpoint (on a GPU the same up
to rounding: atomic additions and cuBLAS are not bit-reproducible). SIGINT, SIGTERM and
SIGUSR1 stop every process at one step boundary with a checkpoint
(:mod:`gaussianem.train.signals`). Several processes (``torchrun``) train with DDP, each on
its share of every epoch's permutation (:mod:`gaussianem.train.distributed`).

:class:`Trainer` is one stage; :func:`train` runs one or two (coarse to fine,
:mod:`gaussianem.train.stages`).
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import torch

from gaussianem.errors import TrainingError
from gaussianem.io.images import loader_workers, make_loader
from gaussianem.io.mrc import read_map
from gaussianem.io.particles import load_particles
from gaussianem.io.rundir import RunDir
from gaussianem.model import intensity
from gaussianem.model.encoding import Physics
from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.physics.grid import Grid
from gaussianem.progress import Progress
from gaussianem.train import arrival, graph_cut, health, rebase, signals, stages
from gaussianem.train.checkpoints import Checkpoints, EpochProgress, restore_state, training_state
from gaussianem.train.config import TrainConfig, resumed
from gaussianem.train.distributed import (EpochBatches, encode_all, init_distributed, process_device,
                                          training_images)
from gaussianem.train.prepare import (build_base_gaussians, check_consensus, load_networks, plan_stages,
                                      training_box, write_run_config)
from gaussianem.train.resume import decide, record_attempt
from gaussianem.train.step import Batch, NeighbourGraph, Schedule, compute_losses, loss_band

MAX_RECOVERIES = 3          # diverged epochs restarted from the last good state ...
RECOVERY_LR_FACTOR = 0.3    # ... each time with the learning rate times this


def train(cfg: TrainConfig, resume: bool | str = False, progress: Progress | None = None,
          given: set | None = None) -> str:
    """Run (or resume) a training job; returns the output folder.

    When the training box resolves more detail than the default Gaussian count carries,
    or ``cfg.fine_gaussians`` asks for it, this is two stages, coarse then fine
    (:mod:`gaussianem.train.stages`); ``resume`` continues whichever was interrupted.
    ``resume`` is False, True or "auto", ``given`` the options given on the command line,
    which a resumed run's settings must agree with (:func:`gaussianem.train.resume.decide`)."""
    progress = progress or Progress("none")
    run = RunDir(cfg.outdir)
    dd = init_distributed(cfg.device)
    decision = decide(run, cfg, resume, given, dd)
    if decision.note and dd.main:
        progress.message(decision.note)
    if decision.action == "finished":
        return run.path
    if decision.action == "resume":
        plan = stages.load_plan(run)
        if plan is None or run.has_checkpoint():
            return Trainer(cfg, progress, resume=True).run()
        if os.path.exists(run.coarse.config):        # else the coarse stage starts from the beginning
            cfg = resumed(cfg, run.coarse)
    else:
        plan = plan_stages(cfg)
        if plan is None:
            return Trainer(cfg, progress).run()
        if dd.main:
            stages.save_plan(run, plan)
    progress.message(plan.describe(cfg.epochs))
    if not stages.coarse_finished(run):
        coarse = plan.coarse_config(cfg, run.path)
        Trainer(coarse, progress, resume=RunDir(coarse.outdir).has_checkpoint(), total_epochs=cfg.epochs,
                final=False).run()
    return Trainer(plan.fine_config(cfg, run.path), progress).run()


class Trainer:
    """One training stage in ``cfg.outdir``: set up (or resume), then :meth:`run`.

    ``total_epochs`` is what progress reports as the whole; ``final`` whether this stage
    ends the job (a coarse stage does not)."""

    def __init__(self, cfg: TrainConfig, progress: Progress, resume: bool = False,
                 total_epochs: int | None = None, final: bool = True):
        self.dd = init_distributed(cfg.device)
        self.progress = progress if self.dd.main else Progress("none")
        self.run_dir = RunDir(cfg.outdir)
        if resume:
            self.run_dir.require_resumable(holds=self.run_dir.has_checkpoint())
            cfg = resumed(cfg, self.run_dir)
        else:
            self.run_dir.require_new(holds=self.dd.agree(self.dd.main and self.run_dir.has_checkpoint()))
        self.cfg, self.resume, self.final = cfg, resume, final
        self.total_epochs = total_epochs or cfg.epochs
        self.device = process_device(cfg.device, self.dd)
        self.ckpt = Checkpoints(self.run_dir, cfg.checkpoint_minutes, cfg.keep_checkpoints, writer=self.dd.main)
        self.loader_error = None
        with torch.enable_grad():
            self._set_up()

    # ------------------------------------------------------------------ set-up
    def _set_up(self) -> None:
        cfg, dd, run = self.cfg, self.dd, self.run_dir
        if dd.main:
            os.makedirs(run.path, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + dd.rank)
        np.random.seed(cfg.seed + dd.rank)
        self.data = data = load_particles(cfg.particles, **cfg.particle_files())
        vol, apix, origin = read_map(cfg.consensus)
        grid = Grid(vol.shape[0], apix, origin)
        check_consensus(cfg, data, grid)
        self.box = box = training_box(cfg, data.box)
        if not self.resume:
            if dd.main:
                self.progress.event("start", outdir=run.path, particles=len(data), box=data.box, train_box=box)
                train_apix = float(np.max(data.apix)) * data.box / box
                base, fit_report = build_base_gaussians(cfg, vol, grid, self.device, self.progress, train_apix)
                base.save(run.gaussians)
                write_run_config(run, cfg, grid, data, box, fit_report)
            dd.barrier()
        self.base = base = GaussianSet.load(run.gaussians)
        self.images = training_images(cfg, data, box, dd, self.progress)
        self.mcfg = ModelConfig(box=box, zdim=cfg.zdim, zdim_conf=cfg.zdim_conf, zdim_comp=cfg.zdim_comp,
                                window=cfg.window, max_displacement=cfg.max_displacement, encoder_input=cfg.encoder_input,
                                width_change=cfg.width_change, gaussian_features=cfg.gaussian_features,
                                centre_by=cfg.centre_by, segments=cfg.segments, domain_motion=cfg.domain_motion,
                                encoder_band=encoder_band(cfg, data, box))
        self.model = HeterogeneityModel(self.mcfg, base).to(self.device)
        try:                                   # fused: one kernel for all parameters (CPU and CUDA)
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0, fused=True)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and not torch.cuda.is_bf16_supported())
        self.sampler = EpochBatches(len(data), cfg.batch_size, dd.rank, dd.world, cfg.seed)
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", dd.world))     # processes on this node (torchrun)
        self.workers = loader_workers(self.device, per_node) if cfg.num_workers is None else cfg.num_workers
        # one loader for the whole stage (its workers persist); each epoch sets the sampler
        self.loader = make_loader(self.images, cfg.batch_size, shuffle=False, num_workers=self.workers,
                                  batch_sampler=self.sampler, device=self.device)
        self.loader.worker_init_fn = signals.ignore_in_worker
        self.start_epoch, self.start_step, self.in_epoch = cfg.first_epoch, 0, None
        self.image_std, self.scales, self.history, self.recoveries = None, None, [], []
        self.graph_labels = None               # --cut-graph: the rigid domains the graph is cut at
        if cfg.init_from and not self.resume:
            load_networks(self.model, cfg.init_from, self.device)
            self.progress.message(f"networks initialised from {cfg.init_from}")
        if self.resume:
            self._load_checkpoint()
        self.phys = Physics(data, box, self.device)
        self.coarsest_apix = float(self.phys.apix.max())     # the loss band's Nyquist (read once)
        if self.image_std is None:
            self.image_std = intensity.image_std(self.images, seed=cfg.seed)
        if self.scales is None:
            self._measure_intensity()
        self.phys.set_intensity(self.scales)
        if cfg.lowpass_start and cfg.epochs - cfg.first_epoch < cfg.lowpass_epochs:
            self.progress.message(f"note: the image loss stays low-pass filtered for all {cfg.epochs} epochs "
                                  f"(it reaches Nyquist after --lowpass-epochs {cfg.lowpass_epochs:g}); train "
                                  "longer or lower it")
        self.graph = NeighbourGraph.build(base, cfg.radius, self.device).cut(self.graph_labels)
        self.ddp_model = self.model
        if dd.world > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # the last healthy state, restored when an epoch diverges (resumed within an epoch: its start, if kept)
        self.good = (self.resume and self.start_step and self.ckpt.epoch_state(self.start_epoch)) or self._snapshot()

    def _load_checkpoint(self) -> None:
        ck = self.ckpt.load()
        restore_state(ck, self.model, self.opt, self.scaler, self.device)
        self.start_epoch, self.start_step, self.image_std = ck["epoch"], ck["step"], ck["image_std"]
        self.in_epoch = ck.get("in_epoch") if self.dd.main else None     # rank 0's stand for all
        saved = ModelConfig.from_saved(ck["model_config"])
        self.mcfg.centre_displacements, self.mcfg.centre_by = saved.centre_displacements, saved.centre_by
        self.scales = intensity.IntensityScale.from_dict(ck.get("intensity"), len(self.data))
        self.history, self.recoveries = ck.get("health_history", []), ck.get("recoveries", [])
        self.graph_labels = ck.get("graph_labels")
        self.progress.message(f"resuming at epoch {self.start_epoch + 1}, step {self.start_step}")

    def _measure_intensity(self) -> None:
        self.progress.message("measuring the intensity scale and shift of each image against the consensus "
                              "projections")
        s = self.scales = intensity.estimate(self.base, self.images, self.phys, self.box, self.image_std,
                                             loss_band(self.cfg, 0.0, self.coarsest_apix), self.device)
        groups = ", ".join(f"{g}: {v:.3g}" for g, v in zip(s.groups, s.group_scale))
        p5, p95 = s.summary()["particle_scale_p5_p95"]
        self.progress.message(f"intensity scale per optics group {groups}; per particle {p5:.3g} to {p95:.3g} "
                              f"(5th-95th percentile); image-consensus correlation {s.correlation:.3f}; "
                              f"shift corrections {s.summary()['shift_correction_rms_A']:.2f} A RMS")

    # ------------------------------------------------------------------ state
    def _snapshot(self) -> dict:
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                              "scaler": self.scaler.state_dict()})

    def save(self, epoch: int, step: int, acc: EpochProgress | None = None, epoch_done: bool = False) -> None:
        """The state after ``step`` steps of epoch ``epoch`` (0-based; ``acc`` its sums), all ranks."""
        reduce = (lambda x: torch.distributed.all_reduce(x)) if self.dd.world > 1 else None   # noqa: E731
        in_epoch = acc.state(reduce) if acc is not None and step else None
        if not self.dd.main:
            return self.ckpt.save(None)
        st = training_state(self.model, self.opt, self.scaler, self.device, epoch=epoch, step=step,
                            image_std=self.image_std, model_config=self.mcfg.as_dict(), intensity=self.scales.as_dict(),
                            health_history=self.history, recoveries=self.recoveries, in_epoch=in_epoch,
                            graph_labels=self.graph_labels)
        self.ckpt.save(st, epoch if epoch_done else None)
        if in_epoch is not None:
            self.run_dir.append_log({"kind": "checkpoint", "epoch": epoch + 1, "step": step,
                                     "seconds": self.ckpt.seconds[-1], "time": time.time()})

    def _stop(self, epoch: int, step: int, acc: EpochProgress, signum: int):
        """Save the state after the last finished step, say so, and end the run."""
        self.save(epoch, step, acc)
        name, ck = signals.name(signum) if signum else None, self.run_dir.checkpoint
        if self.dd.main:
            record_attempt(self.run_dir, "stopped", signal=name or "loader", epoch=epoch + 1, step=step)
        if name is None:        # a data-loading worker died, no signal asked for it
            raise TrainingError(f"{self.loader_error}; the state after epoch {epoch + 1}, step {step} is saved in "
                                f"{ck}: continue with --resume")
        self.progress.event("stopped", epoch=epoch + 1, step=step, checkpoint=ck, signal=name)
        raise signals.Stopped(name, epoch + 1, step, ck, self.dd.main)

    # ------------------------------------------------------------------ the loop
    @torch.enable_grad()     # also when called inside a no_grad context (e.g. a user's script)
    def run(self) -> str:
        handlers = signals.install()
        try:
            if self.resume:
                self.progress.event("resumed", epoch=self.start_epoch + 1, step=self.start_step)
            if self.dd.main:
                record_attempt(self.run_dir, "start", resumed=bool(self.resume), epoch=self.start_epoch + 1,
                               step=self.start_step, processes=self.dd.world)
            epoch = self.start_epoch
            while epoch < self.cfg.epochs:
                skip = self.start_step if epoch == self.start_epoch else 0
                summary, failure, t0, acc = self._epoch(epoch, skip)
                if failure is not None:
                    self._recover(epoch, failure, summary)
                    self.start_epoch, self.start_step = epoch, 0       # the epoch again, from its first step
                    continue
                self._end_epoch(epoch, summary, t0, acc)
                epoch += 1
            self._finish()
        finally:
            signals.restore(handlers)
            self.dd.barrier()
        return self.run_dir.path

    def _epoch(self, epoch: int, skip_steps: int):
        cfg, dd, device = self.cfg, self.dd, self.device
        steps = self.sampler.steps_per_epoch()
        self.sampler.epoch, self.sampler.skip = epoch, skip_steps
        self.model.train()
        t0, step, failure = time.time(), skip_steps, None
        acc = EpochProgress(device, self.in_epoch if skip_steps else None)
        batches = iter(self.loader)
        while True:
            signum, broken, due = dd.maxima(signals.requested(), self.loader_error is not None,
                                            dd.main and self.ckpt.due())
            if signum or broken:
                self._stop(epoch, step, acc, signum)
            if due and step > skip_steps:
                self.save(epoch, step, acc)
            try:
                raw = next(batches)
            except StopIteration:
                break
            except (RuntimeError, ConnectionError, EOFError) as e:  # a loader worker died (or its pipe)
                if (isinstance(e, RuntimeError) and "DataLoader worker" not in str(e)) or dd.world > 1:
                    raise
                self.loader_error = str(e)
                continue
            batch = Batch(intensity.normalise(raw["image"].to(device, non_blocking=True), self.image_std),
                          raw["index"].to(device, non_blocking=True), self.phys, self.box,
                          self.sampler.noise(epoch, step, self.mcfg.zdim))
            # KL warm-up: the decoder starts from "no deformation" and needs latents that
            # still carry information when it begins to use them (no posterior collapse)
            schedule = Schedule.at(cfg, epoch - cfg.first_epoch + step / steps, self.coarsest_apix)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                total, terms, stats = compute_losses(self.ddp_model, batch, self.graph, schedule)
            self.opt.zero_grad(set_to_none=True)
            weight = self.sampler.loss_weight(epoch, step) if dd.world > 1 else 1.0
            self.scaler.scale(total * weight).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
            self.scaler.step(self.opt)
            self.scaler.update()
            step = step + 1
            acc.add(total, terms, stats, len(batch.images) * dd.world)
            if step % cfg.log_every == 0 or step == steps:
                loss_now = float(total.detach())
                if not np.isfinite(loss_now) or not np.isfinite(float(acc.sums["total"])):
                    failure = (f"the loss became non-finite at step {step} (terms: "
                               f"{ {k: float(v) for k, v in terms.items()} })")
                    break
                pps = (acc.seen - acc.seen_before) / max(time.time() - t0, 1e-9)
                self.progress.event("step", epoch=epoch + 1, epochs=self.total_epochs, step=step,
                                    steps_per_epoch=steps, loss=loss_now, particles_per_s=pps)
                if dd.main:
                    self.run_dir.append_log({"kind": "step", "epoch": epoch + 1, "step": step, "loss": loss_now,
                                             "band": schedule.band, **{k: float(v) for k, v in terms.items()},
                                             "particles_per_s": pps, "time": time.time()})
        if dd.world > 1:
            acc.health.reduce(lambda x: torch.distributed.all_reduce(x))
        summary = acc.health.summary()
        failure = failure or health.diverged(summary)
        if dd.agree(failure is not None) and failure is None:
            failure = "another process diverged"
        return summary, failure, t0, acc

    def _recover(self, epoch: int, failure: str, summary: dict) -> None:
        """Restore the last healthy state with a lower learning rate, or give up."""
        if len(self.recoveries) >= MAX_RECOVERIES:
            self.history.append({"epoch": epoch + 1, **summary})
            if self.dd.main:
                health.write(self.run_dir, health.diverged_report(self.history[-1], self.recoveries,
                                                                  self.scales.summary(), self.mcfg.split, failure))
            raise TrainingError(
                f"training diverged in epoch {epoch + 1} ({failure}) and did not recover after "
                f"{len(self.recoveries)} restarts with lower learning rates. Details: {self.run_dir.health}. "
                f"Check the inputs (is the consensus map the one the poses refer to? --invert?), "
                f"or try --lr {self.cfg.lr * 0.1:g}.")
        lrs = [g["lr"] * RECOVERY_LR_FACTOR for g in self.opt.param_groups]
        self.model.load_state_dict(self.good["model"])
        self.opt.load_state_dict(self.good["optimizer"])
        self.scaler.load_state_dict(self.good["scaler"])
        for g, lr in zip(self.opt.param_groups, lrs):
            g["lr"] = lr
        rec = {"epoch": epoch + 1, "reason": failure, "lr": self.opt.param_groups[0]["lr"]}
        self.recoveries.append(rec)
        self.progress.message(f"epoch {epoch + 1} diverged ({failure}): restored the state after epoch "
                              f"{epoch}, learning rate lowered to {rec['lr']:.3g}, repeating the epoch")
        if self.dd.main:
            self.run_dir.append_log({"kind": "recovery", **rec, "time": time.time()})

    def _end_epoch(self, epoch: int, summary: dict, t0: float, acc: EpochProgress) -> None:
        self.history.append({"epoch": epoch + 1, **summary})
        rebase.after_epoch(self, epoch + 1)        # --unsmear: the base sharpened by the decoded motion
        graph_cut.after_epoch(self, epoch + 1)     # --cut-graph: the distance term let go between domains
        self.good = self._snapshot()
        dt = time.time() - t0
        rec = {"kind": "epoch", "epoch": epoch + 1, **{k: float(v) / max(acc.steps, 1) for k, v in acc.sums.items()},
               "seconds": dt, "particles_per_s": (acc.seen - acc.seen_before) / max(dt, 1e-9), "time": time.time(),
               "health": summary}
        if self.device.type == "cuda":
            rec["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        if self.dd.main:
            self.run_dir.append_log(rec)
        self.progress.event("epoch", epoch=epoch + 1, epochs=self.total_epochs, loss=rec.get("total", float("nan")),
                            seconds=dt, particles_per_s=rec["particles_per_s"], explained=summary.get("explained"))
        self.save(epoch + 1, 0, epoch_done=True)

    # ------------------------------------------------------------------ the end
    def _finish(self) -> None:
        self.model.eval()
        z = encode_all(self.model, self.images, self.cfg.batch_size * 2, self.workers, self.phys, self.image_std,
                       self.dd, self.device)
        if not self.dd.main:
            return
        mcfg, cfg = self.mcfg, self.cfg
        arrays = {"z": z.astype(np.float32)}
        if mcfg.split:
            arrays.update(z_conf=z[:, :mcfg.zdim_conf], z_comp=z[:, mcfg.zdim_conf:])
        self.run_dir.write_latents(arrays)
        judge = self.final and cfg.epochs - cfg.first_epoch >= health.MIN_EPOCHS_TO_JUDGE
        report = health.final_report(self.history[-1] if self.history else {}, arrival.usage(self, z),
                                     self.recoveries, self.scales.summary(self.data.optics_group), mcfg.split,
                                     judge_latent=judge)
        health.write(self.run_dir, report)
        if report["status"] == "failed":
            raise TrainingError(f"training finished but the run failed its health checks: {report['summary']}. "
                                f"Latents and maps are kept for inspection; details in {self.run_dir.health}")
        if report["status"] == "warning":
            self.progress.message(f"{report['summary']} (details in {self.run_dir.health})")
        if self.final:
            self.progress.event("done", outdir=self.run_dir.path, epochs=cfg.epochs, health=report["status"])


def encoder_band(cfg, data, box: int) -> float:
    """``--encoder-lowpass`` as a fraction of the training box's Nyquist (0: the full band)."""
    if not cfg.encoder_lowpass:
        return 0.0
    train_apix = float(np.max(data.apix)) * data.box / box
    return float(min(1.0, 2 * train_apix / cfg.encoder_lowpass))
