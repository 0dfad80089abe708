"""Deformable reconstruction: the selected particles' images backprojected into one state.

Each particle's latent decodes to its Gaussians' motions; :class:`~gaussianem.model.field.
DeformationField` turns them into a deformation of the consensus frame, ``x -> x + u_i(x)``.
The map of a chosen state ``s`` (a latent: the selection's mean by default) is built by
backprojecting every image along rays bent by the particle's deformation relative to that
state: the voxel at ``y`` of the state's frame comes from the consensus point
``x = D_s^{-1}(y)`` and is read in particle ``i``'s image where ``D_i(x) = x + u_i(x)``
projects (DynaMight's deformable backprojection; :mod:`gaussianem.physics.backproject`
for the CTF weighting and the Wiener filter). A plain (rigid) backprojection of the same
particles is made beside it, on the same grid, for comparison.

Gold standard: the particles fall into two halves (the star file's ``rlnRandomSubset``
when every selected particle has 1 or 2 there, else at random, seeded), each
reconstructed on its own; the halves' FSC (inside a soft mask around the consensus
Gaussians, corrected for the mask by phase randomisation as RELION's postprocess, and
unmasked) gives the resolution at FSC = 0.143; the masked FSC sets the Wiener filter of
the final map of both halves (RELION's ``tau^2`` from ``2 FSC / (1 + FSC)``).

Particles are streamed in batches (memory bounded by the map, not by their number) with
the training's loader; everything runs on the result's device.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from gaussianem.analysis.plots import plot_fsc
from gaussianem.analysis.result import Result
from gaussianem.analysis.selection import source_particles
from gaussianem.errors import ResultError
from gaussianem.io.atomic import write_array_text, write_json
from gaussianem.io.cache import PlainReadImages
from gaussianem.io.images import loader_workers, make_loader
from gaussianem.io.mrc import write_map
from gaussianem.model.encoding import Physics
from gaussianem.model.field import DeformationField
from gaussianem.model.intensity import IntensityScale
from gaussianem.physics import backproject as bp
from gaussianem.physics.fsc import corrected_masked_fsc, fsc, resolution_at, soft_mask
from gaussianem.physics.grid import Grid
from gaussianem.physics.resample import fourier_pad_volume
from gaussianem.progress import Progress

MIN_PER_HALF = 5
POINTS_PER_BATCH = 1 << 22          # particles x voxels sampled at once on a CPU (x8 on a GPU)
KINDS = ("deformed", "rigid")
OVERSAMPLE = 2                   # images read on a twice finer grid (physics.backproject.prepare_images)


@dataclass
class Reconstruction:
    """Maps (z, y, x) on ``grid`` and their gold-standard FSCs, per kind (deformed, rigid)."""
    grid: Grid
    maps: dict                    # kind -> full map (both halves, Wiener-filtered)
    halves: dict                  # kind -> (half 1, half 2)
    mask: np.ndarray              # the soft mask of the masked FSC
    freqs: np.ndarray             # 1/Angstrom, shells 1 .. box // 2
    curves: dict                  # "deformed", "deformed unmasked", "rigid", "rigid unmasked" -> FSC
    state: np.ndarray             # the latent of the state reconstructed into
    n_half: tuple                 # particles in each half
    split: str                    # "rlnRandomSubset" or "random"
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def n_particles(self) -> int:
        return int(sum(self.n_half))

    def resolution(self, curve: str = "deformed", threshold: float = 0.143) -> float:
        return resolution_at(self.freqs, self.curves[curve], threshold)

    @property
    def no_signal(self) -> bool:
        """The half maps agree (masked FSC >= 0.143) in no more than the lowest 2 shells:
        the map holds no signal (too few particles, or poses and latents that do not fit)."""
        return not bool((np.asarray(self.curves["deformed"])[2:] >= 0.143).any())

    def on_grid(self, grid: Grid) -> "Reconstruction":
        """The maps, halves and mask Fourier-padded to the finer ``grid`` (same centre and
        extent: the consensus grid of a run trained at a smaller box), nothing added above
        the reconstruction's Nyquist; the FSC curves stay those measured. Itself when the
        boxes agree or ``grid``'s is odd."""
        if grid.box <= self.grid.box or grid.box % 2:
            return self
        pad = lambda v: fourier_pad_volume(v, grid.box)      # noqa: E731
        return replace(self, grid=grid, maps={k: pad(v) for k, v in self.maps.items()},
                       halves={k: tuple(pad(h) for h in v) for k, v in self.halves.items()},
                       mask=np.clip(pad(self.mask), 0.0, 1.0),
                       info={**self.info, "reconstructed_box": self.grid.box, "reconstructed_apix": self.grid.apix})

    def summary(self) -> dict:
        return {"status": "no signal" if self.no_signal else "ok", "particles": self.n_particles, "half_sizes": list(map(int, self.n_half)), "split": self.split,
                "box": self.grid.box, "apix": self.grid.apix, "state": [float(v) for v in self.state],
                "seconds": round(self.seconds, 2),
                "particles_per_s": round(self.n_particles / max(self.seconds, 1e-9), 2),
                "resolution_0.143": {c: round(self.resolution(c), 3) for c in self.curves},
                **self.info}


