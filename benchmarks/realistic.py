"""Realistic simulated data sets from real atomic structures (the robustness matrix's data).

Structures come from the PyPI package MDAnalysisTests (pinned 2.11.0, installed by
``benchmarks/setup_robustness.sh``; files under ``MDAnalysisTests/data/``, found without
importing the package, whose ``__init__`` needs MDAnalysis). A structure is named by its
file name there (``1a28.pdb.gz``) or given as a path. The adenylate kinase files (any name
with ``adk``: ``adk_open.pdb``, the DIMS ``adk.psf``/``adk_dims.dcd``...) are reserved for
independent evaluation and refused.

Motions (``RealisticSpec.motion``):

* ``mode``: one elastic-network normal mode. An anisotropic network model (ANM) on the CA
  atoms (springs of equal stiffness between CAs closer than ``anm_cutoff``, 15 A), built and
  diagonalised here with numpy/scipy (about 40 lines; ProDy is not used). Modes 0, 1, ...
  are the softest non-trivial ones (the six zero modes of rigid-body motion are skipped,
  and the modes are orthogonal to them). Each atom follows its residue's CA (residues
  without a CA follow the nearest CA). The all-atom displacement field is normalised to an
  RMS of 1 A, and a particle at motion coordinate ``t`` in [0, 1] has the atoms at
  ``x0 + (t - 0.5) * rmsd_range * v``: the unmoved model is the middle of the motion and the
  RMSD between the two ends (all atoms, no superposition) is ``rmsd_range`` (4 A default).
* ``hinge``: a rigid rotation of one part (``hinge``, e.g. ``A:200-250``; default
  ``gaussianem.sim.geometry.default_hinge``: the first chain's C-terminal third) about an axis
  at the interface, angle ``(t - 0.5) * hinge_angle`` (``structure.hinge_rotation``).
* ``two_modes``: modes ``modes[0]`` and ``modes[1]`` at once, each particle with two
  independent coordinates ``t1`` (``motion``) and ``t2`` (``motion2``), each mode spanning
  ``rmsd_range``.

Composition: the ``absent`` selection (``"auto"``: the last chain, or the N-terminal 15% of
a one-chain model, as ``structure.default_removal``; ``"C"``; ``"A:10-60"``; ``None``: no
compositional change) is missing from a fraction ``absent_fraction`` of the particles.

Images: atoms to density with ``gaussianem.sim.geometry.model_density`` (electrons/A^3,
resolution ``2 * apix`` unless given), projected by Fourier slice
(``gaussianem.physics.fourier_slice.project_volume``, independent of the training renderer; the
PyPI torch-fourier-slice is not used) with
the TRUE pose, origin and CTF, multiplied by the particle's scale; white noise of
variance ``signal_var / snr`` (signal_var: the mean over good particles of the variance of
their scaled clean image over the box; ``snr=None`` or 0: no noise); then the whole stack
is put in arbitrary detector units, ``image = image_scale * (signal + noise) +
image_offset`` (37.5 and 1200 by default, so the images are NOT normalised).

Realism knobs: per-particle scale (``scale_jitter`` 0.2 with ``scale_dist`` uniform:
U(0.8, 1.2); normal: N(1, 0.2) clipped at 0.2); pose errors in the star file
(``pose_error_deg``: the star's rotation is the true one turned by a random rotation whose
RMS angle is that many degrees; ``shift_error_px``: the star's origin is off by a 2D
Gaussian vector whose RMS length is that many pixels); defocus errors (``defocus_error``:
the star's dU and dV are the true ones plus one U(-e, +e) offset per particle); junk
(``junk_fraction`` of the particles: ``junk_kind="noise"`` pure noise images, or
``"protein"`` images of another structure ``junk_structure``, with the same CTF, scale,
noise and units); an envelope (``envelope_b``, A^2, applied to the images and not written
to the star, as real data's unmodelled decay).

Written to ``outdir`` (what the engine's evaluation reads, as ``gaussianem.sim.simulate``):

* ``particles.star`` (RELION 3.1, ``gaussianem.io.relion_write.write_star``; the NOISY poses and
  defoci when errors are asked for) + ``particles.mrcs``;
* ``consensus.mrc``: the particle-weighted average of the good (non-junk) particles' volumes,
  times ``consensus_scale`` (0.05: its own arbitrary units);
* ``model.pdb``: the unmoved, complete model in the consensus map's frame;
* ``truth/state_KK.mrc``: true volumes (all parts present; the second motion, if any, at
  its middle) at the ``eval_motion`` levels, in electrons/A^3;
* ``ground_truth.npz``: per particle ``motion`` (t in [0, 1] of the first motion),
  ``motion2`` (two motions only), ``present`` (bool), ``junk`` (bool), ``scale``,
  ``rotations`` / ``shifts`` (the TRUE poses, RELION matrices and origins in A),
  ``star_rotations`` / ``star_shifts`` (what the star holds), ``defocus_u/v/angle`` (true),
  ``star_defocus_u/v``, ``pose_error_deg``; and ``eval_motion``, ``snr``, ``noise_sd``
  (before the unit change), ``signal_var``, ``image_scale``, ``image_offset``,
  ``consensus_scale``, ``rmsd_range`` (end to end, measured), ``has_composition``,
  ``motion_kind``. JUNK ROWS: ``present`` is False (so the engine's per-conformation FSC,
  which takes present particles near each level, never uses them) and ``motion``/``motion2``
  hold a random level that means nothing: score motion and presence on ``~junk`` rows only.
* ``spec.json``: the spec, the structure's path and extent, mode eigenvalues, timings.

The motion coordinate is sampled on ``states`` levels (``states2`` per axis for two
motions); each (level, present) group's volume is built once and its particles projected
together.

  .venv/bin/python benchmarks/realistic.py -o sim --structure 1a28.pdb.gz -n 3000 --snr 0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (os.path.join(ROOT, "engine"), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

# structures and motions live in their own modules; their names are re-exported here, as
# benchmarks and tests import them from realistic
from realistic_structures import (  # noqa: E402,F401
    DATA_PACKAGE, DATA_PACKAGE_VERSION, RESERVED, data_dir, load_structure, parse_selection, rmsd, structure_path)
from realistic_motion import (  # noqa: E402,F401
    Motion, anm_hessian, anm_modes, ca_indices, hinge_geometry, mode_fields, rigid_body_basis)


@dataclass
class RealisticSpec:
    structure: str = "1a28.pdb.gz"
    n: int = 3000
    box: int = 64
    apix: float = 2.0
    snr: float | None = 0.1           # signal var / noise var; None or 0: no noise
    seed: int = 0
    # motion
    motion: str = "mode"              # mode | hinge | two_modes | two_hinges
    modes: tuple = (0, 1)             # softest non-trivial ANM modes used (0-based)
    rmsd_range: float = 4.0           # A, end-to-end RMSD of each mode's motion
    anm_cutoff: float = 15.0          # A
    hinge: str | None = None          # moving part, CHAIN or CHAIN:FIRST-LAST (default: automatic)
    hinge_angle: float = 30.0         # degrees, full range
    hinge2: str | None = None         # two_hinges: the second moving part (default: the last chain)
    hinge2_angle: float = 20.0        # degrees, full range of the second part (both follow t together)
    hinge_stagger: float = 0.0        # two_hinges: 0 both parts turn over all of t; s: the first over
                                      # [0, 1 - s], the second over [s, 1] (one closes before the other)
    states: int = 32                  # motion levels (one motion)
    states2: int = 8                  # levels per axis (two motions)
    eval_bins: int = 5
    # composition
    absent: str | None = "auto"       # part missing in some particles; None: no composition
    absent_fraction: float = 0.3
    # density, CTF, units
    resolution: float | None = None   # of the density; default 2 * apix
    shift_sd: float = 2.0             # px, spread of the true origins
    defocus: tuple = (8000.0, 25000.0)
    astigmatism: float = 500.0
    envelope_b: float = 0.0           # A^2, in the images only
    image_scale: float = 37.5
    image_offset: float = 1200.0
    consensus_scale: float = 0.05
    # per-particle realism
    scale_jitter: float = 0.0         # 0.2: +-20%
    scale_dist: str = "uniform"       # uniform | normal
    pose_error_deg: float = 0.0       # RMS angle of the star's rotation error
    shift_error_px: float = 0.0       # RMS length of the star's origin error
    defocus_error: float = 0.0        # A, star defocus = true + U(-e, e)
    junk_fraction: float = 0.0
    junk_kind: str = "noise"          # noise | protein
    junk_structure: str = "19hc.pdb.gz"

    def check(self):
        if not 0 <= self.hinge_stagger < 1:
            raise ValueError(f"hinge_stagger must lie in [0, 1), got {self.hinge_stagger}")
        if self.motion not in ("mode", "hinge", "two_modes", "two_hinges"):
            raise ValueError(f"motion must be mode, hinge, two_modes or two_hinges, got {self.motion!r}")
        if self.junk_kind not in ("noise", "protein"):
            raise ValueError(f"junk_kind must be noise or protein, got {self.junk_kind!r}")
        if self.scale_dist not in ("uniform", "normal"):
            raise ValueError(f"scale_dist must be uniform or normal, got {self.scale_dist!r}")
        if not 0 <= self.absent_fraction < 1 or not 0 <= self.junk_fraction < 1:
            raise ValueError("absent_fraction and junk_fraction must lie in [0, 1)")
        if self.n < 2 or self.box < 8 or self.box % 2:
            raise ValueError("n >= 2 and an even box >= 8 are needed")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ----------------------------------------------------------------------------- simulation

def _euler_exact(rot):
    """Rotation matrices as the star file will hold them (RELION Euler round trip)."""
    from gaussianem.physics import poses
    e = poses.matrix_to_euler(rot)
    return poses.euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])


def _project(vol, rot, shifts, apix, ctf_t):
    import torch
    from gaussianem.physics import fourier_slice
    v = torch.from_numpy(np.ascontiguousarray(vol, np.float32))
    spec = fourier_slice.volume_spectrum(v)
    return fourier_slice.project_volume(v, torch.from_numpy(rot).float(), torch.from_numpy(shifts).float(),
                                        apix, ctf_params=ctf_t, spec=spec).numpy()


@torch.no_grad()          # (a decorator: the caller's grad mode is left as it was)
def simulate(spec: RealisticSpec, outdir: str, progress=None) -> dict:
    """Write a realistic data set to ``outdir`` (see the module docstring); returns a summary."""
    import torch
    from gaussianem.physics import poses
    from gaussianem.physics.ctf import CTFParams
    from gaussianem.io.particle_data import ParticleData
    from gaussianem.io.mrc import write_map, write_stack
    from gaussianem.io.relion_write import write_star
    from gaussianem.sim.geometry import default_removal, model_density
    from gaussianem.io.models import write_model

    spec.check()
    t_start = time.time()
    model = load_structure(spec.structure)
    model = model.with_coords(model.coords - model.coords.mean(0))
    extent = float(np.abs(model.coords).max() * 2)
    if extent > spec.box * spec.apix * 0.95:
        raise ValueError(f"{spec.structure} spans {extent:.0f} A but the box is {spec.box} x {spec.apix} = "
                         f"{spec.box * spec.apix:.0f} A: raise box or apix")
    motion = Motion(model, spec)
    has_comp = spec.absent is not None and spec.absent_fraction > 0
    removal = np.zeros(len(model), bool)
    if has_comp:
        removal = default_removal(model) if spec.absent == "auto" else parse_selection(model, spec.absent)
    weights = model.atomic_numbers().astype(np.float64)

    rng = np.random.default_rng(spec.seed)
    n, b = spec.n, spec.box
    n1 = spec.states2 if motion.two else spec.states
    n2 = spec.states2 if motion.two else 1
    lev1 = rng.integers(0, n1, n)
    lev2 = rng.integers(0, n2, n)
    t1 = lev1 / max(n1 - 1, 1)
    t2 = lev2 / max(n2 - 1, 1) if motion.two else np.full(n, 0.5)
    junk = rng.random(n) < spec.junk_fraction
    present = (rng.random(n) >= spec.absent_fraction) if has_comp else np.ones(n, bool)
    present &= ~junk
    if spec.scale_jitter > 0 and spec.scale_dist == "uniform":
        scale = rng.uniform(1 - spec.scale_jitter, 1 + spec.scale_jitter, n)
    elif spec.scale_jitter > 0:
        scale = np.clip(rng.normal(1, spec.scale_jitter, n), 0.2, None)
    else:
        scale = np.ones(n)
    rot = _euler_exact(poses.random_rotations(n, rng))
    shifts = np.round(rng.normal(0, spec.shift_sd, (n, 2)) * spec.apix, 3)
    ctf = CTFParams.random(n, rng, spec.defocus, spec.astigmatism)
    # what the star holds
    err_vec = rng.normal(0, np.deg2rad(spec.pose_error_deg) / np.sqrt(3), (n, 3))
    star_rot = _euler_exact(poses.rotvec_to_matrix(err_vec) @ rot) if spec.pose_error_deg > 0 else rot.copy()
    pose_err = np.rad2deg(np.arccos(np.clip((np.einsum("nij,nij->n", star_rot, rot) - 1) / 2, -1, 1)))
    star_shifts = np.round(shifts + rng.normal(0, spec.shift_error_px / np.sqrt(2), (n, 2)) * spec.apix, 3) \
        if spec.shift_error_px > 0 else shifts.copy()
    dd = np.round(rng.uniform(-spec.defocus_error, spec.defocus_error, n), 2) if spec.defocus_error > 0 else np.zeros(n)
    star_ctf = ctf.subset(np.arange(n))
    star_ctf.defocus_u = np.round(ctf.defocus_u + dd, 2)
    star_ctf.defocus_v = np.round(ctf.defocus_v + dd, 2)
    img_ctf = ctf.subset(np.arange(n))
    img_ctf.bfactor = np.full(n, float(spec.envelope_b))
    ctf_t = img_ctf.as_tensor()

    def volume(l1, l2, pres):
        xyz = motion.coords(l1 / max(n1 - 1, 1), l2 / max(n2 - 1, 1) if motion.two else 0.5)
        keep = np.ones(len(xyz), bool) if pres else ~removal
        return model_density(xyz[keep], b, spec.apix, spec.resolution, weights=weights[keep])

    clean = np.zeros((n, b, b), np.float32)
    consensus = np.zeros((b, b, b), np.float64)
    good = ~junk
    keys = sorted({(int(a), int(c), bool(p)) for a, c, p in zip(lev1[good], lev2[good], present[good])})
    t_proj = time.time()
    for gi, (l1, l2, pres) in enumerate(keys):
        sel = np.flatnonzero(good & (lev1 == l1) & (lev2 == l2) & (present == pres))
        v = volume(l1, l2, pres)
        consensus += v * len(sel)
        clean[sel] = _project(v, rot[sel], shifts[sel], spec.apix, ctf_t[sel])
        if progress is not None:
            progress(gi + 1, len(keys))
    junk_info = {}
    if junk.any() and spec.junk_kind == "protein":
        other = load_structure(spec.junk_structure)
        oxyz = other.coords - other.coords.mean(0)
        v = model_density(oxyz, b, spec.apix, spec.resolution, weights=other.atomic_numbers())
        sel = np.flatnonzero(junk)
        clean[sel] = _project(v, rot[sel], shifts[sel], spec.apix, ctf_t[sel])
        junk_info = {"junk_structure_path": structure_path(spec.junk_structure),
                     "junk_extent_A": float(np.abs(oxyz).max() * 2)}
    t_proj = time.time() - t_proj
    clean *= scale[:, None, None].astype(np.float32)
    signal_var = float(clean[good].var(axis=(1, 2)).mean())
    noise_sd = float(np.sqrt(signal_var / spec.snr)) if spec.snr else 0.0
    images = clean
    if noise_sd > 0:
        for s in range(0, n, 1024):                 # in place, bounded memory
            images[s:s + 1024] += rng.standard_normal((min(1024, n - s), b, b), dtype=np.float32) * noise_sd
    images *= np.float32(spec.image_scale)
    images += np.float32(spec.image_offset)
    consensus *= spec.consensus_scale / max(int(good.sum()), 1)

    os.makedirs(os.path.join(outdir, "truth"), exist_ok=True)
    write_stack(os.path.join(outdir, "particles.mrcs"), images, spec.apix)
    del images, clean
    write_map(os.path.join(outdir, "consensus.mrc"), consensus.astype(np.float32), spec.apix)
    stack = os.path.abspath(os.path.join(outdir, "particles.mrcs"))
    data = ParticleData(image_paths=np.array([stack] * n, dtype=object), image_indices=np.arange(n, dtype=np.int64),
                        rotations=star_rot, shifts=star_shifts, ctf=star_ctf, apix=np.full(n, spec.apix), box=b,
                        optics_group=np.ones(n, np.int64), source=os.path.join(outdir, "particles.star"))
    write_star(os.path.join(outdir, "particles.star"), data,
               image_names=[f"{i + 1:06d}@particles.mrcs" for i in range(n)])
    eval_levels = np.linspace(0, n1 - 1, spec.eval_bins).round().astype(int)
    mid2 = (n2 - 1) // 2 if motion.two else 0
    for k, lv in enumerate(eval_levels):
        write_map(os.path.join(outdir, "truth", f"state_{k:02d}.mrc"), volume(lv, mid2, True), spec.apix)
    write_model(os.path.join(outdir, "model.pdb"), model.with_coords(model.coords + (b // 2) * spec.apix))
    rmsd_end = rmsd(motion.coords(0.0, 0.5), motion.coords(1.0, 0.5))
    arrays = dict(
        motion=t1.astype(np.float32), present=present, junk=junk, scale=scale.astype(np.float32),
        rotations=rot.astype(np.float32), shifts=shifts.astype(np.float32),
        star_rotations=star_rot.astype(np.float32), star_shifts=star_shifts.astype(np.float32),
        pose_error_deg=pose_err.astype(np.float32),
        defocus_u=ctf.defocus_u, defocus_v=ctf.defocus_v, defocus_angle=ctf.defocus_angle,
        star_defocus_u=star_ctf.defocus_u, star_defocus_v=star_ctf.defocus_v,
        eval_motion=(eval_levels / max(n1 - 1, 1)).astype(np.float32),
        snr=float(spec.snr or 0.0), noise_sd=noise_sd, signal_var=signal_var,
        image_scale=spec.image_scale, image_offset=spec.image_offset, consensus_scale=spec.consensus_scale,
        rmsd_range=rmsd_end, has_composition=has_comp, motion_kind=spec.motion)
    if motion.two:
        arrays["motion2"] = t2.astype(np.float32)
        arrays["rmsd_range2"] = rmsd(motion.coords(0.5, 0.0), motion.coords(0.5, 1.0))
    if spec.motion in ("hinge", "two_hinges"):
        arrays["angle"] = ((motion.phases(t1)[0] - 0.5) * spec.hinge_angle).astype(np.float32)
    tmp = os.path.join(outdir, ".ground_truth.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(outdir, "ground_truth.npz"))
    summary = {"outdir": os.path.abspath(outdir), "spec": spec.to_dict(),
               "structure_path": structure_path(spec.structure), "atoms": len(model),
               "residues": model.n_residues(), "chains": model.chains(), "extent_A": extent,
               "absent_atoms": int(removal.sum()), "absent_mass_fraction": float(weights[removal].sum() / weights.sum()),
               "mode_eigenvalues": motion.eigenvalues, "rmsd_end_to_end_A": rmsd_end,
               "volumes_projected": len(keys), "present_fraction_good": float(present[good].mean()),
               "junk": int(junk.sum()), "signal_var": signal_var, "noise_sd": noise_sd,
               "project_s": t_proj, "seconds": time.time() - t_start, **junk_info}
    if motion.two:
        summary["rmsd2_end_to_end_A"] = float(arrays["rmsd_range2"])
    tmp = os.path.join(outdir, ".spec.tmp.json")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(outdir, "spec.json"))
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--outdir", required=True)
    for f in dataclasses.fields(RealisticSpec):
        flag = "--" + f.name.replace("_", "-")
        flags = ("-n", flag) if f.name == "n" else (flag,)
        default = f.default
        if isinstance(default, tuple):
            p.add_argument(*flags, type=float, nargs="+", default=None)
        elif isinstance(default, bool):
            p.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None)
        else:
            typ = {int: int, float: float}.get(type(default), str)
            if f.name == "snr":
                typ = float
            p.add_argument(*flags, type=typ, default=None)
    a = p.parse_args(argv)
    kw = {}
    for f in dataclasses.fields(RealisticSpec):
        v = getattr(a, f.name)
        if v is None:
            continue
        if isinstance(f.default, tuple):
            v = tuple(int(x) if f.name == "modes" else x for x in v)
        if f.name == "absent" and v.lower() == "none":
            v = None
        kw[f.name] = v
    out = simulate(RealisticSpec(**kw), a.outdir)
    print(json.dumps({k: out[k] for k in ("outdir", "atoms", "extent_A", "rmsd_end_to_end_A",
                                          "absent_mass_fraction", "junk", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
