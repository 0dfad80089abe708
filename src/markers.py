"""Marker colours that can be read across states, and their colour key.

Displacement: the length of each Gaussian's displacement on a sequential colour map
(viridis) over a FIXED scale, 0 to the largest displacement of any Gaussian along the
default trajectories (the particles' 5th to 95th percentiles) of the first principal
components (:func:`displacement_scale`), so that one colour means the same Angstroms
at every state; longer displacements take the top colour. Amplitude: log2 of the
amplitude factor clipped to [-1, 1] (half to double), blue-white-red, so that vanished
Gaussians (log2 -> -inf) do not wash out the rest. A ChimeraX colour key (``key``)
shows the colours and the scale; it is updated with the markers and closed with them.

:func:`show_markers` makes (or reuses) the result's marker set, one marker per Gaussian at
its centre (physical frame), radius its width; :func:`update_markers` moves and recolours
it for a state (the live result calls it whenever the map moves).
"""

from __future__ import annotations

import numpy as np

COLOR_BY = ("displacement", "amplitude")
AMPLITUDE_CLIP = 1.0        # |log2 amplitude factor| shown: half (blue) to double (red)
SCALE_PCS = 3               # principal components whose trajectories set the displacement scale
SCALE_STEPS = 5             # latents decoded along each of them
# viridis at 0, 0.25, 0.5, 0.75, 1 (a perceptually uniform sequential map)
VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


def main_part(result) -> str:
    """The latent part whose principal components are "the motion": conf of a split latent."""
    return "conf" if result.model_config.split else "all"


def sequential(t) -> np.ndarray:
    """RGBA uint8 viridis colours for values in [0, 1] (clipped)."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0) * (len(VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(VIRIDIS) - 2)
    f = (t - i)[:, None]
    rgb = VIRIDIS[i] + (VIRIDIS[i + 1] - VIRIDIS[i]) * f
    return np.round(np.concatenate([rgb, np.full((len(rgb), 1), 255.0)], axis=1)).astype(np.uint8)


def blue_white_red(t) -> np.ndarray:
    """RGBA uint8 colours for values in [0, 1]: blue, white at 0.5, red."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)[:, None]
    blue, white, red = np.array([0, 0, 255.0]), np.array([255.0, 255, 255]), np.array([255.0, 0, 0])
    rgb = np.where(t < 0.5, blue + (white - blue) * (2 * t), white + (red - white) * (2 * t - 1))
    rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255.0)], axis=1)
    return np.round(rgba).astype(np.uint8)


def displacement_scale(gres) -> float:
    """The largest displacement length (Angstrom) of any Gaussian at the latents along the
    default trajectories of the first :data:`SCALE_PCS` principal components of the
    motion's part (:func:`main_part`); computed once per result. 0 for an unfinished run."""
    scale = getattr(gres, "_displacement_scale", None)
    if scale is None:
        scale = 0.0
        if gres.finished:
            r = gres.result
            part = main_part(r)
            n = min(SCALE_PCS, len(r.pca(part).components))
            zs = np.concatenate([r.trajectory(pc=k, steps=SCALE_STEPS, part=part) for k in range(1, n + 1)])
            d = r.decode(zs)["displacement"].cpu().numpy()
            scale = float(np.linalg.norm(d, axis=-1).max(initial=0.0))
        gres._displacement_scale = scale
    return scale


def marker_colors(gres, gen, color_by: str):
    """(RGBA uint8 per Gaussian, values, (low, high) of the colour scale) for a state."""
    if color_by == "displacement":
        values = np.linalg.norm(np.asarray(gen.displacement, dtype=np.float64), axis=1)
        top = displacement_scale(gres) or float(values.max(initial=0.0))
        top = max(top, 1e-6)
        return sequential(values / top), values, (0.0, top)
    values = np.log2(np.maximum(np.asarray(gen.amp_factor, dtype=np.float64), 1e-30))
    t = 0.5 + 0.5 * np.clip(values, -AMPLITUDE_CLIP, AMPLITUDE_CLIP) / AMPLITUDE_CLIP
    return blue_white_red(t), values, (-AMPLITUDE_CLIP, AMPLITUDE_CLIP)


