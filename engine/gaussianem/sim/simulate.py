"""Simulated heterogeneous datasets with known ground truth.

From an atomic model (or a map), each particle gets a conformation on a continuous
motion (a rigid-body hinge rotation of a selection about an axis, the motion coordinate
``t`` in [0, 1] mapping to an angle in [-angle/2, +angle/2] so that the unmoved model is
the average conformation) and a composition (a selection absent in a fraction of the
particles); random uniform orientations, Gaussian-distributed origins, per-particle CTF
and white noise at a given SNR (signal variance / noise variance over the box).

Images are made by projecting voxel volumes through the Fourier-slice projector
(:mod:`gaussianem.physics.fourier_slice`), not by the Gaussian renderer that training uses, so a
training run on these data tests the model rather than its own forward model. The motion
coordinate is sampled on ``states`` levels (default 40); each level's volume is built
once and all of its particles are projected together.

Written to ``outdir``: ``particles.star`` (RELION 3.1) + ``particles.mrcs``,
``consensus.mrc`` (the particle-weighted average density), ``model.pdb`` (the unmoved
model, in the consensus map's frame), ``ground_truth.npz`` (``motion``, ``angle``,
``present``, ``rotations``, ``shifts``, ``defocus_u``... per particle) and
``truth/state_KK.mrc``: true volumes at ``eval_bins`` motion levels with all parts
present, for per-conformation FSC.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from gaussianem.errors import InputError
from gaussianem.io.atomic import atomic_output
from gaussianem.io.models import read_model, write_model
from gaussianem.io.mrc import write_map, write_stack
from gaussianem.io.mrc import read_map
from gaussianem.io.particle_data import ParticleData
from gaussianem.io.relion_write import write_star
from gaussianem.physics import fourier_slice, poses
from gaussianem.physics.ctf import CTFParams
from gaussianem.sim.geometry import default_hinge, default_removal
from gaussianem.sim.geometry import hinge_rotation, model_density
from gaussianem.sim.geometry import rotation_matrix


@dataclass
class SimulationSpec:
    n: int = 1000
    box: int = 64
    apix: float = 2.0
    snr: float = 0.1
    seed: int = 0
    hinge_angle: float = 30.0          # degrees, full range of the motion
    absent_fraction: float = 0.3       # fraction of particles without the removed part
    states: int = 40                   # motion levels
    eval_bins: int = 5
    shift_sd: float = 2.0              # pixels
    defocus: tuple = (8000.0, 25000.0)  # Angstrom, range of the mean defocus
    astigmatism: float = 500.0         # Angstrom, max |dU - dV|
    resolution: float | None = None    # of the simulated density; default 2 * apix
    hinge_chain: str | None = None     # selection of the moving part (default: automatic)
    hinge_residues: tuple | None = None
    remove_chain: str | None = None    # selection of the removed part (default: automatic)
    remove_residues: tuple | None = None


def parse_selection(text: str | None):
    """'A' -> ('A', None); 'A:20-80' -> ('A', (20, 80)); None -> (None, None)."""
    if not text:
        return None, None
    chain, _, rng = text.partition(":")
    if not rng:
        return chain, None
    try:
        a, b = (int(v) for v in rng.split("-"))
    except ValueError:
        raise InputError(f"bad selection {text!r}: expected CHAIN or CHAIN:FIRST-LAST, e.g. A:120-180")
    return chain, (a, b)


def _selections(model, spec: SimulationSpec):
    mask, point, axis = default_hinge(model)
    if spec.hinge_chain:
        mask = model.select(chain=spec.hinge_chain, residues=spec.hinge_residues)
        if not mask.any():
            raise InputError(f"the hinge selection {spec.hinge_chain}:{spec.hinge_residues} matches no atoms")
        rest = model.coords[~mask].mean(0)
        moving = model.coords[mask].mean(0)
        # axis through the moving part's atom nearest the rest, perpendicular to the arm
        d = np.linalg.norm(model.coords[mask] - rest, axis=1)
        point = model.coords[mask][np.argmin(d)]
        v = moving - rest
        axis = np.cross(v, np.eye(3)[np.argmin(np.abs(v))])
        axis /= np.linalg.norm(axis)
    removal = default_removal(model)
    if spec.remove_chain:
        removal = model.select(chain=spec.remove_chain, residues=spec.remove_residues)
        if not removal.any():
            raise InputError(f"the removal selection {spec.remove_chain}:{spec.remove_residues} matches no atoms")
    return mask, point, axis, removal


def simulate_from_model(model_path: str, outdir: str, spec: SimulationSpec, progress=None) -> dict:
    model = read_model(model_path)
    centre = model.coords.mean(0)
    model = model.with_coords(model.coords - centre)         # engine frame: centred
    extent = np.abs(model.coords).max() * 2
    if extent > spec.box * spec.apix * 0.95:
        raise InputError(f"the model {model_path} spans {extent:.0f} A but the box is only "
                         f"{spec.box} x {spec.apix} = {spec.box * spec.apix:.0f} A: raise --box or --apix")
    mask, point, axis, removal = _selections(model, spec)
    angles = (np.linspace(0, 1, spec.states) - 0.5) * spec.hinge_angle

    def volume(angle, present):
        xyz = hinge_rotation(model.coords, mask, point, axis, angle)
        keep = np.ones(len(xyz), bool) if present else ~removal
        return model_density(xyz[keep], spec.box, spec.apix, spec.resolution,
                             weights=model.atomic_numbers()[keep])

    os.makedirs(outdir, exist_ok=True)
    out = _simulate(volume, angles, outdir, spec, progress)
    # the unmoved, complete model in the consensus map's frame (map origin 0)
    write_model(os.path.join(outdir, "model.pdb"),
                model.with_coords(model.coords + (spec.box // 2) * spec.apix))
    return out


def simulate_from_map(map_path: str, outdir: str, spec: SimulationSpec, progress=None) -> dict:
    """Heterogeneity on a map: the densest-side third of the map (along its longest
    principal axis) hinges about the perpendicular axis through the boundary, and a 15%
    slab at the opposite end is removed."""
    from scipy.ndimage import affine_transform, zoom
    vol, apix, _ = read_map(map_path)
    if vol.shape[0] != spec.box or abs(apix - spec.apix) > 1e-3:
        vol = zoom(vol, (apix / spec.apix), order=1)
        vol = _fit_box(vol, spec.box)
    b = spec.box
    thr = vol.mean() + 2 * vol.std()
    zyx = np.argwhere(vol > thr).astype(np.float64)
    xyz = (zyx[:, ::-1] - b // 2) * spec.apix
    w = vol[vol > thr]
    c = (xyz * w[:, None]).sum(0) / w.sum()
    u, s, vt = np.linalg.svd((xyz - c) * np.sqrt(w[:, None]), full_matrices=False)
    long_axis = vt[0]
    proj = (xyz - c) @ long_axis
    cut = np.quantile(proj, 2 / 3)
    rem_cut = np.quantile(proj, 0.15)
    grid = (np.indices((b, b, b)).reshape(3, -1)[::-1].T - b // 2) * spec.apix   # x y z
    gproj = (grid - c) @ long_axis
    moving = (gproj > cut).reshape(b, b, b)
    removed = (gproj < rem_cut).reshape(b, b, b)
    point = c + cut * long_axis
    axis = np.cross(long_axis, np.eye(3)[np.argmin(np.abs(long_axis))])
    axis /= np.linalg.norm(axis)
    angles = (np.linspace(0, 1, spec.states) - 0.5) * spec.hinge_angle

    def volume(angle, present):
        R = rotation_matrix(axis, angle)
        # rotate the moving density: output voxel x samples input at R^T (x - p) + p
        Rz = R.T[::-1, ::-1]                                   # in z y x index order
        p_idx = (point / spec.apix + b // 2)[::-1]
        offset = p_idx - Rz @ p_idx
        moved = affine_transform(vol * moving, Rz, offset=offset, order=1)
        v = vol * ~moving + moved
        return (v * ~removed if not present else v).astype(np.float32)

    os.makedirs(outdir, exist_ok=True)
    return _simulate(volume, angles, outdir, spec, progress)


def _fit_box(vol, box):
    out = np.zeros((box,) * 3, np.float32)
    n = vol.shape[0]
    if n >= box:
        s = (n - box) // 2
        return vol[s:s + box, s:s + box, s:s + box].astype(np.float32)
    s = (box - n) // 2
    out[s:s + n, s:s + n, s:s + n] = vol
    return out


def _simulate(volume, angles, outdir: str, spec: SimulationSpec, progress) -> dict:
    rng = np.random.default_rng(spec.seed)
    n, b = spec.n, spec.box
    level = rng.integers(0, len(angles), n)
    motion = level / max(len(angles) - 1, 1)
    present = rng.random(n) >= spec.absent_fraction
    rot = poses.random_rotations(n, rng)
    eul = poses.matrix_to_euler(rot)
    rot = poses.euler_to_matrix(eul[:, 0], eul[:, 1], eul[:, 2])    # exactly what the star holds
    shifts = np.round(rng.normal(0, spec.shift_sd, (n, 2)) * spec.apix, 3)
    ctf = CTFParams.random(n, rng, spec.defocus, spec.astigmatism)
    clean = np.zeros((n, b, b), np.float32)
    consensus = np.zeros((b, b, b), np.float64)
    ctf_t = ctf.as_tensor()
    groups = [(lv, pr) for lv in range(len(angles)) for pr in (True, False)]
    for gi, (lv, pr) in enumerate(groups):
        sel = np.flatnonzero((level == lv) & (present == pr))
        if len(sel) == 0:
            continue
        v = volume(angles[lv], pr)
        consensus += v * len(sel)
        imgs = fourier_slice.project_volume(torch.from_numpy(v), torch.from_numpy(rot[sel]).float(),
                                            torch.from_numpy(shifts[sel]).float(), spec.apix,
                                            ctf_params=ctf_t[sel])
        clean[sel] = imgs.numpy()
        if progress is not None:
            progress(gi + 1, len(groups))
    signal_var = float(clean.var(axis=(1, 2)).mean())
    noise_sd = np.sqrt(signal_var / spec.snr) if spec.snr > 0 else 0.0
    images = clean + rng.normal(0, 1, clean.shape).astype(np.float32) * noise_sd
    images /= images.std()
    consensus /= n
    write_stack(os.path.join(outdir, "particles.mrcs"), images, spec.apix)
    write_map(os.path.join(outdir, "consensus.mrc"), consensus.astype(np.float32), spec.apix)
    stack = os.path.abspath(os.path.join(outdir, "particles.mrcs"))
    data = ParticleData(image_paths=np.array([stack] * n, dtype=object),
                        image_indices=np.arange(n, dtype=np.int64), rotations=rot, shifts=shifts,
                        ctf=ctf, apix=np.full(n, spec.apix), box=b, optics_group=np.ones(n, np.int64),
                        source=os.path.join(outdir, "particles.star"))
    write_star(os.path.join(outdir, "particles.star"), data,
               image_names=[f"{i + 1:06d}@particles.mrcs" for i in range(n)])
    os.makedirs(os.path.join(outdir, "truth"), exist_ok=True)
    eval_levels = np.linspace(0, len(angles) - 1, spec.eval_bins).round().astype(int)
    for k, lv in enumerate(eval_levels):
        write_map(os.path.join(outdir, "truth", f"state_{k:02d}.mrc"), volume(angles[lv], True), spec.apix)
    with atomic_output(os.path.join(outdir, "ground_truth.npz")) as tmp, open(tmp, "wb") as f:
        np.savez(f, motion=motion.astype(np.float32), angle=angles[level].astype(np.float32),
                 present=present, rotations=rot.astype(np.float32), shifts=shifts.astype(np.float32),
                 defocus_u=ctf.defocus_u, defocus_v=ctf.defocus_v, defocus_angle=ctf.defocus_angle,
                 eval_motion=(eval_levels / max(len(angles) - 1, 1)).astype(np.float32),
                 snr=spec.snr, noise_sd=noise_sd, hinge_angle=spec.hinge_angle)
    return {"outdir": os.path.abspath(outdir), "n": n, "box": b, "apix": spec.apix,
            "present_fraction": float(present.mean()), "signal_var": signal_var}
