"""Run health: is the model explaining the images, using its latent and keeping its maps?

Measured on every training step (no extra rendering: the consensus projection is what
the encoder reads anyway) and summarised per epoch:

* ``explained``: how much of the image signal the model explains, relative to the
  consensus alone: ``(L_zero - L_model) / (L_zero - L_consensus)`` with ``L`` the mean
  squared error (in the loss's current band) of the model's prediction, of the undeformed
  consensus Gaussians and of an empty prediction. The decoder starts at the consensus
  (1.0) and can only add to it; a model below it has lost structure, and one near 0
  predicts empty images.
* ``kl_per_dim``: the KL divergence of each latent dimension (how much it carries);
* ``displacement_rms`` (Angstrom, mass-weighted), ``near_bound`` (fraction of
  displacement components beyond 90% of ``max_displacement``), ``amplitude_mean``
  (mass-weighted amplitude factor; 1 = the consensus, 0 = empty maps).

:func:`diverged` says whether an epoch must be undone (training then restores the last
good state with a lower learning rate); :func:`final_report` checks the finished run,
including whether the decoder gives different particles different states (a latent in
use; then, as warnings, whether it moves the particles at all and whether a minority of
particles carries the motion (:func:`motion_checks`), and whether many images hardly
match the map (``low_signal``)), and :func:`write` puts it in
``OUTDIR/health.json``. A run whose report is
``failed`` ends with a :class:`~gaussianem.errors.TrainingError`, never ``done``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch

from gaussianem.io.atomic import write_json
from gaussianem.io.rundir import RunDir
from gaussianem.train import latent_signal

EXPLAINED_FAILED, EXPLAINED_WARNING = 0.5, 0.95
AMPLITUDE_FAILED = 0.3
NEAR_BOUND_WARNING, NEAR_BOUND_FAILED = 0.01, 0.25
UNUSED_DISPLACEMENT = 0.05     # Angstrom: spread of displacements between particles
UNUSED_AMPLITUDE = 0.005       # spread of amplitude factors between particles
# Angstrom: the median particle's displacement RMS below which no motion was found. On the
# robustness matrix (docs/validation.md, "Run health on the matrix") runs that found the motion sit at
# 0.29-1.4 A, runs that lost it at 0.04-0.10 A
NO_MOTION = 0.15
# particles decoding to over OUTLIER_FACTOR x the median displacement (and over
# OUTLIER_FLOOR A): above OUTLIER_WARNING of them, and when they form a group of their own
# (a dip in the density of the displacements below OUTLIER_DIP times the group's peak), the
# motion sits in a minority (junk particles: 10-11% on the junk_protein cell, 0-0.5% on the
# cells without junk); a continuous tail of them is the end of a large motion, not outliers
OUTLIER_FACTOR, OUTLIER_FLOOR, OUTLIER_WARNING = 3.0, 0.5, 0.05
OUTLIER_DIP = 0.5
# fraction of particles whose intensity scale sits at its lower clip (images matching the
# consensus at under half the usual strength) above which junk is suspected: 11.6% on the
# junk_noise cell, 0.05-1.9% on the cells without junk
LOW_SIGNAL_WARNING = 0.05
# the particles at the ends of the motion preferring over ASKED_WARNING times the decoded
# motion (gaussianem.train.arrival): with the default training 1.99 / 1.27 / 1.35 on the
# hinge and two-domain cells, whose decoders carry 0.13 / 0.27 / 0.25 of the motion, 1.07 on
# the normal-mode cell that carries 0.79 (docs/validation.md, "The whole motion"). The same
# bound on the 3D ask (gaussianem.train.latent_signal's asked_3d): 0.60-1.14 on the runs that
# carry 0.8 or more of the motion, 1.19-1.96 on those that carry 0.19-0.67 (docs/validation.md,
# "The motion the images ask for, in 3D")
ASKED_WARNING = 1.2
MIN_EPOCHS_TO_JUDGE = 5        # shorter runs (smoke tests) only warn about an unused latent


@torch.no_grad()
def step_stats(pred, consensus, target, mu, logvar, out: dict, mass, max_displacement: float) -> dict:
    """Per-step health numbers as device tensors (no host sync)."""
    d = out["displacement"].float()
    return {
        "l2_model": (pred.float() - target).pow(2).mean(),
        "l2_consensus": (consensus.float() - target).pow(2).mean(),
        "l2_zero": target.pow(2).mean(),
        "kl_per_dim": (-0.5 * (1 + logvar.float() - mu.float() ** 2 - logvar.float().exp())).mean(0),
        "displacement_rms": (d.pow(2).sum(-1) * mass).sum(1).sqrt().mean(),
        "near_bound": (d.abs() > 0.9 * max_displacement).float().mean(),
        "amplitude_mean": (out["amp_factor"].float() * mass).sum(1).mean(),
        "nonfinite": (~torch.isfinite(pred)).any().float() + (~torch.isfinite(mu)).any().float(),
    }


class EpochHealth:
    """Sums of :func:`step_stats` over an epoch (on the device), and their summary."""

    def __init__(self):
        self.sums: dict = {}
        self.n = 0

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def reduce(self, all_reduce=None) -> None:
        """Sum over processes (``all_reduce``: a function summing a tensor in place)."""
        if all_reduce is None or not self.sums:
            return
        keys = sorted(self.sums)
        flat = torch.cat([torch.as_tensor(self.sums[k]).reshape(-1).float() for k in keys]
                         + [torch.tensor([float(self.n)], device=torch.as_tensor(self.sums[keys[0]]).device)])
        all_reduce(flat)
        pos = 0
        for k in keys:
            size = torch.as_tensor(self.sums[k]).numel()
            self.sums[k] = flat[pos:pos + size].reshape(torch.as_tensor(self.sums[k]).shape)
            pos += size
        self.n = int(flat[-1])

    def summary(self) -> dict:
        if not self.n:
            return {}
        m = {k: (v / self.n).detach().cpu().numpy() for k, v in self.sums.items()}
        zero, cons, model = float(m["l2_zero"]), float(m["l2_consensus"]), float(m["l2_model"])
        gain = zero - cons
        return {
            "explained": (zero - model) / gain if gain > 0 else float("nan"),
            "l2_model": model, "l2_consensus": cons, "l2_zero": zero,
            "kl_per_dim": [float(v) for v in np.atleast_1d(m["kl_per_dim"])],
            "displacement_rms": float(m["displacement_rms"]),
            "near_bound": float(m["near_bound"]),
            "amplitude_mean": float(m["amplitude_mean"]),
            "finite": bool(float(m["nonfinite"]) == 0 and all(math.isfinite(float(np.sum(v))) for v in m.values())),
        }


def diverged(summary: dict) -> str | None:
    """Why an epoch must be undone, or None when it is healthy enough to go on."""
    if not summary:
        return None
    if not summary["finite"]:
        return "non-finite values in the loss or the latents"
    e = summary["explained"]
    if not math.isfinite(e):
        return "the consensus' prediction of the images is no longer finite (a runaway intensity scale)"
    if e < EXPLAINED_FAILED:
        return (f"the model explains {e:.0%} of the image signal the consensus explains (the maps are losing "
                "their density)")
    if summary["amplitude_mean"] < AMPLITUDE_FAILED:
        return f"the mean amplitude factor fell to {summary['amplitude_mean']:.2f} (maps going empty)"
    if summary["near_bound"] > NEAR_BOUND_FAILED:
        return (f"{summary['near_bound']:.0%} of the displacements sit at the --max-displacement bound "
                "(a runaway deformation)")
    return None


@torch.no_grad()
def latent_usage(model, z: np.ndarray, n: int = 256, batch: int = 32, seed: int = 0) -> dict:
    """How differently the decoder deforms different particles: the mass-weighted RMS over
    Gaussians of the standard deviation across ``n`` particles' latents of their
    displacements (Angstrom) and amplitude factors; and how far the particles move: the
    median over particles of :func:`particle_motion` (``displacement_median``, Angstrom),
    the fraction of particles moved beyond :func:`outlier_cut` (``displacement_outliers``)
    and the fraction moved beyond ``OUTLIER_FACTOR`` x the median whether or not they form a
    group of their own (``displacement_tail``, beyond ``tail_threshold``)."""
    if z is None or len(z) < 2:
        return {"displacement_spread": 0.0, "amplitude_spread": 0.0, "particles": 0}
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(z), size=min(n, len(z)), replace=False))
    dev = next(model.parameters()).device
    emb = model.embed()
    mass = model.mass_weights()
    s1 = s2 = a1 = a2 = 0.0
    moved = []
    for start in range(0, len(pick), batch):
        zz = torch.from_numpy(np.asarray(z[pick[start:start + batch]], np.float32)).to(dev)
        out = model.decode(zz, emb)
        d, a = out["displacement"].float(), out["amp_factor"].float()
        s1, s2 = s1 + d.sum(0), s2 + d.pow(2).sum(0)
        a1, a2 = a1 + a.sum(0), a2 + a.pow(2).sum(0)
        moved.append(_moved(out, mass))
    k = len(pick)
    var_d = (s2 / k - (s1 / k) ** 2).clamp_min(0).sum(-1)            # (N,)
    var_a = (a2 / k - (a1 / k) ** 2).clamp_min(0)
    moved = np.concatenate(moved)
    median, cut, far = float(np.median(moved)), outlier_cut(moved), _far(moved)
    return {"displacement_spread": float((var_d * mass).sum().sqrt()),
            "amplitude_spread": float((var_a * mass).sum().sqrt()), "particles": int(k),
            "displacement_median": median, "displacement_outliers": float((moved > cut).mean()),
            "outlier_threshold": cut, "displacement_tail": float((moved > far).mean()), "tail_threshold": far}


@torch.no_grad()
def particle_motion(model, z: np.ndarray, batch: int = 256) -> np.ndarray:
    """How far the decoder moves each particle's density: the RMS over Gaussians of its
    displacement (Angstrom), weighted by each Gaussian's mass as the particle has it (base
    mass x amplitude factor, so the Gaussians of an absent part, whose displacements no
    image constrains, do not count), (n,) for latents ``z`` (n, zdim)."""
    dev = next(model.parameters()).device
    emb, mass = model.embed(), model.mass_weights()
    out = [_moved(model.decode(torch.from_numpy(np.asarray(z[i:i + batch], np.float32)).to(dev), emb), mass)
           for i in range(0, len(z), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def _moved(decoded: dict, mass: torch.Tensor) -> np.ndarray:
    """:func:`particle_motion` of one decoded batch (``decode``'s dict), (B,) float64."""
    w = mass * decoded["amp_factor"].float()
    w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    return (decoded["displacement"].float().pow(2).sum(-1) * w).sum(1).sqrt().cpu().double().numpy()


def _far(moved: np.ndarray) -> float:
    """``OUTLIER_FACTOR`` times the median of ``moved``, at least ``OUTLIER_FLOOR``."""
    return max(OUTLIER_FACTOR * float(np.median(moved)), OUTLIER_FLOOR)


def outlier_cut(moved: np.ndarray) -> float:
    """The displacement (Angstrom) beyond which a particle is a motion outlier:
    ``OUTLIER_FACTOR`` times the median of ``moved`` (:func:`particle_motion`), at least
    ``OUTLIER_FLOOR``, when at most ``OUTLIER_WARNING`` of the particles are beyond it or
    they form a group of their own (:func:`separate_group`: junk); when more are and they
    are a continuous tail (the far end of a large motion), none is an outlier (the cut is
    the largest displacement)."""
    moved = np.asarray(moved, np.float64)
    far = _far(moved)
    if (moved > far).mean() <= OUTLIER_WARNING or separate_group(moved, far):
        return far
    return float(moved.max())


def separate_group(moved: np.ndarray, far: float) -> bool:
    """Whether the particles moved beyond ``far`` (Angstrom) stand apart from the rest.

    The density of log displacement (a Gaussian kernel estimate, Silverman's bandwidth from
    the interquartile range) is followed upwards from the bulk's mode: a group stands apart
    when, after a dip, it rises again to a peak beyond ``far``, the dip falling below
    ``OUTLIER_DIP`` times that peak, with over ``OUTLIER_WARNING`` of the particles beyond
    the dip. Junk decodes so (the junk_protein cell: the bulk under 2.1 A, the junk at
    3.6-6.8 A, dips of 0.04-0.33 in its 256-particle samples); a large motion's far end
    spreads continuously from the bulk (no dip: continuous tails of 8-21% beyond 3x the
    median, 256 to 512 draws, are taken for groups 0-1.5% of the time)."""
    u = np.log(np.maximum(np.asarray(moved, np.float64), 1e-3))
    n = len(u)
    if n < 20:
        return True                               # too few to see a shape: as before, outliers
    q25, q75 = np.percentile(u, [25, 75])
    h = max(0.9 * min(u.std(), (q75 - q25) / 1.34) * n ** -0.2, 0.05)
    grid = np.linspace(u.min() - 2 * h, u.max() + 2 * h, 256)
    density = np.exp(-0.5 * ((grid[:, None] - u[None]) / h) ** 2).sum(1)
    mode = int(np.argmax(np.where(grid <= np.log(far), density, -1.0)))
    for i in range(mode + 1, len(grid) - 1):
        if not density[i] <= min(density[i - 1], density[i + 1]):
            continue                              # not a dip
        peak = i + 1 + int(np.argmax(density[i + 1:]))
        if (grid[peak] > np.log(far) and density[i] < OUTLIER_DIP * density[peak]
                and (u > grid[i]).mean() > OUTLIER_WARNING):
            return True
    return False


def _check(name, value, status, message, threshold=None) -> dict:
    return {"name": name, "value": value, "status": status, "message": message, "threshold": threshold}


def final_report(last: dict, usage: dict, recoveries: list, intensity: dict | None, split: bool,
                 judge_latent: bool = True) -> dict:
    """The finished run's health: the checks, the overall status (``healthy``, ``warning``
    or ``failed``: the worst check) and one line to show people. ``judge_latent``: an
    unused latent fails the run (else, for runs too short to have learned one, a warning)."""
    checks = []
    if not last:
        checks.append(_check("trained", 0, "failed", "no training step was taken"))
    else:
        checks.append(_check("finite", last["finite"], "healthy" if last["finite"] else "failed",
                             "losses and latents are finite" if last["finite"] else
                             "non-finite values in the last epoch"))
        e = last["explained"]
        st = ("failed" if not math.isfinite(e) or e < EXPLAINED_FAILED else
              "warning" if e < EXPLAINED_WARNING else "healthy")
        checks.append(_check("explained", e, st,
                             f"the model explains {e:.1%} of the image signal the consensus explains"
                             if math.isfinite(e) else "the consensus explains no image signal",
                             [EXPLAINED_FAILED, EXPLAINED_WARNING]))
        a = last["amplitude_mean"]
        checks.append(_check("maps_not_empty", a, "failed" if a < AMPLITUDE_FAILED else "healthy",
                             f"mean amplitude factor {a:.2f} (1 = the consensus' density)", AMPLITUDE_FAILED))
        nb = last["near_bound"]
        st = "failed" if nb > NEAR_BOUND_FAILED else "warning" if nb > NEAR_BOUND_WARNING else "healthy"
        checks.append(_check("displacement_bound", nb, st,
                             f"{nb:.1%} of displacement components near the --max-displacement bound",
                             [NEAR_BOUND_WARNING, NEAR_BOUND_FAILED]))
    dsp, asp = usage["displacement_spread"], usage["amplitude_spread"]
    used = dsp >= UNUSED_DISPLACEMENT or asp >= UNUSED_AMPLITUDE
    checks.append(_check(
        "latent_used", {"displacement_spread": dsp, "amplitude_spread": asp},
        "healthy" if used else "failed" if judge_latent else "warning",
        f"particles' states differ by {dsp:.2f} A RMS in position and {asp:.3f} in amplitude" if used else
        f"the latent is not used: every particle decodes to the same state (spread {dsp:.3f} A, {asp:.4f}); "
        "either training collapsed or the data show no heterogeneity this model can see"
        + ("" if judge_latent else f" (a run of fewer than {MIN_EPOCHS_TO_JUDGE} epochs is not judged on this)"),
        [UNUSED_DISPLACEMENT, UNUSED_AMPLITUDE]))
    checks += motion_checks(usage) if used and judge_latent else []
    checks += arrival_checks(usage) if used and judge_latent else []
    checks += latent_signal.checks(usage, NO_MOTION) if used and judge_latent else []
    low = (intensity or {}).get("low_signal_fraction")
    if low is not None:
        checks.append(_check(
            "low_signal", low, "warning" if low > LOW_SIGNAL_WARNING else "healthy",
            f"{low:.0%} of the particles match the consensus at under half their optics group's intensity scale "
            "(junk without the protein?); 'gaussianem export RUN --low-signal --invert -o FILE' writes the others"
            if low > LOW_SIGNAL_WARNING else f"{low:.1%} of the particles have a low signal", LOW_SIGNAL_WARNING))
    order = {"healthy": 0, "warning": 1, "failed": 2}
    status = max((c["status"] for c in checks), key=order.get)
    bad = [c["message"] for c in checks if c["status"] == status and status != "healthy"]
    summary = "healthy" if status == "healthy" else f"{status}: " + "; ".join(bad)
    if recoveries:
        summary += f" ({len(recoveries)} divergence(s) recovered)"
    return {"status": status, "summary": summary, "checks": checks, "last_epoch": last, "usage": usage,
            "recoveries": recoveries, "intensity": intensity, "split_latent": split}


def motion_checks(usage: dict) -> list:
    """Warnings on where the motion is, for a latent in use (runs from before these numbers
    were measured give none): no particle moves (a latent that carries only composition, or
    lost the motion), or a minority of particles carries it, apart from the rest (junk). A
    continuous tail of particles moved far (a large motion's far end) is no warning."""
    med, out = usage.get("displacement_median"), usage.get("displacement_outliers")
    if med is None or out is None:
        return []
    checks = [_check("motion_found", med, "warning" if med < NO_MOTION else "healthy",
                     f"half of the particles move by less than {med:.2f} A RMS: the conformational latent "
                     "found no motion, or lost it (a data set with only compositional change also looks like "
                     "this)" if med < NO_MOTION else f"the median particle moves by {med:.2f} A RMS", NO_MOTION)]
    cut = usage.get("outlier_threshold", OUTLIER_FLOOR)
    tail, far = usage.get("displacement_tail", out), usage.get("tail_threshold", cut)
    checks.append(_check(
        "motion_outliers", out, "warning" if out > OUTLIER_WARNING else "healthy",
        f"{out:.0%} of the particles move by over {cut:.2f} A RMS, more than {OUTLIER_FACTOR:g} times the median "
        "particle, as a group apart from the rest: the motion sits in a minority (junk particles, or a distinct "
        "state); look at them before trusting the motion ('gaussianem export RUN --outliers -o FILE' writes "
        "them, with --invert the others)" if out > OUTLIER_WARNING else
        f"{tail:.0%} of the particles move by over {far:.2f} A RMS, {OUTLIER_FACTOR:g} times the median particle, "
        "in a continuous tail: the far end of a large motion, not a group apart" if tail > OUTLIER_WARNING else
        f"{out:.1%} of the particles move by over {cut:.2f} A RMS", OUTLIER_WARNING))
    return checks



def arrival_checks(usage: dict) -> list:
    """A warning when the particles at the ends of the motion ask for much more motion than
    the decoder gives: in their images (``usage["arrival"]["asked"]``,
    :func:`gaussianem.train.arrival.measure`) or in 3D (``usage["signal"]["asked_3d"]``,
    :func:`gaussianem.train.latent_signal.measure`, judged only where the latent's ends
    differ reproducibly); none when neither was measured."""
    asked = ((usage or {}).get("arrival") or {}).get("asked")
    sig = (usage or {}).get("signal") or {}
    corr = sig.get("difference_correlation") or {}
    signal = corr.get("conf", corr.get("all"))
    asked_3d = sig.get("asked_3d")
    if signal is None or not math.isfinite(signal) or signal < latent_signal.SIGNAL_WARNING:
        asked_3d = None
    if asked is None and asked_3d is None:
        return []
    worst = max(a for a in (asked, asked_3d) if a is not None)
    said = []
    if asked is not None:
        said.append(f"{asked:.2f} times the decoded motion in their images")
    if asked_3d is not None:
        said.append(f"{asked_3d:.2f} times the decoder's 3D difference between the latent's ends")
    said = " and ".join(said)
    bad = worst > ASKED_WARNING
    return [_check(
        "motion_arrived", worst, "warning" if bad else "healthy",
        f"the particles at the ends of the motion ask for {said}: the maps, the slider and displaced models show "
        "too little of it; for models, 'generate --model M --fit-domains' fits their domains to the images "
        "(docs/validation.md, \"The whole motion\")" if bad else
        f"the particles at the ends of the motion ask for {said}", ASKED_WARNING)]

def diverged_report(last: dict, recoveries: list, intensity_summary: dict, split: bool, failure: str) -> dict:
    """The report of a run that diverged and did not recover."""
    report = final_report(last, {"displacement_spread": float("nan"), "amplitude_spread": float("nan"),
                                 "particles": 0}, recoveries, intensity_summary, split)
    report["status"] = "failed"
    report["summary"] = f"failed: diverged ({failure}); not recovered after {len(recoveries)} restarts"
    return report


def write(run: RunDir, report: dict) -> str:
    write_json(run.health, json.loads(json.dumps(report, default=float)))
    return run.health


def read(run: RunDir) -> dict | None:
    """``RUN/health.json``, or None for runs written before health was recorded."""
    if not os.path.exists(run.health):
        return None
    with open(run.health) as f:
        return json.load(f)