def key_items(color_by: str, scale: tuple[float, float]) -> list[tuple]:
    """(rgba 0-1, label) pairs of the colour key."""
    if color_by == "displacement":
        top = scale[1]
        ts = np.linspace(0.0, 1.0, len(VIRIDIS))
        labels = [f"{t * top:.3g} Å" if i in (0, len(ts) - 1) else "" for i, t in enumerate(ts)]
        labels[len(ts) // 2] = f"{0.5 * top:.3g}"
        return [(tuple(c / 255.0), lab) for c, lab in zip(sequential(ts), labels)]
    cols = blue_white_red(np.array([0.0, 0.5, 1.0])) / 255.0
    return [(tuple(cols[0]), "½× amplitude"), (tuple(cols[1]), "1×"), (tuple(cols[2]), "2×")]


# the key: a vertical bar at the left, centred in height, its labels to its right. ChimeraX
# 1.7 scales a key about the image's centre by the saved image's aspect ratio relative to
# the window's (color_key/model.py, _set_key_image), so a key near the bottom leaves the
# picture of a wide image or movie; one centred in height stays inside it up to 2:1.
KEY_POS = (0.03, 0.3)         # lower left corner, fractions of the window
KEY_SIZE = (0.03, 0.4)        # width, height: taller than wide, so ChimeraX lays it out vertically


def key_font_size(window_size) -> int:
    """Label font size (window pixels) for a window of ``window_size``: 4% of its smaller
    side, 8 to 24, so that the labels stay beside the bar (and apart) at any window size; a
    saved image or movie scales them with the picture."""
    return int(min(24, max(8, round(0.04 * min(window_size)))))


def show_key(session, color_by: str, scale: tuple[float, float]):
    """Show (or update) the ChimeraX colour key for the markers' colours."""
    from chimerax.color_key.cmd import key_cmd
    from chimerax.core.colors import Color
    from chimerax.color_key.model import get_model
    items = [(Color(rgba), label) for rgba, label in key_items(color_by, scale)]
    if get_model(session, create=False) is not None:        # where the user put it
        return key_cmd(session, items)
    return key_cmd(session, items, pos=KEY_POS, size=KEY_SIZE, label_side="right/bottom",
                   justification="left", font_size=key_font_size(session.main_view.window_size))


def close_key(session) -> None:
    """Close the colour key, if one is shown."""
    from chimerax.color_key.model import get_model
    key = get_model(session, create=False)
    if key is not None and not key.deleted:
        key.delete()


def close_key_with(session, marker_set) -> None:
    """Close the colour key when ``marker_set`` is closed."""
    def closed(*_):
        close_key(session)
        from chimerax.core.triggerset import DEREGISTER
        return DEREGISTER
    marker_set.triggers.add_handler("deleted", closed)


# ---------------------------------------------------------------------------- the marker set

def show_markers(gres, color_by: str = "displacement", z=None, particle=None):
    """The Gaussians of ``gres`` (a GaussianEMResult) as a marker set coloured by
    ``color_by`` (:data:`COLOR_BY`), with a colour key: at the latent given, else at the
    current state (the consensus Gaussians while no latent has been shown). The marker set
    and its key follow later ``show`` commands; closing the markers closes the key."""
    from chimerax.core.errors import UserError

    from .generation import consensus_state
    if color_by not in COLOR_BY:
        raise UserError(f"colorBy must be one of {', '.join(COLOR_BY)}, not {color_by!r}")
    if z is not None or particle is not None:
        gen = gres.generate(gres.latent(z=z, particle=particle))
    elif gres.z is not None:
        gen = gres.generate(gres.z)
    else:
        gen = consensus_state(gres.result.base)
    gres.marker_color_by = color_by
    ms = gres.marker_set
    if ms is None or ms.deleted or ms.num_atoms != len(gen.centres):
        from chimerax.markers import MarkerSet
        ms = MarkerSet(gres.session, name=f"{gres.name} Gaussians")
        for i in range(len(gen.centres)):
            ms.create_marker((0.0, 0.0, 0.0), (180, 180, 180, 255), 1.0, id=i + 1)
        if gres.volume_alive():
            ms.position = gres.volume.scene_position      # the map's frame
        gres.session.models.add([ms])
        gres.marker_set = ms
        close_key_with(gres.session, ms)
    return update_markers(gres, gen)


def update_markers(gres, gen):
    """Move and recolour ``gres``'s marker set to the state ``gen``; updates the key."""
    atoms = gres.marker_set.atoms
    atoms.coords = gres.grid.to_physical(gen.centres)
    atoms.radii = np.asarray(gen.widths, dtype=np.float32)
    atoms.colors, values, gres.marker_scale = marker_colors(gres, gen, gres.marker_color_by)
    gres.marker_range = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    show_key(gres.session, gres.marker_color_by, gres.marker_scale)
    return gres.marker_set
