"""The live GaussianEM result of a ChimeraX session: its map, its atomic model, its state.

``open_result(session, path)`` loads a training output folder with the engine's one
loader (``gaussianem.analysis.result.load_result``) and shows it: a Volume on the consensus map's
grid (box, voxel size and origin of the consensus map, so it overlays that map), and the
fitted atomic model. The returned :class:`GaussianEMResult` is the session's current
result, which the ``gaussianem`` commands and the Latent Explorer act on, and the
scripting interface::

    from chimerax.gaussianem import open_result
    r = open_result(session, "/data/run1")
    r.show(particle=12)              # the map and model of particle 12's latent
    r.show(pc=(1, 2.0))              # 2 sd along the first principal component
    r.trajectory(pc=1, steps=10)     # a map series and a multi-frame model
    r.markers(color_by="displacement")
    r.subset(cluster=0, k=4, save="/data/run1/cluster0.star")

Moving to a latent changes the models in place: the Volume's data is replaced (its
surface levels, colours and style stay as the user set them) and the atomic model's
coordinates are set to its coordinates at opening plus the displacements interpolated
from the Gaussians (the interpolation weights are computed once per model).

Numerics all come from the engine; this module only turns its arrays into ChimeraX
models. Errors the user can fix raise ``chimerax.core.errors.UserError``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from chimerax.core.errors import UserError

from gaussianem.errors import GaussianEMError

DEFAULT_K = 8            # k-means clusters when none are given (as `gaussianem analyze`)
_CACHE_SIZE = 8          # generated states kept, so the tool's commands reuse its work
COLOR_BY = ("displacement", "amplitude")


@dataclass
class Generated:
    """One latent's map and decoded Gaussians (engine frame), as numpy arrays."""

    z: np.ndarray               # (zdim,) float32
    volume: np.ndarray          # (D, D, D) zyx float32 on the consensus grid
    displacement: np.ndarray    # (N, 3) Angstrom
    amp_factor: np.ndarray      # (N,)
    centres: np.ndarray         # (N, 3) engine frame
    widths: np.ndarray          # (N,) Angstrom
    atom_displacement: np.ndarray | None = None   # (M, 3) for the interpolator below
    interpolator: object = None


def latent_key(z) -> bytes:
    return np.ascontiguousarray(np.asarray(z, dtype=np.float32).reshape(-1)).tobytes()


def format_latent(z) -> str:
    """``a,b,c`` with enough digits that parsing gives back the same float32 values."""
    return ",".join(f"{float(v):.9g}" for v in np.asarray(z, dtype=np.float32).reshape(-1))


