"""The live GaussianEM result of a ChimeraX session: the engine's result, and what shows it.

:class:`GaussianEMResult` is a thin layer over the engine's
:class:`gaussianem.analysis.result.Result` (``result``): the latents, PCA, k-means and
percentiles are the engine's, asked once and kept; what this class adds is what ChimeraX
displays, the Volume on the consensus map's grid (box, voxel size and origin of the
consensus map, so it overlays that map), the atomic model moved with it, and the latent
they show. It is the session's current result (:mod:`.session_state`, which also saves and
restores it with ChimeraX sessions; :func:`.opening.open_result` opens one), which the
``gaussianem`` commands and the Latent Explorer act on, and the scripting interface::

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
from the Gaussians, relative to the latent the model stands for (:mod:`.live_model`).
The states themselves are generated and cached by :mod:`.generation`; the marker set,
trajectories and subsets are made by :mod:`.markers`, :mod:`.trajectory` and
:mod:`.subsets`. Errors the user can fix raise ``chimerax.core.errors.UserError``.
"""

from __future__ import annotations

import os

import numpy as np
from chimerax.core.errors import UserError

from gaussianem.analysis.vocabulary import MAP_KINDS
from gaussianem.errors import GaussianEMError

from .generation import Generated, StateCache
from .latent_paths import pc_path
from .latent_ranges import check_latent, check_pc_value
from .run_state import unfinished_message
from .volume_guard import watch_closed_volumes

