"""Keeping ChimeraX's volume updates safe while maps come and go (a ChimeraX 1.7.1
'graphics update' KeyError when a first surface is added to an empty session, and maps
closed while an update is pending)."""

from __future__ import annotations


class _UpdateQueue(set):
    """A set whose ``remove`` of a missing member does nothing (see :func:`watch_closed_volumes`)."""

    def remove(self, item) -> None:
        self.discard(item)


def _guard_volume_updates(session) -> None:
    """Make the session's volume update manager safe against re-entry.

    ChimeraX 1.7's manager keeps two sets of maps waiting for new surfaces and, each
    "graphics update", takes every displayed one out of both with ``set.remove`` and
    computes its surfaces. Computing a map's first surface adds a surface model; when the
    session had no models that makes ChimeraX fit the camera, which fires "graphics
    update" again from inside the loop: the inner pass takes the other waiting maps out,
    and the outer pass then fails with KeyError on them (as after playing a map series,
    closing everything and opening a result), and keeps failing on every later frame, so
    no map surface is computed again. Here the two sets become sets whose ``remove`` of
    a missing map does nothing; they hold the same maps, and ChimeraX's code is unchanged."""
    from chimerax.map.volume import VolumeUpdateManager
    vm = getattr(session, "_volume_update_manager", None)
    if vm is None:                       # made as ChimeraX makes it for the first map
        session._volume_update_manager = vm = VolumeUpdateManager(session)
    for name in ("_volumes_to_update", "_displayed_volumes_to_update"):
        queue = getattr(vm, name, None)
        if isinstance(queue, set) and not isinstance(queue, _UpdateQueue):
            setattr(vm, name, _UpdateQueue(queue))


def watch_closed_volumes(session) -> None:
    """Work around two ChimeraX 1.7 volume-update bugs. Closed maps that were hidden (as
    in a map series) stay queued in the session's volume update manager; closed models
    are removed from its queues as they are closed (touched only with ``discard``). And
    the manager's update loop fails when it is re-entered (:func:`_guard_volume_updates`)."""
    _guard_volume_updates(session)
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