def user_errors(function):
    """The one place where the engine's errors become ChimeraX UserErrors (a one-line
    message in the log, no traceback): wraps every command and the tool's entry points."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kw):
        try:
            return function(*args, **kw)
        except GaussianEMError as e:
            raise UserError(str(e)) from None
    return wrapper


class GaussianEMResult:
    """A trained GaussianEM model shown in a ChimeraX session (see the module docstring).

    Attributes: ``result`` (the engine's Result), ``volume`` (the Volume that shows the
    current state), ``structure`` (the atomic model moved with it, or None), ``z`` (the
    current latent, or None while the consensus Gaussians are shown), ``marker_set``.
    """

    def __init__(self, session, result, name: str | None = None):
        self.session = session
        self.result = result
        self.name = name or f"GaussianEM {os.path.basename(result.outdir.rstrip(os.sep))}"
        self.volume = None
        self.structure = None
        self.marker_set = None
        self.marker_color_by = "displacement"
        self.z = None
        self.k = max(1, min(DEFAULT_K, result.n_particles or DEFAULT_K))
        self._base_coords = None          # atoms in the map's frame at the consensus
        self._interpolator = None
        self._to_model = None
        self._cache: OrderedDict[bytes, Generated] = OrderedDict()
        self._lock = threading.Lock()     # generation may run on the tool's worker thread
        self._kmeans = {}

    # ------------------------------------------------------------------ properties
    @property
    def outdir(self) -> str:
        return self.result.outdir

    @property
    def grid(self):
        return self.result.grid

    @property
    def split(self) -> tuple[int, int] | None:
        """(conformational, compositional) latent sizes when the latent is split."""
        mc = self.result.model_config
        return (mc.zdim_conf, mc.zdim_comp) if mc.split else None

    def pca(self):
        return self.result.pca()

    def kmeans(self, k: int | None = None):
        """K-means of the latents (the engine's, reusing ``analysis/kmeansK/``)."""
        from gaussianem.analysis.clusters import kmeans_for_result
        k = int(k or self.k)
        if k not in self._kmeans:
            self._kmeans[k] = kmeans_for_result(self.result, k)
        return self._kmeans[k]

    def umap(self) -> np.ndarray | None:
        """The UMAP embedding written by ``gaussianem analyze``, if there is a current one."""
        path = os.path.join(self.outdir, "analysis", "embeddings.npz")
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as f:
                emb = f["umap"] if "umap" in f.files else None
        except (OSError, ValueError):
            return None
        if emb is None or self.result.z is None or emb.shape != (len(self.result.z), 2):
            return None
        return emb

    # ------------------------------------------------------------------ models
    def _grid_data(self, array_zyx, name: str):
        from chimerax.map_data import ArrayGridData
        g = self.grid
        return ArrayGridData(np.ascontiguousarray(array_zyx, dtype=np.float32),
                             origin=tuple(float(v) for v in g.origin),
                             step=(g.apix, g.apix, g.apix), name=name)

    def _new_volume(self, array_zyx, name: str, add: bool = True):
        from chimerax.map import volume_from_grid_data
        _watch_closed_volumes(self.session)
        return volume_from_grid_data(self._grid_data(array_zyx, name), self.session,
                                     open_model=add, show_dialog=False)

    def _volume_alive(self) -> bool:
        return self.volume is not None and not self.volume.deleted

    def show_consensus(self):
        """Show the consensus (base) Gaussians' map; creates the Volume if needed."""
        vol = self.result.consensus_volume()
        self._set_volume_data(vol)
        self.z = None
        return self.volume

    def _set_volume_data(self, array_zyx) -> None:
        if self._volume_alive():
            self.volume.replace_data(self._grid_data(array_zyx, self.volume.data.name))
        else:
            self.volume = self._new_volume(array_zyx, self.name)

    def attach_structure(self, structure) -> None:
        """Move ``structure`` (an AtomicStructure fitted into the consensus map) with the
        latent from now on; its present coordinates are the consensus state. A model
        placed by moving it (e.g. ``fitmap``) is used where it is shown, relative to the map."""
        coords = np.array(structure.atoms.coords, dtype=np.float64)
        to_model = None                                  # map frame -> model coordinates
        if self._volume_alive():
            t = structure.scene_position.inverse() * self.volume.scene_position
            if not t.is_identity(tolerance=1e-6):
                to_model = t
        base = coords if to_model is None else to_model.inverse().transform_points(coords)
        interp = self.result.interpolator(base, name=f"model #{structure.id_string}")
        self.structure, self._base_coords, self._interpolator = structure, base, interp
        self._to_model = to_model

    def _model_coords(self, xyz_map: np.ndarray) -> np.ndarray:
        """Map-frame coordinates (..., 3) -> the structure's own coordinates."""
        if self._to_model is None:
            return xyz_map
        shape = xyz_map.shape
        return self._to_model.transform_points(xyz_map.reshape(-1, 3)).reshape(shape)

    def _structure_alive(self) -> bool:
        if self.structure is not None and self.structure.deleted:
            self.structure = self._base_coords = self._interpolator = None
        return self.structure is not None

    # ------------------------------------------------------------------ latents
    def latent(self, z=None, particle=None, pc=None, cluster=None, k=None, part="all") -> np.ndarray:
        """The latent named by exactly one of: ``z`` (values), ``particle`` (index),
        ``pc`` ((component, value in sd)), ``cluster`` (k-means centre, k clusters); with
        none of them, the mean latent of the particles."""
        given = [n for n, v in (("z", z), ("particle", particle), ("pc", pc), ("cluster", cluster))
                 if v is not None]
        if len(given) > 1:
            raise UserError(f"give only one of z, particle, pc and cluster (got {' and '.join(given)})")
        r = self.result
        if z is not None:
            return r.check_z(z)[0]
        if particle is not None:
            return np.asarray(r.particle_z(int(particle)), dtype=np.float32)
        if pc is not None:
            comp, value = pc
            p = r.pca(part)          # part: all of z, or conf / comp of a split latent
            if not 1 <= int(comp) <= len(p.components):
                raise UserError(f"principal component {comp} does not exist: this result has "
                                f"{len(p.components)} (1 to {len(p.components)})")
            return p.latent(int(comp), float(value))
        if cluster is not None:
            km = self.kmeans(k)
            if not 0 <= int(cluster) < km.k:
                raise UserError(f"cluster {cluster} does not exist: k-means with k={km.k} has "
                                f"clusters 0 to {km.k - 1}")
            return km.centres[int(cluster)].astype(np.float32)
        return r.pca().mean.astype(np.float32)

    # ------------------------------------------------------------------ generation
    def generate(self, z) -> Generated:
        """The map, Gaussians and atom displacements of latent ``z`` (thread-safe, so the
        tool runs it on its worker thread; the last few are cached)."""
        z = self.result.check_z(z)[0]
        key = latent_key(z)
        interp = self._interpolator
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.interpolator is interp:
                self._cache.move_to_end(key)
                return hit
            out = self.result.decode(z)
            vol = self.result.volume(z)
            disp = out["displacement"][0].cpu().numpy()
            gen = Generated(z=z, volume=vol, displacement=disp,
                            amp_factor=out["amp_factor"][0].cpu().numpy(),
                            centres=out["centres"][0].cpu().numpy(),
                            widths=out["widths"][0].cpu().numpy(),
                            atom_displacement=None if interp is None else _displace(interp, disp),
                            interpolator=interp)
            self._cache[key] = gen
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return gen

    def apply(self, gen: Generated) -> None:
        """Show a generated state: replace the map's data, move the model and markers."""
        self._set_volume_data(gen.volume)
        if self._structure_alive():
            d = gen.atom_displacement
            if d is None or gen.interpolator is not self._interpolator:
                d = _displace(self._interpolator, gen.displacement)
            self.structure.atoms.coords = self._model_coords(self._base_coords + d)
        if self.marker_set is not None and not self.marker_set.deleted:
            self._update_markers(gen, self.marker_color_by)
        self.z = gen.z

    def show(self, z=None, particle=None, pc=None, cluster=None, k=None, part="all") -> np.ndarray:
        """Move the map (and model) to a latent (see :meth:`latent`); returns the latent."""
        zz = self.latent(z=z, particle=particle, pc=pc, cluster=cluster, k=k, part=part)
        gen = self.generate(zz)
        self.apply(gen)
        return gen.z

    # ------------------------------------------------------------------ trajectory
    def trajectory(self, pc: int = 1, steps: int = 10, range_sd=(-2.0, 2.0), part: str = "all"):
        """Maps along principal component ``pc`` as a map series (``vseries play``) and,
        with an atomic model, a copy of it with one coordinate set per step
        (``coordset``). Returns (map series, structure copy or None)."""
        from chimerax.map_series import MapSeries
        zs = self.result.trajectory(pc=int(pc), steps=int(steps), range_sd=tuple(range_sd), part=part)
        values = np.linspace(range_sd[0], range_sd[1], int(steps))
        level = None
        if self._volume_alive() and self.volume.surfaces:
            level = self.volume.surfaces[0].level
        gens = [self.generate(zi) for zi in zs]
        maps = []
        for gen, v in zip(gens, values):
            m = self._new_volume(gen.volume, f"PC{pc} {v:+.2f} sd", add=False)
            if level is not None:
                m.set_parameters(surface_levels=[level])
            maps.append(m)
        series = MapSeries(f"{self.name} PC {pc} trajectory", maps, self.session)
        self.session.models.add([series])
        copy = None
        if self._structure_alive():
            if all(g.interpolator is self._interpolator and g.atom_displacement is not None for g in gens):
                disp = np.stack([g.atom_displacement for g in gens])
            else:
                disp = _displace(self._interpolator, np.stack([g.displacement for g in gens]))
            xyz = self._model_coords(self._base_coords[None] + disp)
            copy = self.structure.copy(name=f"{self.structure.name} PC {pc} trajectory")
            copy.add_coordsets(np.ascontiguousarray(xyz, dtype=np.float64), replace=True)
            copy.active_coordset_id = 1
            self.session.models.add([copy])
        return series, copy

    # ------------------------------------------------------------------ markers
    def markers(self, color_by: str = "displacement", z=None, particle=None):
        """The Gaussians' centres (physical frame) as a marker set, radius = width,
        coloured blue (low) to red (high) by displacement length or amplitude change
        (log2 of the amplitude factor; white = unchanged). At the latent given, else the
        current state (the consensus Gaussians while no latent has been shown). The marker
        set follows later ``show`` commands."""
        if color_by not in COLOR_BY:
            raise UserError(f"colorBy must be one of {', '.join(COLOR_BY)}, not {color_by!r}")
        if z is not None or particle is not None:
            gen = self.generate(self.latent(z=z, particle=particle))
        elif self.z is not None:
            gen = self.generate(self.z)
        else:
            base = self.result.base
            n = len(base)
            gen = Generated(z=None, volume=None, displacement=np.zeros((n, 3), np.float32),
                            amp_factor=np.ones(n, np.float32), centres=base.centres.numpy(),
                            widths=base.widths.numpy())
        self.marker_color_by = color_by
        if self.marker_set is None or self.marker_set.deleted \
                or self.marker_set.num_atoms != len(gen.centres):
            from chimerax.markers import MarkerSet
            ms = MarkerSet(self.session, name=f"{self.name} Gaussians")
            for i in range(len(gen.centres)):
                ms.create_marker((0.0, 0.0, 0.0), (180, 180, 180, 255), 1.0, id=i + 1)
            if self._volume_alive():
                ms.position = self.volume.scene_position      # the map's frame
            self.session.models.add([ms])
            self.marker_set = ms
        return self._update_markers(gen, color_by)

    def _update_markers(self, gen: Generated, color_by: str):
        atoms = self.marker_set.atoms
        atoms.coords = self.grid.to_physical(gen.centres)
        atoms.radii = np.asarray(gen.widths, dtype=np.float32)
        if color_by == "displacement":
            values = np.linalg.norm(gen.displacement, axis=1)
            t = values / max(float(values.max(initial=0.0)), 1e-6)
        else:
            values = np.log2(np.maximum(np.asarray(gen.amp_factor, dtype=np.float64), 1e-6))
            t = 0.5 + 0.5 * values / max(float(np.abs(values).max(initial=0.0)), 1e-6)
        atoms.colors = blue_white_red(t)
        self.marker_range = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
        return self.marker_set

    # ------------------------------------------------------------------ subsets
    def subset_indices(self, cluster=None, k=None, particles=None, pc_range=None, part="all") -> tuple:
        """(sorted particle indices, description) for exactly one selection
        (:func:`gaussianem.analysis.selection.select_particles`)."""
        from gaussianem.analysis.selection import select_particles
        km = self.kmeans(k) if cluster is not None else None
        sel = select_particles(self.result, clusters=cluster, kmeans=km, particles=particles, pc_range=pc_range,
                               part=part)
        return np.asarray(sel.indices, dtype=np.int64), sel.what

    def subset(self, save, cluster=None, k=None, particles=None, pc_range=None) -> dict:
        """Write a particle subset to ``save`` (.star or .cs) with the original rows."""
        from gaussianem.analysis.selection import export_subset
        idx, what = self.subset_indices(cluster=cluster, k=k, particles=particles, pc_range=pc_range)
        if idx.size == 0:
            raise UserError(f"no particles in {what}: nothing saved")
        out = export_subset(self.result, idx, save)
        out["what"] = what
        return out


def _displace(interpolator, displacement) -> np.ndarray:
    """Atom displacements (float64) for Gaussian displacements (N, 3) or (B, N, 3)."""
    import torch
    d = interpolator(torch.from_numpy(np.asarray(displacement, dtype=np.float32)))
    return d.numpy().astype(np.float64)


def blue_white_red(t) -> np.ndarray:
    """RGBA uint8 colours for values in [0, 1]: blue, white at 0.5, red."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)[:, None]
    blue, white, red = np.array([0, 0, 255.0]), np.array([255.0, 255, 255]), np.array([255.0, 0, 0])
    rgb = np.where(t < 0.5, blue + (white - blue) * (2 * t), white + (red - white) * (2 * t - 1))
    rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255.0)], axis=1)
    return np.round(rgba).astype(np.uint8)


def _watch_closed_volumes(session) -> None:
    """Work around a ChimeraX 1.7 bug: closed maps that were hidden (as in a map series)
    stay queued in the session's volume update manager, and a later map whose first
    surface is computed inside that update's loop makes it fail (KeyError) on every
    frame from then on, so no map surface is computed again. Closed models are removed
    from the queue as they are closed. (The manager is ChimeraX's own; its two sets are
    touched only with ``discard``.)"""
    if getattr(session, "_gaussianem_close_handler", None) is not None:
        return

    def forget(_trigger, models):
        vm = getattr(session, "_volume_update_manager", None)
        queues = [getattr(vm, a, None) for a in ("_volumes_to_update", "_displayed_volumes_to_update")]
        for m in models:
            for q in queues:
                if isinstance(q, set):
                    q.discard(m)

    session._gaussianem_close_handler = session.triggers.add_handler("remove models", forget)


# ---------------------------------------------------------------------------- the session's

def current_result(session) -> GaussianEMResult | None:
    """The session's current result (the last one opened), or None."""
    return getattr(session, "_gaussianem_result", None)


def require_result(session) -> GaussianEMResult:
    r = current_result(session)
    if r is None:
        raise UserError("no GaussianEM result is open: use 'gaussianem open OUTDIR' first")
    return r


def open_result(session, path, model=None, device: str = "cpu") -> GaussianEMResult:
    """Open a GaussianEM training result and make it the session's current result.

    ``model``: an AtomicStructure already open, or a .pdb/.cif path; by default the model
    the result was trained with, if its file still exists. Returns the
    :class:`GaussianEMResult`.
    """
    from gaussianem.analysis.result import load_result
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(path):
        raise UserError(f"no such GaussianEM result folder: {path}")
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"device {device} was asked for but no CUDA device is available")
    try:
        result = load_result(path, device=device)
    except (OSError, RuntimeError, KeyError) as e:
        raise UserError(f"cannot read the GaussianEM result in {path}: {e}") from None
    gres = GaussianEMResult(session, result)
    gres.show_consensus()
    try:
        structure, opened, is_default = _structure_for(session, gres, model)
    except UserError:
        session.models.close([gres.volume])
        raise
    if structure is not None:
        try:
            gres.attach_structure(structure)
        except (UserError, GaussianEMError) as e:
            if not is_default:
                session.models.close([gres.volume] + ([structure] if opened else []))
                raise
            session.logger.warning(f"the training model is not moved with the map: {e}")
    session._gaussianem_result = gres
    mc = result.model_config
    latent = (f"{mc.zdim} ({mc.zdim_conf} conformational + {mc.zdim_comp} compositional)"
              if mc.split else f"{mc.zdim}")
    msg = (f"Opened GaussianEM result {path}: epoch {result.epoch}, {result.n_particles} particles, "
           f"latent size {latent}, {len(result.base)} Gaussians; map #{gres.volume.id_string}")
    if gres.structure is not None:
        msg += f", atomic model #{gres.structure.id_string}"
    session.logger.info(msg)
    _log_health(session, result)
    return gres


