"""Maps and an atomic model along a path through latent space, as ChimeraX shows a series.

:func:`make_trajectory` turns a :class:`~.latent_paths.LatentPath` into a map series
(``vseries play``), its maps styled as the live map (levels, colours), and, when an atomic
model moves with the map, a copy of it with one coordinate set per step (``coordset``).
"""

from __future__ import annotations

import numpy as np


def make_trajectory(gres, path, kind: str):
    """(map series, structure copy or None) of ``gres`` (a GaussianEMResult) along ``path``,
    with maps of ``kind``; both are added to the session."""
    from chimerax.map_series import MapSeries
    session = gres.session
    style = {}                      # the live map's levels, colours and transparency
    if gres.volume_alive() and gres.volume.surfaces:
        surfaces = gres.volume.surfaces
        style = {"surface_levels": [s.level for s in surfaces],
                 "surface_colors": [tuple(s.rgba) for s in surfaces]}
    gens = [gres.generate(zi, kind) for zi in path.z]
    maps = []
    for gen, label in zip(gens, path.labels):
        m = gres.new_volume(gen.volume, label, add=False)
        if style:
            m.set_parameters(**style)
        maps.append(m)
    series = MapSeries(f"{gres.name} {path.name} trajectory", maps, session)
    session.models.add([series])
    copy = None
    if gres.structure_alive():
        live = gres.live
        if all(g.live is live and g.atom_displacement is not None for g in gens):
            disp = np.stack([g.atom_displacement for g in gens])
        else:
            disp = live.displacement(np.stack([g.displacement for g in gens]))
        xyz = live.coords(live.base[None] + disp)
        copy = live.structure.copy(name=f"{live.structure.name} {path.name} trajectory")
        copy.add_coordsets(np.ascontiguousarray(xyz, dtype=np.float64), replace=True)
        copy.active_coordset_id = 1
        session.models.add([copy])
    return series, copy
