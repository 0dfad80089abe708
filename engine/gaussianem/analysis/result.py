"""Loading a training result, and everything generated from its latent space.

``load_result(outdir)`` is the one loader the CLI, the analysis and the ChimeraX bundle
use. A :class:`Result` holds the config, the consensus grid, the base Gaussians, the
trained model (eval mode) and the particles' latents, and generates:

* ``gaussians(z)``: deformed Gaussian sets for latents;
* ``volume(z)``: maps on the consensus map's grid (same box, voxel size and origin, so
  they overlay the consensus map exactly in ChimeraX): rendered from the Gaussians
  (``kind="gaussians"``, the default) or ``deformed_volume(z)`` (``kind="deformed"``), the
  consensus map's own density carried by the Gaussians' decoded motions and amplitude
  changes (:mod:`gaussianem.model.warp`);
* ``displace_model(model, z)``: the fitted atomic model moved by the decoded
  displacements;
* ``trajectory(...)``, ``pca()``: latents along principal components or between points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from gaussianem.analysis.vocabulary import LATENT_PARTS, MAP_KINDS
from gaussianem.errors import ResultError
from gaussianem.io.images import ParticleImages
from gaussianem.io.models import AtomicModel, bond_pairs, read_model
from gaussianem.io.mrc import read_map
from gaussianem.io.particles import load_particles
from gaussianem.io.rundir import RunDir
from gaussianem.model import intensity
from gaussianem.model.displace import AtomInterpolator
from gaussianem.model.encoding import Physics, encode_particles
from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.model.warp import ConsensusWarp
from gaussianem.physics.grid import Grid
from gaussianem.physics.render import render_volume
from gaussianem.physics.resample import even_box, fourier_crop_volume
from gaussianem.train.health import read


@dataclass
class PCA:
    mean: np.ndarray           # (zdim,)
    components: np.ndarray     # (k, zdim), unit rows
    explained: np.ndarray      # (k,) variance ratio
    scores: np.ndarray         # (N, k) particle coordinates
    sd: np.ndarray             # (k,) score standard deviations

    def latent(self, pc: int, value: float) -> np.ndarray:
        """Latent at ``value`` standard deviations along principal component ``pc`` (1-based)."""
        return (self.mean + value * self.sd[pc - 1] * self.components[pc - 1]).astype(np.float32)


class Result:
    def __init__(self, outdir: str, device="cpu", checkpoint: str | None = None):
        self.outdir = os.path.abspath(outdir)
        if not os.path.isdir(self.outdir):
            raise ResultError(f"no such result folder: {self.outdir}")
        self.run = RunDir(self.outdir)
        self.config = self.run.read_config()
        self.grid = Grid.from_dict(self.config["grid"])
        self.device = torch.device(device)
        ck = checkpoint or self.run.checkpoint
        if not os.path.exists(ck):
            raise ResultError(f"{self.outdir} has no trained model yet ({os.path.basename(ck)} is missing)")
        state = torch.load(ck, map_location="cpu", weights_only=False)
        self.epoch = int(state["epoch"])
        self.image_std = float(state["image_std"])
        #: intensity scales of the training particles (gaussianem.model.intensity); legacy runs: 1
        self.intensity = intensity.IntensityScale.from_dict(state.get("intensity"),
                                                            int(self.config.get("n_particles", 0)))
        self.base = GaussianSet.load(self.run.gaussians)
        self.model_config = ModelConfig.from_saved(state["model_config"])
        self.model = HeterogeneityModel(self.model_config, self.base)
        self.model.load_state_dict(state["model"])
        self.model.eval().to(self.device)
        with torch.no_grad():
            self._emb = self.model.embed()
        self._pca_cache: dict = {}
        self._consensus = None            # (map, apix, origin), read on first use
        self._warps: dict = {}
        self.z = self.run.latents()["z"] if self.run.finished() else None

    @property
    def health(self) -> dict | None:
        """The run's health report (``health.json``, :mod:`gaussianem.train.health`), or None for
        runs trained before health was recorded."""
        return read(self.run)

    # ------------------------------------------------------------------ latents
    @property
    def zdim(self) -> int:
        return self.model_config.zdim

    def require_z(self) -> np.ndarray:
        """The particles' latents; a :class:`~gaussianem.errors.ResultError` saying that
        training has not finished when there are none."""
        if self.z is None:
            self.run.latents()          # raises the one "training has not finished" error
        return self.z

    @property
    def n_particles(self) -> int:
        return 0 if self.z is None else len(self.z)

    def check_z(self, z) -> np.ndarray:
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        if z.ndim != 2 or z.shape[1] != self.zdim:
            raise ResultError(f"a latent of this result has {self.zdim} values, got {z.shape[-1]}")
        if not np.all(np.isfinite(z)):
            raise ResultError("latent values must be finite numbers")
        return z

    def particle_z(self, index: int) -> np.ndarray:
        self.require_z()
        if not 0 <= int(index) < len(self.z):
            raise ResultError(f"particle index {index} is out of range: this result has "
                              f"{len(self.z)} particles (0 to {len(self.z) - 1})")
        return self.z[int(index)]

    @torch.no_grad()
    def encode(self, indices, particles: str | None = None, datadir: str | None = None) -> np.ndarray:
        """Posterior-mean latents (len(indices), zdim) of particles, by row, of the training
        particle file (default) or of another ``.star``/``.cs`` with poses and CTF (e.g.
        particles held out of training), encoded exactly as training encodes them."""
        images, phys = self.particle_source(particles, datadir)
        idx = torch.as_tensor(np.atleast_1d(indices), dtype=torch.long)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(images)):
            raise ResultError(f"particle indices must lie in 0..{len(images) - 1} for "
                              f"{particles or self.config['train']['particles']}")
        out = [np.zeros((0, self.model_config.zdim), np.float32)]
        for start in range(0, len(idx), 256):            # batched reads, bounded memory
            part = idx[start:start + 256]
            x = images.__getitems__(part.numpy())["image"].to(self.device)
            out.append(encode_particles(self.model, x, part.to(self.device), phys, self.image_std)
                       .float().cpu().numpy())
        return np.concatenate(out)

    def particle_source(self, particles: str | None = None, datadir: str | None = None):
        """(images, physics) of the training particle file (default) or of ``particles``:
        :class:`~gaussianem.io.cache.ParticleImages` and
        :class:`~gaussianem.model.encoding.Physics` with the intensity scales training
        measured (measured afresh for particles not trained on); kept for the next call."""
        train = self.config["train"]
        key = (particles or train["particles"], datadir or (None if particles else train.get("datadir")))
        if getattr(self, "_encode_cache", (None,))[0] != key:
            extra = {} if particles else {k: train.get(k) for k in ("poses", "ctf", "ind")}
            data = load_particles(key[0], datadir=key[1], **extra)
            box = self.model_config.box
            images = ParticleImages(data, box=box, invert=train.get("invert", False))
            phys = Physics(data, box, self.device)
            scales = self.intensity
            if particles is not None and scales.remove_offset:
                # particles not trained on: their own scales, as training would shrink them
                num, den, _, _ = intensity.measure(self.base, images, phys, box, self.image_std, scales.band,
                                                self.device)
                scales = intensity.IntensityScale(**{**scales.__dict__, "shift_correction": None,
                                                      "particle": scales.scale_new(
                                                          num, den, np.asarray(data.optics_group))})
            elif len(scales.particle) != len(data):
                scales = intensity.IntensityScale.legacy(len(data))
            phys.set_intensity(scales)
            self._encode_cache = (key, images, phys)
        return self._encode_cache[1:]

    def _part_slice(self, part: str) -> slice:
        mc = self.model_config
        if part == "all":
            return slice(0, mc.zdim)
        if part not in LATENT_PARTS:
            raise ResultError(f"unknown latent part {part!r}: expected {', '.join(LATENT_PARTS[:-1])} or "
                              f"{LATENT_PARTS[-1]}")
        if not mc.split:
            raise ResultError("this result's latent is not split into conformation and composition "
                              "(train with --zdim-conf/--zdim-comp); use part 'all'")
        return slice(0, mc.zdim_conf) if part == "conf" else slice(mc.zdim_conf, mc.zdim)

    def pca(self, part: str = "all") -> PCA:
        """PCA of the latents (``part``: all of z, or only ``conf`` / ``comp`` of a split
        latent). Components are returned in the full latent space (zeros outside the part),
        so ``pca(part).latent(k, v)`` is a full latent with the other part at its mean."""
        self.require_z()
        if part not in self._pca_cache:
            sl = self._part_slice(part)
            mean = self.z.mean(0)
            x = self.z[:, sl] - mean[sl]
            u, s, vt = np.linalg.svd(x, full_matrices=False)
            var = s ** 2 / max(len(x) - 1, 1)
            comps = np.zeros((len(vt), self.zdim), dtype=np.float64)
            comps[:, sl] = vt
            self._pca_cache[part] = PCA(mean, comps, var / max(var.sum(), 1e-30), x @ vt.T, np.sqrt(var) + 1e-12)
        return self._pca_cache[part]

    def pc_percentiles(self, pc: int = 1, part: str = "all", q=(5.0, 95.0)) -> tuple[float, float]:
        """The particles' ``q`` percentiles (default 5th and 95th, cryoDRGN's trajectory
        range) of their scores along principal component ``pc`` (of ``part``), in sd."""
        p = self.pca(part)
        if not 1 <= int(pc) <= len(p.components):
            raise ResultError(f"principal component {pc} does not exist (1 to {len(p.components)})")
        lo, hi = np.percentile(p.scores[:, int(pc) - 1] / p.sd[int(pc) - 1], q)
        return float(lo), float(hi)

    def medoid_index(self, sample: int = 2000) -> int:
        """The medoid particle: least summed latent distance to the others (a state the
        particles have, unlike the mean); over a fixed random ``sample`` of candidates and
        of others when there are more particles."""
        z = self.require_z().astype(np.float64)
        rng = np.random.default_rng(0)
        idx = np.arange(len(z)) if len(z) <= sample else np.sort(rng.choice(len(z), sample, replace=False))
        x = z[idx]
        sq = (x * x).sum(1)
        cost = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)).sum(1)
        return int(idx[np.argmin(cost)])

    def trajectory(self, pc: int = 1, steps: int = 10, range_sd=None, start=None, end=None,
                   part: str = "all") -> np.ndarray:
        """Latents (steps, zdim): along principal component ``pc`` (of ``part``) from
        ``range_sd[0]`` to ``range_sd[1]`` standard deviations (default: the particles' 5th
        to 95th percentiles, :meth:`pc_percentiles`), or on the straight line from ``start``
        to ``end``."""
        if steps < 2:
            raise ResultError("a trajectory needs at least 2 steps")
        t = np.linspace(0, 1, steps, dtype=np.float32)[:, None]
        if start is not None or end is not None:
            a, b = self.check_z(start)[0], self.check_z(end)[0]
            return a + t * (b - a)
        p = self.pca(part)
        if not 1 <= pc <= len(p.components):
            raise ResultError(f"principal component {pc} does not exist (1 to {len(p.components)})")
        if range_sd is None:
            range_sd = self.pc_percentiles(pc, part)
        vals = range_sd[0] + t[:, 0] * (range_sd[1] - range_sd[0])
        return np.stack([p.latent(pc, v) for v in vals])

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def decode(self, z) -> dict:
        z = torch.from_numpy(self.check_z(z)).to(self.device)
        return self.model.decode(z, self._emb)

    def gaussians(self, z) -> list[GaussianSet]:
        """Deformed Gaussian sets (engine frame), one per latent row."""
        out = self.decode(z)
        return [GaussianSet(out["centres"][i].cpu(), out["amplitudes"][i].cpu(), out["widths"][i].cpu())
                for i in range(out["centres"].shape[0])]

    @torch.no_grad()
    def volume(self, z, box: int | None = None, apix: float | None = None, kind: str = "gaussians") -> np.ndarray:
        """Map(s) (z, y, x) float32 on the consensus grid (or ``box``/``apix`` about the same
        centre). One latent -> (D, D, D); several -> (B, D, D, D). ``kind``: rendered from
        the Gaussians (default) or the deformed consensus map (:meth:`deformed_volume`)."""
        if kind not in MAP_KINDS:
            raise ResultError(f"unknown map kind {kind!r}: expected one of {', '.join(MAP_KINDS)}")
        if kind == "deformed":
            return self.deformed_volume(z, box, apix)
        z = self.check_z(z)
        box = box or self.grid.box
        apix = apix or self.grid.apix * self.grid.box / box
        out = self.decode(z)
        vols = [render_volume(out["centres"][i], out["amplitudes"][i], out["widths"][i], box, apix)
                .cpu().numpy() for i in range(len(z))]
        return vols[0] if len(vols) == 1 else np.stack(vols)

    # ------------------------------------------------------------------ deformed consensus
    @property
    def consensus_path(self) -> str | None:
        """The consensus map the run was trained on (config ``train.consensus``)."""
        return self.config.get("train", {}).get("consensus")

    def has_consensus_map(self) -> bool:
        p = self.consensus_path
        return bool(p) and os.path.isfile(p)

    def consensus_map(self) -> tuple:
        """The run's consensus map file, read once: ``(map (z, y, x), apix, origin_xyz)``; a
        :class:`~gaussianem.errors.ResultError` when it is gone or is not the trained one."""
        if self._consensus is None:
            p = self.consensus_path
            if not self.has_consensus_map():
                raise ResultError(f"a deformed map needs the run's consensus map, {p or '(not recorded)'}, "
                                  "which no longer exists: put it back there, or use maps rendered from "
                                  "the Gaussians (--map gaussians)")
            vol, apix, origin = read_map(p)
            g = self.grid
            if vol.shape != (g.box,) * 3 or abs(apix - g.apix) > 1e-3 * g.apix:
                raise ResultError(f"{p} ({'x'.join(map(str, vol.shape))} voxels of {apix:.4g} A) is not the "
                                  f"consensus map this run was trained on ({g.box}^3 of {g.apix:.4g} A)")
            self._consensus = (vol, apix, origin)
        return self._consensus

    def _warp(self, out_apix: float) -> ConsensusWarp:
        """The consensus map's warp, the map Fourier-cropped first when maps are asked for
        at a coarser pixel size (no aliasing from trilinear sampling)."""
        vol, apix, _ = self.consensus_map()
        box = self.grid.box
        if out_apix > 1.01 * apix:
            box = min(box, even_box(box * apix, out_apix))
        if box not in self._warps:
            cropped = fourier_crop_volume(vol, box) if box < self.grid.box else vol
            b = self.base
            self._warps[box] = ConsensusWarp(cropped, apix * self.grid.box / box, b.centres, b.amplitudes,
                                             b.widths, device=self.device)
        return self._warps[box]

    @torch.no_grad()
    def deformed_volume(self, z, box: int | None = None, apix: float | None = None) -> np.ndarray:
        """The consensus map deformed to latent(s) ``z`` (:mod:`gaussianem.model.warp`: its
        density carried by the Gaussians' decoded motions, scaled by their amplitude
        changes), on the consensus grid or ``box``/``apix`` about the same centre, in the
        consensus map's units. One latent -> (D, D, D); several -> (B, D, D, D)."""
        z = self.check_z(z)
        grid = self.output_grid(box, apix)
        warp = self._warp(grid.apix)
        out = self.decode(z)
        vols = warp(out["displacement"], out["amp_factor"], grid.box, grid.apix).cpu().numpy()
        return vols[0] if len(vols) == 1 else vols

    def consensus_volume(self, box: int | None = None) -> np.ndarray:
        box = box or self.grid.box
        return self.base.volume(box, self.grid.apix * self.grid.box / box).numpy()

    def output_grid(self, box: int | None = None, apix: float | None = None) -> Grid:
        """The consensus grid, or ``box`` voxels of ``apix`` about its centre (see Grid.scaled)."""
        if not box and apix is None:
            return self.grid
        return self.grid.scaled(int(box) if box else self.grid.box, apix)

    def interpolator(self, atoms_xyz_physical, name="the atomic model", bonds=None, reference=None,
                     residues=None):
        """Atoms (physical frame) following the Gaussians; ``bonds`` (E, 2) keep their
        lengths (:class:`~gaussianem.model.displace.AtomInterpolator`). ``reference``: the
        latent the atoms stand for (:func:`gaussianem.analysis.reference.model_latent`):
        they follow the Gaussians of that state, and a displacement moves them relative to
        it; None: the consensus Gaussians. ``residues``: the atoms' chain ids and residue
        places (an :class:`~gaussianem.io.models.AtomicModel`'s ``sequence``): each atom
        follows the Gaussians of its own stretch of chain only."""
        offset = None
        if reference is not None:
            with torch.no_grad():
                offset = self.decode(self.check_z(reference)[:1])["displacement"][0].double().numpy()
        return AtomInterpolator(self.grid.to_engine(atoms_xyz_physical), self.base.centres.numpy(), name=name,
                                bonds=bonds, offset=offset, residues=residues)

    def displace_model(self, model, z, interpolator=None, reference=None):
        """The atomic model (path or :class:`~gaussianem.io.models.AtomicModel`, physical
        frame of the consensus map) moved to latent ``z``; one latent -> one model, several
        -> a list. ``reference``: the latent the model stands for
        (:func:`gaussianem.analysis.reference.model_latent`); displacements are then taken
        relative to it, the atoms following the Gaussians of that state (an ``interpolator``
        given should be built with the same ``reference``). None: relative to the consensus
        Gaussians. Bond lengths are kept
        (:meth:`~gaussianem.model.displace.AtomInterpolator.keep_bonds`)."""
        m = model if isinstance(model, AtomicModel) else read_model(model)
        interp = interpolator or self.interpolator(m.coords, name=m.path or "the atomic model", bonds=bond_pairs(m),
                                                   reference=reference, residues=m.sequence)
        disp = self.atom_displacements(interp, z, reference)
        models = [m.with_coords(interp.keep_bonds(m.coords + d)) for d in disp]
        return models[0] if len(models) == 1 else models

    @torch.no_grad()
    def atom_displacements(self, interpolator, z, reference=None) -> np.ndarray:
        """(B, M, 3) float64 displacements of ``interpolator``'s atoms at latents ``z``,
        relative to ``reference``: an interpolator built with it (its ``offset``) gives
        them so already; one built on the consensus Gaussians has the reference's own
        displacement taken off."""
        disp = interpolator(self.decode(z)["displacement"]).double().numpy()
        if reference is not None and interpolator.offset is None:
            disp = disp - interpolator(self.decode(reference)["displacement"]).double().numpy()
        return disp

    def default_model_path(self) -> str | None:
        p = self.config.get("train", {}).get("model")
        return p if p and os.path.exists(p) else None


def load_result(path, device="cpu", checkpoint: str | None = None) -> Result:
    """Load a training output folder (see :class:`Result`)."""
    return Result(path, device=device, checkpoint=checkpoint)