def _log_health(session, result) -> None:
    """The run's health (health.json): a warning in the log unless it is healthy."""
    h = result.health
    if h is None:
        session.logger.info("GaussianEM: this run has no health report (trained before health checks existed)")
    elif h["status"] == "healthy":
        session.logger.info(f"GaussianEM run health: {h['summary']}")
    else:
        session.logger.warning(f"GaussianEM run health: {h['summary']} (details in {result.outdir}/health.json)")


def _structure_for(session, gres: GaussianEMResult, model):
    """(structure, opened here, is the training model) for ``model``: an AtomicStructure,
    a file to open, or None for the model the result was trained with."""
    from chimerax.atomic import AtomicStructure
    if isinstance(model, AtomicStructure):
        return model, False, False
    default = model is None
    path = gres.result.default_model_path() if default else os.path.abspath(os.fspath(model))
    if path is None:
        return None, False, default
    if not os.path.exists(path):
        raise UserError(f"no such atomic model file: {path}")
    from chimerax.core.commands import quote_path_if_necessary as q
    from chimerax.core.commands import run
    models = run(session, f"open {q(path)}", log=False)
    structures = [m for m in (models or []) if isinstance(m, AtomicStructure)]
    others = [m for m in (models or []) if m not in structures[:1]]
    if others:
        session.models.close(others)
    if not structures:
        raise UserError(f"{path} holds no atomic structure")
    return structures[0], True, default