DEFAULT_K = 8            # k-means clusters when none are given (as `gaussianem analyze`)
TRAJECTORY_PERCENTILES = (5.0, 95.0)       # default trajectory and slider range (cryoDRGN's)


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
        self._states = StateCache(result)  # generated states, shared by the tool and the commands
        self._kmeans = {}
        self._medoid = None
        self._columns = None              # the particle file's numbers (particle_columns)
        self._pc_ranges = {}              # (pc, part, percentiles) -> the particles' range in sd

    # ------------------------------------------------------------------ the engine's result
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

    # ------------------------------------------------------------------ the map
    def grid_data(self, array_zyx, name: str):
        """A ChimeraX grid of ``array_zyx`` on the consensus map's grid."""
        from chimerax.map_data import ArrayGridData
        g = self.grid
        return ArrayGridData(np.ascontiguousarray(array_zyx, dtype=np.float32),
                             origin=tuple(float(v) for v in g.origin),
                             step=(g.apix, g.apix, g.apix), name=name)

    def new_volume(self, array_zyx, name: str, add: bool = True):
        """A new Volume of ``array_zyx`` on the consensus map's grid (``add``: to the session)."""
        from chimerax.map import volume_from_grid_data
        watch_closed_volumes(self.session)
        return volume_from_grid_data(self.grid_data(array_zyx, name), self.session,
                                     open_model=add, show_dialog=False)

    def volume_alive(self) -> bool:
        return self.volume is not None and not self.volume.deleted

    def set_volume_data(self, array_zyx) -> None:
        """Show ``array_zyx`` in the live map (made if there is none)."""
        if self.volume_alive():
            self.volume.replace_data(self.grid_data(array_zyx, self.volume.data.name))
        else:
            self.volume = self.new_volume(array_zyx, self.name)

    def show_consensus(self):
        """Show the consensus: the consensus map itself with deformed maps (the deformed
        consensus with no motion), else the consensus (base) Gaussians' map; creates the
        Volume if needed."""
        vol = self.result.consensus_map()[0] if self.map_kind == "deformed" else self.result.consensus_volume()
        self.set_volume_data(vol)
        self.z = None
        return self.volume

    # ------------------------------------------------------------------ the atomic model
    @property
    def structure(self):
        """The AtomicStructure moved with the map, or None."""
        return self.live.structure if self.structure_alive() else None

    def structure_alive(self) -> bool:
        if self.live is not None and not self.live.alive:
            self.live = None
        return self.live is not None

    def attach_structure(self, structure, base=None, to_model=None, reference="auto") -> None:
        """Move ``structure`` (an AtomicStructure fitted into the consensus map) with the
        latent from now on, relative to the latent it stands for (:class:`.live_model.LiveModel`;
        ``base``, ``to_model`` and ``reference`` are given when restoring a session)."""
        from .live_model import LiveModel
        position = self.volume.scene_position if base is None and self.volume_alive() else None
        self.live = LiveModel(self.result, structure, base=base, to_model=to_model, map_position=position,
                              reference=reference)

    def fit_domains(self, particles: int, steps: int, sort: str = "images"):
        """A copy of the atomic model at the current state with its rigid domains fitted to
        its particles (:meth:`.live_model.LiveModel.fit_domains`), added to the session.
        Returns (copy, domains, fit)."""
        if not self.structure_alive():
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

    # ------------------------------------------------------------------ states
    def generate(self, z, kind: str | None = None) -> Generated:
        """The map (``kind``, default :attr:`map_kind`), Gaussians and atom displacements of
        latent ``z`` (thread-safe, so the tool runs it on its worker thread; the last few
        are cached: :class:`.generation.StateCache`)."""
        return self._states.generate(z, kind or self.map_kind, self.live)

    def apply(self, gen: Generated) -> None:
        """Show a generated state: replace the map's data, move the model and markers."""
        from .markers import update_markers
        self.set_volume_data(gen.volume)
        if self.structure_alive():
            live = self.live
            d = gen.atom_displacement
            if d is None or gen.live is not live:
                d = live.displacement(gen.displacement)
            live.structure.atoms.coords = live.coords(live.base + d)
        if self.marker_set is not None and not self.marker_set.deleted:
            update_markers(self, gen)
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

    def trajectory(self, pc: int = 1, steps: int = 10, range_sd=None, part: str = "all",
                   kind: str | None = None, path=None):
        """Maps along principal component ``pc`` from ``range_sd[0]`` to ``range_sd[1]`` sd
        (default :meth:`pc_range`, the particles' 5th to 95th percentiles), or along
        ``path`` (a :class:`~.latent_paths.LatentPath`, e.g. between two particles), as a
        map series (``vseries play``) and, with an atomic model, a copy of it with one
        coordinate set per step (``coordset``; :func:`.trajectory.make_trajectory`);
        ``kind``: the maps' kind (default :attr:`map_kind`). Returns (map series, structure
        copy or None)."""
        from .trajectory import make_trajectory
        self.require_latents()
        kind = self.kind_for(kind)
        if path is None:
            path = pc_path(self, pc, steps, range_sd, part)
        return make_trajectory(self, path, kind)

    def markers(self, color_by: str = "displacement", z=None, particle=None):
        """The Gaussians' centres (physical frame) as a marker set, radius = width,
        coloured by displacement length (viridis, on one fixed scale in Angstrom for all
        states) or amplitude change (log2 of the amplitude factor clipped to [-1, 1],
        blue-white-red), with a colour key (:func:`.markers.show_markers`). At the latent
        given, else the current state (the consensus Gaussians while no latent has been
        shown)."""
        from .markers import show_markers
        return show_markers(self, color_by, z=z, particle=particle)

    # ------------------------------------------------------------------ subsets
    def subset_indices(self, **selection) -> tuple:
        """(sorted particle indices, description) for exactly one selection
        (:func:`.subsets.subset_indices`)."""
        from .subsets import subset_indices
        return subset_indices(self, **selection)

    def subset(self, save, replace: bool = False, **selection) -> dict:
        """Write a particle subset to ``save`` (.star or .cs) with the original rows
        (:func:`.subsets.write_subset`: ``cluster``, ``k``, ``particles``, ``pc_range``,
        ``part``, ``region``, ``view``, ``outliers``, ``low_signal``). An existing file is
        replaced only with ``replace``; a file the run reads never is."""
        from .subsets import write_subset
        return write_subset(self, save, replace=replace, **selection)


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
