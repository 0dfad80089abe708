"""The session's GaussianEM state: the current result (:class:`GaussianEMState`, saved
and restored with ChimeraX sessions, cleared on ``close session``).

A ChimeraX session file (.cxs) keeps the result folder, the current latent, and which map,
atomic model and marker set are the live ones (:func:`result_snapshot`); restoring it
reopens the result from its folder with the restored models as its live ones
(:func:`result_from_snapshot`), so that after ``open x.cxs`` the commands move the restored
map instead of making another. :func:`.opening.open_result` makes a result current.

Scripting: ``from chimerax.gaussianem import open_result, current_result``.
"""

from __future__ import annotations

import numpy as np
from chimerax.core.errors import UserError
from chimerax.core.state import StateManager

from gaussianem.errors import GaussianEMError

from .session_result import GaussianEMResult, resolve_map_kind
from .volume_guard import watch_closed_volumes

STATE_TAG = "gaussianem"        # the session's state manager (session.get_state_manager)


class GaussianEMState(StateManager):
    """The GaussianEM state of a ChimeraX session: its current result.

    Registered with ``session.add_state_manager`` when a result is first opened, so that
    ``close session`` clears it (:meth:`reset_state`) and a session file saves it
    (:meth:`take_snapshot`: the result folder, the current latent and the live map,
    atomic model and markers, by reference) and restores it (:meth:`restore_snapshot`:
    the result is reopened from its folder, and ``gaussianem show`` moves the restored
    map and model)."""

    def __init__(self, session, result: GaussianEMResult | None = None):
        self.session = session
        self.result = result

    def reset_state(self, session) -> None:
        self.result = None

    def include_state(self) -> bool:
        return self.result is not None

    def take_snapshot(self, session, flags) -> dict:
        return {"version": 1, "result": None if self.result is None else result_snapshot(self.result)}

    @classmethod
    def restore_snapshot(cls, session, data) -> "GaussianEMState":
        state = cls(session)
        snap = (data or {}).get("result")
        if snap is None:
            return state
        try:
            state.result = result_from_snapshot(session, snap)
        except (GaussianEMError, OSError, RuntimeError, KeyError, ValueError) as e:
            # the rest of the session still opens; only the link to the result is lost
            session.logger.warning(
                f"GaussianEM: the result {snap.get('outdir')} of this session cannot be reopened ({e}); "
                "its maps and models are restored as they were saved, and 'gaussianem open' makes "
                "it current again")
        else:
            r = state.result
            session.logger.info(f"GaussianEM: restored result {r.outdir}"
                                + ("" if r.volume is None else f", map #{r.volume.id_string}")
                                + ("" if r.structure is None else f", atomic model #{r.structure.id_string}"))
        return state


def session_state(session, create: bool = False) -> GaussianEMState | None:
    """The session's :class:`GaussianEMState` (made and registered with ``create``)."""
    try:
        return session.get_state_manager(STATE_TAG)
    except KeyError:
        if not create:
            return None
    state = GaussianEMState(session)
    session.add_state_manager(STATE_TAG, state)
    return state


def current_result(session) -> GaussianEMResult | None:
    """The session's current result (the last one opened, or restored), or None."""
    state = session_state(session)
    return None if state is None else state.result


def require_result(session) -> GaussianEMResult:
    r = current_result(session)
    if r is None:
        raise UserError("no GaussianEM result is open: use 'gaussianem open OUTDIR' first")
    return r


# ---------------------------------------------------------------------------- a result in a session file

def result_snapshot(gres: GaussianEMResult) -> dict:
    """What a ChimeraX session file keeps of a result (models by reference)."""
    structure = gres.structure if gres.structure_alive() else None
    live = gres.live
    return {
        "version": 1,
        "outdir": gres.outdir,
        "device": str(gres.result.device),
        "name": gres.name,
        "k": int(gres.k),
        "z": None if gres.z is None else [float(v) for v in np.asarray(gres.z).reshape(-1)],
        "volume": gres.volume if gres.volume_alive() else None,
        "structure": structure,
        "base_coords": None if structure is None else np.asarray(live.base, dtype=np.float64),
        "to_model": None if structure is None else live.to_model,
        "reference": None if structure is None or live.reference is None
        else [float(v) for v in live.reference],
        "marker_set": gres.marker_set if gres.marker_set is not None and not gres.marker_set.deleted
        else None,
        "marker_color_by": gres.marker_color_by,
        "map": gres.map_kind,
    }


def result_from_snapshot(session, data) -> GaussianEMResult:
    """The result of :func:`result_snapshot`, reopened from its folder, with the restored
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
    gres = GaussianEMResult(session, result, name=data.get("name"), map_kind=kind)
    gres.k = int(data.get("k") or gres.k)
    volume = data.get("volume")
    if volume is not None and not volume.deleted:
        gres.volume = volume
        watch_closed_volumes(session)
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