def half_split(data, indices: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """Half (0 or 1) of each selected particle: rlnRandomSubset when the selection has it
    (1 or 2 for every particle, both present), else a seeded random half each."""
    table = data.table
    if table is not None and "rlnRandomSubset" in table.columns:
        s = np.asarray(table["rlnRandomSubset"].to_numpy())[indices]
        if np.isin(s, (1, 2)).all() and len(np.unique(s)) == 2:
            return (s == 2).astype(np.int64), "rlnRandomSubset"
    half = np.zeros(len(indices), np.int64)
    half[np.random.default_rng(seed).permutation(len(indices))[len(indices) // 2:]] = 1
    return half, "random"


def fsc_mask(result: Result, grid: Grid, extra: float = 3.0) -> np.ndarray:
    """A soft mask around the consensus Gaussians, each ``extra`` Angstrom wider
    (:func:`gaussianem.physics.fsc.soft_mask`)."""
    b = result.base
    return soft_mask(b.centres, torch.sqrt(b.widths ** 2 + extra ** 2), grid)


def reconstruct(result: Result, indices, state=None, box: int | None = None, seed: int = 0,
                progress: Progress | None = None, batch: int | None = None) -> Reconstruction:
    """Deformable and rigid reconstructions of particles ``indices`` (0-based rows of the
    training particle file) into the state of latent ``state`` (default: their mean), at
    ``box`` pixels (default the training box; at most the particles' box)."""
    t0 = time.perf_counter()
    progress = progress or Progress("none")
    z_all = result.require_z()
    idx = np.unique(np.asarray(indices, dtype=np.int64).reshape(-1))
    if len(idx) and (idx[0] < 0 or idx[-1] >= len(z_all)):
        raise ResultError(f"particle indices must lie in 0..{len(z_all) - 1}")
    data = source_particles(result)
    invert = bool(result.config["train"].get("invert", False))
    half, split = half_split(data, idx, seed)
    n_half = (int((half == 0).sum()), int((half == 1).sum()))
    if min(n_half) < MIN_PER_HALF:
        raise ResultError(f"{len(idx)} particles are too few for two half maps (halves of {n_half[0]} and "
                          f"{n_half[1]}; at least {MIN_PER_HALF} each): select more particles")
    state = result.check_z(z_all[idx].mean(0) if state is None else state)[0]
    box = int(box or result.model_config.box)
    if box % 2 or box < 8 or box > data.box:
        raise ResultError(f"reconstruction box {box}: expected an even size from 8 to the particles' {data.box}")
    dev = result.device
    grid = result.output_grid(box)
    images = PlainReadImages(data, box=box, invert=invert)     # memory flat in the particles read
    phys = Physics(data, box, dev)
    if len(result.intensity.particle) == len(data):
        phys.set_intensity(result.intensity)
    else:
        phys.set_intensity(IntensityScale.legacy(len(data)))

    X = bp.voxel_points(box, grid.apix, dev)
    b = result.base
    deform = DeformationField(b.centres, b.amplitudes, b.widths, box, grid.apix, device=dev)
    inside = torch.nonzero(deform.support(X)).reshape(-1)        # where motions reach; beyond: rigid
    x0 = deform.inverse(deform(result.decode(state)["displacement"]), X[inside])   # consensus points
    P = len(X)
    acc = {("rigid", h): torch.zeros(1, P, device=dev) for h in (0, 1)}
    acc.update({("deformed", h): torch.zeros(1, len(inside), device=dev) for h in (0, 1)})
    psf = {h: torch.zeros(1, P, device=dev) for h in (0, 1)}
    budget = POINTS_PER_BATCH * (8 if dev.type == "cuda" else 1)
    batch = int(batch or max(1, min(256, budget // P)))        # P: the rigid pass samples every voxel
    batches = [idx[i:i + batch].tolist() for i in range(0, len(idx), batch)]
    half_of = dict(zip(idx.tolist(), half.tolist()))
    loader = make_loader(images, batch, False, num_workers=loader_workers(dev), device=dev,
                         batch_sampler=batches)
    progress.event("start", task="reconstruct", particles=len(idx), box=box, batches=len(batches))
    done, report = 0, max(1, len(batches) // 10)
    for step, raw in enumerate(loader, 1):
        i = raw["index"].to(dev)
        x = raw["image"].to(dev, non_blocking=True) / result.image_std
        ch = bp.prepare_images(x, phys.ctf[i], phys.apix[i], phys.shift[i], phys.scale[i])
        moved = x0 + deform.sample(deform(result.decode(result.z[i.cpu().numpy()])["displacement"]), x0)
        h = torch.tensor([half_of[int(v)] for v in i.cpu()], device=dev)
        for hv in (0, 1):
            sel = h == hv
            if not bool(sel.any()):
                continue
            two = torch.cat([acc["rigid", hv], psf[hv]])
            bp.backproject(ch[sel], phys.rot[i][sel], phys.apix[i][sel] / OVERSAMPLE, X, two)
            acc["rigid", hv], psf[hv] = two[:1], two[1:]
            bp.backproject(ch[sel][:, :1], phys.rot[i][sel], phys.apix[i][sel] / OVERSAMPLE, moved[sel], acc["deformed", hv])
        done += len(i)
        if step % report == 0 or step == len(batches):
            progress.event("message", text=f"backprojected {done} of {len(idx)} particles",
                           particles=done, total=len(idx),
                           particles_per_s=round(done / max(time.perf_counter() - t0, 1e-9), 1))

    for h in (0, 1):                     # the solvent beyond the motions' reach: as the rigid map
        full = acc["rigid", h].clone()
        full[:, inside] = acc["deformed", h]
        acc["deformed", h] = full
    mask = fsc_mask(result, grid)
    weights = {h: bp.weights(psf[h].reshape(box, box, box)) for h in (0, 1)}
    maps, halves, curves = {}, {}, {}
    freqs = None
    for kind in KINDS:
        num = {h: acc[kind, h].reshape(box, box, box) for h in (0, 1)}
        f_vals = None
        for _ in range(2):                  # a first FSC with a plain regulariser, then tau^2 from it
            hv = [bp.wiener(num[h], weights[h], bp.shell_regulariser(weights[h], f_vals)).numpy() for h in (0, 1)]
            freqs, f_vals = fsc(hv[0], hv[1], grid.apix, mask=mask)
        halves[kind] = tuple(hv)
        curves[f"{kind} unmasked"] = fsc(hv[0], hv[1], grid.apix)[1]
        curves[kind] = corrected_masked_fsc(hv[0], hv[1], mask, grid.apix, seed=seed, masked=f_vals,
                                            unmasked=curves[f"{kind} unmasked"])[1]
        full = np.clip(2 * f_vals / (1 + f_vals), 0, None)
        w = weights[0] + weights[1]
        maps[kind] = bp.wiener(num[0] + num[1], w, bp.shell_regulariser(w, full)).numpy()
    seconds = time.perf_counter() - t0
    rec = Reconstruction(grid, maps, halves, mask, freqs, curves, state, n_half, split, seconds,
                         info={"device": str(dev), "batch": batch, "control_points": deform.control,
                               "deformed_voxels": round(len(inside) / P, 4)})
    progress.event("done", task="reconstruct", particles=len(idx), seconds=round(seconds, 1),
                   resolution=round(rec.resolution(), 2), rigid_resolution=round(rec.resolution("rigid"), 2))
    return rec


def output_paths(path: str) -> dict:
    """The files :func:`write_reconstruction` writes for ``map.mrc``: the map, the map
    times the FSC's soft mask and that mask, its halves, the rigid map and its halves, and
    the FSC as text, plot and summary."""
    stem = path[:-4] if path.lower().endswith(".mrc") else path
    return {"map": stem + ".mrc", "masked": stem + "_masked.mrc", "mask": stem + "_mask.mrc",
            "half1": stem + "_half1.mrc", "half2": stem + "_half2.mrc",
            "rigid": stem + "_rigid.mrc", "rigid_half1": stem + "_rigid_half1.mrc",
            "rigid_half2": stem + "_rigid_half2.mrc", "fsc_txt": stem + "_fsc.txt",
            "fsc_png": stem + "_fsc.png", "summary": stem + "_fsc.json"}


def write_reconstruction(rec: Reconstruction, path: str, selection: str = "") -> dict:
    """Write the maps (on the consensus map's frame: they overlay it), the FSC table
    (shell, 1/A, A, each curve), its plot and a JSON summary; returns the paths."""
    out = output_paths(path)
    os.makedirs(os.path.dirname(os.path.abspath(out["map"])), exist_ok=True)
    g = rec.grid
    for key, vol in (("map", rec.maps["deformed"]), ("masked", rec.maps["deformed"] * rec.mask),
                     ("mask", rec.mask), ("half1", rec.halves["deformed"][0]),
                     ("half2", rec.halves["deformed"][1]), ("rigid", rec.maps["rigid"]),
                     ("rigid_half1", rec.halves["rigid"][0]), ("rigid_half2", rec.halves["rigid"][1])):
        write_map(out[key], vol, g.apix, g.origin)
    names = list(rec.curves)
    table = np.column_stack([np.arange(1, len(rec.freqs) + 1), rec.freqs, 1 / rec.freqs]
                            + [rec.curves[n] for n in names])
    write_array_text(out["fsc_txt"], table, fmt="%.6g",
                     header="shell  1/A  A  " + "  ".join(n.replace(" ", "_") for n in names))
    res = {n: rec.resolution(n) for n in ("deformed", "rigid")}
    plot_fsc(rec.freqs, rec.curves, out["fsc_png"],
             title=f"{rec.n_particles} particles: deformed {res['deformed']:.2f} A, rigid {res['rigid']:.2f} A "
                   "(masked FSC = 0.143)")
    write_json(out["summary"], {**rec.summary(), "selection": selection, "files": out})
    return out
