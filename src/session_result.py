"""The live GaussianEM result of a ChimeraX session: its map, its atomic model, its state.

``open_result(session, path)`` loads a training output folder with the engine's one
loader (``gaussianem.analysis.result.load_result``) and shows it: a Volume on the consensus map's
grid (box, voxel size and origin of the consensus map, so it overlays that map), and the
fitted atomic model. The returned :class:`GaussianEMResult` is the session's current
result, which the ``gaussianem`` commands and the Latent Explorer act on, and the
scripting interface::

    from chimerax.gaussianem import open_result
    r = open_result(session, "/data/run1")   # shows the medoid particle's state
    r.show(particle=12)              # the map and model of particle 12's latent
    r.show(pc=(1, 2.0))              # 2 sd along the first principal component
    r.show(particle=12, kind="gaussians")   # this once, the map rendered from the Gaussians
    r.trajectory(pc=1, steps=10)     # a map series and a multi-frame model (5th-95th percentiles)
    r.markers(color_by="displacement")
    r.subset(cluster=0, k=4, save="/data/run1/cluster0.star")

Maps are the deformed consensus (``map_kind`` "deformed": the consensus map's own density
carried by the decoded Gaussian motions, ``Result.volume(z, kind="deformed")``) when the
run's consensus map file is there, else rendered from the Gaussians ("gaussians"), as
:func:`resolve_map_kind` decides at opening.

Moving to a latent changes the models in place: the Volume's data is replaced (its
surface levels, colours and style stay as the user set them) and the atomic model's
coordinates are set to its coordinates at opening plus the displacements interpolated
from the Gaussians, relative to the latent the model stands for (:mod:`.live_model`; the
interpolation weights are computed once per model).

The session's GaussianEM state (:class:`GaussianEMState`, a ChimeraX state manager)
holds the current result: ``close session`` clears it, and a ChimeraX session file
(.cxs) saves and restores it (the result folder, the current latent, and which map,
atomic model and marker set are the live ones), so that after ``open x.cxs`` the
commands move the restored map instead of making another.

Numerics all come from the engine; this module only turns its arrays into ChimeraX
models. Errors the user can fix raise ``chimerax.core.errors.UserError``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from chimerax.core.errors import UserError

from gaussianem.errors import GaussianEMError

from .latent_paths import pc_label, pc_path
from .run_state import unfinished_message
from .save_paths import check_save_path
from .volume_guard import _watch_closed_volumes

DEFAULT_K = 8            # k-means clusters when none are given (as `gaussianem analyze`)
_CACHE_SIZE = 8          # generated states kept, so the tool's commands reuse its work
COLOR_BY = ("displacement", "amplitude")
MAP_KINDS = ("gaussians", "deformed")      # as gaussianem.analysis.result.MAP_KINDS (no torch here)
TRAJECTORY_PERCENTILES = (5.0, 95.0)       # default trajectory and slider range (cryoDRGN's)


@dataclass
class Generated:
    """One latent's map and decoded Gaussians (engine frame), as numpy arrays."""

    z: np.ndarray               # (zdim,) float32
    volume: np.ndarray          # (D, D, D) zyx float32 on the consensus grid
    displacement: np.ndarray    # (N, 3) Angstrom
    amp_factor: np.ndarray      # (N,)
    centres: np.ndarray         # (N, 3) engine frame
    widths: np.ndarray          # (N,) Angstrom
    atom_displacement: np.ndarray | None = None   # (M, 3) for the live model below
    live: object = None                             # the LiveModel it was computed for
    kind: str = "gaussians"     # how the map was made (MAP_KINDS)


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
    current latent, or None while the consensus is shown), ``marker_set``, ``map_kind``
    (how maps are made unless a call says otherwise: "deformed" or "gaussians").
    """

    def __init__(self, session, result, name: str | None = None, map_kind: str = "gaussians"):
        if map_kind not in MAP_KINDS:
            raise UserError(f"map must be one of {', '.join(MAP_KINDS)}, not {map_kind!r}")
        self.session = session
        self.result = result
        self.map_kind = map_kind
        self.name = name or f"GaussianEM {os.path.basename(result.outdir.rstrip(os.sep))}"
        self.volume = None
        self.live = None                  # the atomic model moved with the map (LiveModel)
        self.marker_set = None
        self.marker_color_by = "displacement"
        self.z = None
        self.k = max(1, min(DEFAULT_K, result.n_particles or DEFAULT_K))
        self._cache: OrderedDict[tuple, Generated] = OrderedDict()   # (latent, map kind)
        self._lock = threading.Lock()     # generation may run on the tool's worker thread
        self._kmeans = {}
        self._medoid = None
        self._columns = None              # the particle file's numbers (particle_columns)
        self._pc_ranges = {}              # (pc, part, percentiles) -> the particles' range in sd

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

    @property
    def finished(self) -> bool:
        """Whether the run finished (wrote its particles' latents)."""
        return self.result.z is not None

    def require_latents(self) -> None:
        """A UserError saying that the run is unfinished, at which epoch, and how to
        resume it, when it has no particle latents yet (:func:`unfinished_message`)."""
        if not self.finished:
            raise UserError(unfinished_message(self.result.run, self.session))

    def pca(self, part: str = "all"):
        self.require_latents()
        return self.result.pca(part)

    @property
    def medoid(self) -> int:
        """The medoid particle's index (``Result.medoid_index``): the state shown first."""
        self.require_latents()
        if self._medoid is None:
            self._medoid = self.result.medoid_index()
        return self._medoid

    def pc_range(self, pc: int, part: str = "all", q=TRAJECTORY_PERCENTILES) -> tuple[float, float]:
        """The particles' ``q`` percentiles along principal component ``pc``, in sd
        (``Result.pc_percentiles``): default trajectories and the explorer's sliders."""
        self.require_latents()
        key = (int(pc), part, tuple(q))
        if key not in self._pc_ranges:          # asked on every slider move: computed once
            self._pc_ranges[key] = self.result.pc_percentiles(int(pc), part, q=q)
        return self._pc_ranges[key]

    def pc_value_warning(self, pc: int, value: float, part: str = "all") -> str | None:
        """A warning when ``value`` sd along PC ``pc`` lies beyond the particles'
        0.5th-99.5th percentiles there (a state no particle has), naming that range; a
        UserError when it is absurd (:func:`.latent_ranges.check_pc_value`)."""
        from .latent_ranges import check_pc_value
        return check_pc_value(self, pc, value, part)

    def kind_for(self, kind: str | None = None) -> str:
        """The map kind of one call: ``kind``, or the session's choice (:attr:`map_kind`)."""
        if kind is None or kind == self.map_kind:
            return self.map_kind
        return resolve_map_kind(self.result, kind)[0]

    def kmeans(self, k: int | None = None):
        """K-means of the latents (the engine's, reusing ``analysis/kmeansK/``)."""
        from gaussianem.analysis.clusters import kmeans_for_result
        self.require_latents()
        k = int(k or self.k)
        if k not in self._kmeans:
            self._kmeans[k] = kmeans_for_result(self.result, k)
        return self._kmeans[k]

    def umap(self) -> np.ndarray | None:
        """The UMAP embedding written by ``gaussianem analyze``, if there is a current one."""
        from gaussianem.analysis.selection import read_umap
        return read_umap(self.result)

    def particle_columns(self) -> dict:
        """Per-particle numbers of the run's particle file, name -> (N,) array
        (:func:`gaussianem.analysis.selection.particle_columns`), read once."""
        from gaussianem.analysis.selection import particle_columns
        self.require_latents()
        if self._columns is None:
            self._columns = particle_columns(self.result)
        return self._columns

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
        """Show the consensus: the consensus map itself with deformed maps (the deformed
        consensus with no motion), else the consensus (base) Gaussians' map; creates the
        Volume if needed."""
        vol = self.result.consensus_map()[0] if self.map_kind == "deformed" else self.result.consensus_volume()
        self._set_volume_data(vol)
        self.z = None
        return self.volume

    def _set_volume_data(self, array_zyx) -> None:
        if self._volume_alive():
            self.volume.replace_data(self._grid_data(array_zyx, self.volume.data.name))
        else:
            self.volume = self._new_volume(array_zyx, self.name)

    @property
    def structure(self):
        """The AtomicStructure moved with the map, or None."""
        return self.live.structure if self._structure_alive() else None

    def attach_structure(self, structure, base=None, to_model=None, reference="auto") -> None:
        """Move ``structure`` (an AtomicStructure fitted into the consensus map) with the
        latent from now on, relative to the latent it stands for (:class:`.live_model.LiveModel`;
        ``base``, ``to_model`` and ``reference`` are given when restoring a session)."""
        from .live_model import LiveModel
        position = self.volume.scene_position if base is None and self._volume_alive() else None
        self.live = LiveModel(self.result, structure, base=base, to_model=to_model, map_position=position,
                              reference=reference)

    def _structure_alive(self) -> bool:
        if self.live is not None and not self.live.alive:
            self.live = None
        return self.live is not None

    def fit_domains(self, particles: int, steps: int, sort: str = "images"):
        """A copy of the atomic model at the current state with its rigid domains fitted to
        its particles (:meth:`.live_model.LiveModel.fit_domains`), added to the session.
        Returns (copy, domains, fit)."""
        if not self._structure_alive():
            raise UserError("no atomic model moves with the map: give one when opening the result "
                            "(gaussianem open RUN model FILE|#N)")
        self.require_latents()
        if self.z is None:
            raise UserError("show a state first (e.g. gaussianem show particle 12): the domains are fitted "
                            "to the particles nearest the state shown")
        copy, domains, fit = self.live.fit_domains(self.z, particles, steps, sort,
                                                   progress=self.session.logger.status)
        self.session.models.add([copy])
        return copy, domains, fit

    # ------------------------------------------------------------------ latents
    def latent(self, z=None, particle=None, pc=None, cluster=None, k=None, part="all") -> np.ndarray:
        """The latent named by exactly one of: ``z`` (values), ``particle`` (index),
        ``pc`` ((component, value in sd)), ``cluster`` (k-means centre, k clusters); with
        none of them, the medoid particle's latent (:attr:`medoid`)."""
        given = [n for n, v in (("z", z), ("particle", particle), ("pc", pc), ("cluster", cluster))
                 if v is not None]
        if len(given) > 1:
            raise UserError(f"give only one of z, particle, pc and cluster (got {' and '.join(given)})")
        r = self.result
        if z is not None:
            z = r.check_z(z)[0]
            from .latent_ranges import check_latent
            check_latent(self, z)                   # refuses absurd values (warnings: the commands)
            return z
        self.require_latents()          # every other choice is made from the particles' latents
        if particle is not None:
            return np.asarray(r.particle_z(int(particle)), dtype=np.float32)
        if pc is not None:
            comp, value = pc
            p = r.pca(part)          # part: all of z, or conf / comp of a split latent
            if not 1 <= int(comp) <= len(p.components):
                raise UserError(f"principal component {comp} does not exist: this result has "
                                f"{len(p.components)} (1 to {len(p.components)})")
            self.pc_value_warning(int(comp), float(value), part)     # refuses absurd values
            return p.latent(int(comp), float(value))
        if cluster is not None:
            km = self.kmeans(k)
            if not 0 <= int(cluster) < km.k:
                raise UserError(f"cluster {cluster} does not exist: k-means with k={km.k} has "
                                f"clusters 0 to {km.k - 1}")
            return km.centres[int(cluster)].astype(np.float32)
        return np.asarray(r.particle_z(self.medoid), dtype=np.float32)

    # ------------------------------------------------------------------ generation
    def generate(self, z, kind: str | None = None) -> Generated:
        """The map (``kind``, default :attr:`map_kind`), Gaussians and atom displacements of
        latent ``z`` (thread-safe, so the tool runs it on its worker thread; the last few
        are cached)."""
        z = self.result.check_z(z)[0]
        kind = kind or self.map_kind
        key = (latent_key(z), kind)
        live = self.live
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                if hit.live is not live:          # another atomic model: its atoms only
                    hit = replace(hit, live=live, atom_displacement=None if live is None
                                  else live.displacement(hit.displacement))
                    self._cache[key] = hit
                self._cache.move_to_end(key)
                return hit
            out = self.result.decode(z)
            vol = self.result.volume(z, kind=kind)
            disp = out["displacement"][0].cpu().numpy()
            gen = Generated(z=z, volume=vol, displacement=disp,
                            amp_factor=out["amp_factor"][0].cpu().numpy(),
                            centres=out["centres"][0].cpu().numpy(),
                            widths=out["widths"][0].cpu().numpy(),
                            atom_displacement=None if live is None else live.displacement(disp),
                            live=live, kind=kind)
            self._cache[key] = gen
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return gen

    def apply(self, gen: Generated) -> None:
        """Show a generated state: replace the map's data, move the model and markers."""
        self._set_volume_data(gen.volume)
        if self._structure_alive():
            live = self.live
            d = gen.atom_displacement
            if d is None or gen.live is not live:
                d = live.displacement(gen.displacement)
            live.structure.atoms.coords = live.coords(live.base + d)
        if self.marker_set is not None and not self.marker_set.deleted:
            self._update_markers(gen, self.marker_color_by)
        self.z = gen.z

    def show(self, z=None, particle=None, pc=None, cluster=None, k=None, part="all",
             kind: str | None = None) -> np.ndarray:
        """Move the map (and model) to a latent (see :meth:`latent`); returns the latent.
        ``kind``: the map's kind for this call only (default :attr:`map_kind`)."""
        kind = self.kind_for(kind)
        zz = self.latent(z=z, particle=particle, pc=pc, cluster=cluster, k=k, part=part)
        gen = self.generate(zz, kind)
        self.apply(gen)
        return gen.z

    # ------------------------------------------------------------------ trajectory
    def trajectory(self, pc: int = 1, steps: int = 10, range_sd=None, part: str = "all",
                   kind: str | None = None, path=None):
        """Maps along principal component ``pc`` from ``range_sd[0]`` to ``range_sd[1]`` sd
        (default :meth:`pc_range`, the particles' 5th to 95th percentiles), or along
        ``path`` (a :class:`~.latent_paths.LatentPath`, e.g. between two particles), as a
        map series (``vseries play``) and, with an atomic model, a copy of it with one
        coordinate set per step (``coordset``); ``kind``: the maps' kind (default
        :attr:`map_kind`). Returns (map series, structure copy or None)."""
        from chimerax.map_series import MapSeries
        self.require_latents()
        kind = self.kind_for(kind)
        if path is None:
            path = pc_path(self, pc, steps, range_sd, part)
        zs, labels, title = path.z, path.labels, path.name
        style = {}                      # the live map's levels, colours and transparency
        if self._volume_alive() and self.volume.surfaces:
            surfaces = self.volume.surfaces
            style = {"surface_levels": [s.level for s in surfaces],
                     "surface_colors": [tuple(s.rgba) for s in surfaces]}
        gens = [self.generate(zi, kind) for zi in zs]
        maps = []
        for gen, label in zip(gens, labels):
            m = self._new_volume(gen.volume, label, add=False)
            if style:
                m.set_parameters(**style)
            maps.append(m)
        series = MapSeries(f"{self.name} {title} trajectory", maps, self.session)
        self.session.models.add([series])
        copy = None
        if self._structure_alive():
            live = self.live
            if all(g.live is live and g.atom_displacement is not None for g in gens):
                disp = np.stack([g.atom_displacement for g in gens])
            else:
                disp = live.displacement(np.stack([g.displacement for g in gens]))
            xyz = live.coords(live.base[None] + disp)
            copy = self.structure.copy(name=f"{self.structure.name} {title} trajectory")
            copy.add_coordsets(np.ascontiguousarray(xyz, dtype=np.float64), replace=True)
            copy.active_coordset_id = 1
            self.session.models.add([copy])
        return series, copy

    # ------------------------------------------------------------------ markers
    def markers(self, color_by: str = "displacement", z=None, particle=None):
        """The Gaussians' centres (physical frame) as a marker set, radius = width,
        coloured by displacement length (viridis, on one fixed scale in Angstrom for all
        states) or amplitude change (log2 of the amplitude factor clipped to [-1, 1],
        blue-white-red), with a colour key (:mod:`.markers`). At the latent given, else the
        current state (the consensus Gaussians while no latent has been shown). The marker
        set and its key follow later ``show`` commands; closing the markers closes the key."""
        from .markers import close_key_with
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
            close_key_with(self.session, ms)
        return self._update_markers(gen, color_by)

    def _update_markers(self, gen: Generated, color_by: str):
        from .markers import marker_colors, show_key
        atoms = self.marker_set.atoms
        atoms.coords = self.grid.to_physical(gen.centres)
        atoms.radii = np.asarray(gen.widths, dtype=np.float32)
        atoms.colors, values, self.marker_scale = marker_colors(self, gen, color_by)
        self.marker_range = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
        show_key(self.session, color_by, self.marker_scale)
        return self.marker_set

    # ------------------------------------------------------------------ subsets
    def subset_indices(self, cluster=None, k=None, particles=None, pc_range=None, part="all",
                       region=None, view="pca", outliers=None, low_signal=None) -> tuple:
        """(sorted particle indices, description) for exactly one selection
        (:func:`gaussianem.analysis.selection.select_particles`); ``part``: the principal
        components of a ``pc_range`` are of all of z, or of its ``conf`` / ``comp`` part;
        ``region``: polygon corners (M, 2) on the latent plot ``view`` (pca or umap);
        ``outliers`` / ``low_signal`` ``"only"``: the motion outliers / the low-signal
        particles, ``"exclude"``: all the others."""
        from gaussianem.analysis.selection import select_particles
        self.require_latents()
        km = self.kmeans(k) if cluster is not None else None
        sel = select_particles(self.result, clusters=cluster, kmeans=km, particles=particles, pc_range=pc_range,
                               part=part, region=region, view=view, outliers=outliers is not None,
                               low_signal=low_signal is not None)
        idx = np.asarray(sel.indices, dtype=np.int64)
        if "exclude" in (outliers, low_signal):
            return np.setdiff1d(np.arange(self.result.n_particles), idx), "all but " + sel.what
        return idx, sel.what

    def subset(self, save, cluster=None, k=None, particles=None, pc_range=None, part="all",
               replace: bool = False, region=None, view="pca", outliers=None, low_signal=None) -> dict:
        """Write a particle subset to ``save`` (.star or .cs) with the original rows.

        An existing file is replaced only with ``replace``; a file the run reads (its
        particle file, consensus map, atomic model, or any file of the run folder) never
        is (:func:`check_save_path`)."""
        from gaussianem.analysis.selection import export_subset
        save = os.path.abspath(os.path.expanduser(os.fspath(save)))
        check_save_path(self.result, save, replace=replace, also=[particles])
        idx, what = self.subset_indices(cluster=cluster, k=k, particles=particles, pc_range=pc_range, part=part,
                                        region=region, view=view, outliers=outliers, low_signal=low_signal)
        if idx.size == 0:
            raise UserError(f"no particles in {what}: nothing saved")
        out = export_subset(self.result, idx, save)
        out["what"] = what
        return out

    # ------------------------------------------------------------------ sessions
    def snapshot(self) -> dict:
        """What a ChimeraX session file keeps of this result (models by reference)."""
        structure = self.structure if self._structure_alive() else None
        return {
            "version": 1,
            "outdir": self.outdir,
            "device": str(self.result.device),
            "name": self.name,
            "k": int(self.k),
            "z": None if self.z is None else [float(v) for v in np.asarray(self.z).reshape(-1)],
            "volume": self.volume if self._volume_alive() else None,
            "structure": structure,
            "base_coords": None if structure is None else np.asarray(self.live.base, dtype=np.float64),
            "to_model": None if structure is None else self.live.to_model,
            "reference": None if structure is None or self.live.reference is None
            else [float(v) for v in self.live.reference],
            "marker_set": self.marker_set if self.marker_set is not None and not self.marker_set.deleted
            else None,
            "marker_color_by": self.marker_color_by,
            "map": self.map_kind,
        }

    @classmethod
    def from_snapshot(cls, session, data) -> "GaussianEMResult":
        """The result of :meth:`snapshot`, reopened from its folder, with the restored
        models as its live map, atomic model and markers."""
        from gaussianem.analysis.result import load_result
        device = data.get("device") or "cpu"
        if device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                device = "cpu"
        result = load_result(data["outdir"], device=device)
        kind, note = (resolve_map_kind(result) if data.get("map") == "deformed"   # sessions saved before
                      else ("gaussians", None))                               # deformed maps: gaussians
        if note:
            session.logger.info(note)
        gres = cls(session, result, name=data.get("name"), map_kind=kind)
        gres.k = int(data.get("k") or gres.k)
        volume = data.get("volume")
        if volume is not None and not volume.deleted:
            gres.volume = volume
            _watch_closed_volumes(session)
        structure, base = data.get("structure"), data.get("base_coords")
        if structure is not None and not structure.deleted and base is not None \
                and len(base) == structure.num_atoms:
            gres.attach_structure(structure, base=base, to_model=data.get("to_model"),
                                  reference=data.get("reference", "auto"))   # older sessions: found now
        markers = data.get("marker_set")
        if markers is not None and not markers.deleted:
            from .markers import close_key_with
            gres.marker_set = markers
            close_key_with(session, markers)
        gres.marker_color_by = data.get("marker_color_by") or gres.marker_color_by
        z = data.get("z")
        gres.z = None if z is None else gres.result.check_z(z)[0]
        return gres


def blue_white_red(t) -> np.ndarray:
    """RGBA uint8 colours for values in [0, 1]: blue, white at 0.5, red."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)[:, None]
    blue, white, red = np.array([0, 0, 255.0]), np.array([255.0, 255, 255]), np.array([255.0, 0, 0])
    rgb = np.where(t < 0.5, blue + (white - blue) * (2 * t), white + (red - white) * (2 * t - 1))
    rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255.0)], axis=1)
    return np.round(rgba).astype(np.uint8)


# ---------------------------------------------------------------------------- the session's


def resolve_map_kind(result, asked: str | None = None) -> tuple[str, str | None]:
    """(map kind, note for the log) for a result: ``asked`` ("gaussians" or "deformed"),
    or by default the deformed consensus when the run's consensus map file is there and
    is the map it was trained on, else maps rendered from the Gaussians, with a note
    saying why. Deformed maps asked for without the file are a UserError."""
    if asked is not None and asked not in MAP_KINDS:
        raise UserError(f"map must be one of {', '.join(MAP_KINDS)}, not {asked!r}")
    if asked == "gaussians":
        return asked, None
    if not result.has_consensus_map():
        missing = f"the run's consensus map ({result.consensus_path or 'not recorded'}) is not there"
        if asked == "deformed":
            raise UserError(f"deformed maps carry the consensus map's density, but {missing}: put it back "
                            "there, or use 'map gaussians' (maps rendered from the Gaussians)")
        return "gaussians", (f"GaussianEM: {missing}, so maps are rendered from the Gaussians (blurrier than "
                             "the deformed consensus, which needs that file)")
    if asked is None:
        try:
            result.consensus_map()                       # read now, and checked against the run's grid
        except GaussianEMError as e:                     # not the trained map: fall back, saying why
            return "gaussians", f"GaussianEM: {e}; maps are rendered from the Gaussians"
    else:
        result.consensus_map()                           # its error, as a UserError, if it is not the map
    return "deformed", None


