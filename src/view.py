"""The first view after ``gaussianem open``: what shows the science.

The map as a transparent surface (:data:`MAP_TRANSPARENCY`) at the level that encloses
the atomic model's volume (1.21 A^3 per Dalton; without a model, ChimeraX's initial
level), the atomic model as cartoon inside it, soft lighting, and the camera turned so
that the main motion lies in the screen plane (left to right), then fitted (``view``).

The main motion (:func:`main_motion`) is the mean displacement of the Gaussians between
the particles' 5th and 95th percentiles along PC1 of the conformational latent (of all of
z when it is not split); where that mean nearly cancels (a rotation), the Gaussians'
principal direction of displacement. The camera looks along the normal of the plane of
both directions, so that the mean and the principal direction both lie in the screen
plane, the main one left to right.
"""

from __future__ import annotations

import numpy as np

MAP_TRANSPARENCY = 0.5
ANGSTROM3_PER_DALTON = 1.21      # protein's partial specific volume
DALTON_PER_RESIDUE = 110.0       # for models without all their atoms (e.g. C-alpha only)


def enclosing_level(volume, structure) -> float | None:
    """The map level whose surface encloses the atomic model's volume, or None."""
    if structure is None or structure.deleted or structure.num_atoms == 0:
        return None
    mass = max(float(np.sum(structure.atoms.elements.masses)),
               DALTON_PER_RESIDUE * structure.num_residues)
    step = np.prod(volume.data.step)
    values = np.sort(volume.full_matrix().ravel())[::-1]
    n = int(np.clip(round(mass * ANGSTROM3_PER_DALTON / step), 1, len(values) - 1))
    return float(values[n - 1])


def motion_vectors(gres):
    """(mean, principal) unit vectors (scene frame) of the Gaussians' displacements between
    the particles' 5th and 95th percentiles along conformational PC1, or None (unfinished
    run, no motion): their mean direction, and their principal direction (the first
    right singular vector, signed along the mean)."""
    if not gres.finished or not gres.volume_alive():
        return None
    from .markers import main_part
    r = gres.result
    zs = r.trajectory(pc=1, steps=2, part=main_part(r))        # the 5th and 95th percentiles
    c = r.decode(zs)["centres"].cpu().numpy()
    d = np.asarray(r.grid.to_physical(c[1]), np.float64) - np.asarray(r.grid.to_physical(c[0]), np.float64)
    m = d.mean(axis=0)
    if float(np.sqrt((d ** 2).sum(axis=1).mean())) < 1e-9 or np.linalg.norm(m) < 1e-12:
        return None
    p = np.linalg.svd(d, full_matrices=False)[2][0]
    p = p if np.dot(p, m) >= 0 else -p
    to_scene = gres.volume.scene_position
    return tuple(v / np.linalg.norm(v) for v in (to_scene.transform_vector(m), to_scene.transform_vector(p)))


def main_motion(gres) -> np.ndarray | None:
    """Unit vector (scene frame) of the main motion: the mean displacement, or the
    principal direction where the mean nearly cancels (a rotation); or None."""
    mp = motion_vectors(gres)
    if mp is None:
        return None
    return _main(*mp)


def _main(mean, principal):
    return mean if abs(np.dot(mean, principal)) > 0.9 else principal


def look_across(session, direction, also=None) -> None:
    """Turn the camera so that ``direction`` (scene frame) runs left to right on screen,
    and ``also`` (another direction, if given and not parallel) lies in the screen plane
    too, keeping the view direction as close to the present one as that allows."""
    from chimerax.geometry import Place
    cam = session.main_view.camera
    x = np.asarray(direction, np.float64)
    now = np.asarray(cam.view_direction(), np.float64)
    n = None if also is None else np.cross(x, np.asarray(also, np.float64))
    if n is not None and np.linalg.norm(n) > 0.1:      # both in the screen plane
        v = n if np.dot(n, now) >= 0 else -n
    else:
        v = now - np.dot(now, x) * x
        if np.linalg.norm(v) < 1e-3:                     # looking along the motion: any perpendicular
            v = np.cross(x, np.eye(3)[int(np.argmin(np.abs(x)))])
    v /= np.linalg.norm(v)
    z = -v
    y = np.cross(z, x)
    cam.position = Place(axes=[x, y, z], origin=cam.position.origin())


def first_view(gres) -> None:
    """Style the opened result's map and model, light softly, and look across the motion."""
    session = gres.session
    vol, structure = gres.volume, gres.structure if gres.structure_alive() else None
    if gres.volume_alive():
        level = enclosing_level(vol, structure)
        kw = {"surface_levels": [level]} if level is not None else {}
        vol.set_parameters(transparency=MAP_TRANSPARENCY, **kw)
        vol.show(style="surface")
    if structure is not None:
        res = structure.residues
        polymer = res.filter(res.polymer_types != 0)
        polymer.atoms.displays = False
        res.ribbon_displays = True
    from chimerax.std_commands.lighting import lighting
    lighting(session, "soft")
    mp = motion_vectors(gres)
    if mp is not None:
        mean, principal = mp
        main = _main(mean, principal)
        look_across(session, main, also=principal if main is mean else mean)
    from chimerax.std_commands.view import view
    view(session)


def _level_enclosing(volume, voxels: int) -> float:
    values = np.sort(volume.full_matrix().ravel())[::-1]
    return float(values[int(np.clip(voxels, 1, len(values) - 1)) - 1])


def show_reconstruction(volume, gres=None) -> str:
    """Style a reconstructed map opened beside the live result ``gres`` (or None): its
    surface at the level enclosing the live atomic model's volume (else the volume the
    live map's surface encloses, else ChimeraX's initial level), and hidden while the live
    map is shown, so that the state on screen stays as it was. Returns how, for the log."""
    structure = gres.structure if gres is not None and gres.structure_alive() else None
    live = gres.volume if gres is not None and gres.volume_alive() else None
    level, how = enclosing_level(volume, structure), "enclosing the atomic model's volume"
    if level is None and live is not None and live.surfaces:
        above = int(np.count_nonzero(live.full_matrix() >= live.surfaces[0].level))
        level, how = _level_enclosing(volume, above), "enclosing the live map's volume"
    if level is not None:
        volume.set_parameters(surface_levels=[level])
    else:
        how = "ChimeraX's initial level"
    if live is not None and live.display:
        volume.show(style="surface")
        volume.display = False
        return (f"hidden, level {volume.surfaces[0].level:.4g} ({how}), so the live map #{live.id_string} stays as "
                f"it was: 'volume #{volume.id_string} show' shows it")
    volume.show(style="surface")
    return f"level {volume.surfaces[0].level:.4g} ({how})"
