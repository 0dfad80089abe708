"""The GaussianEM Latent Explorer tool: the panel (panel.py) in a ChimeraX tool window.

Each latent the panel asks for is generated on a worker thread (one worker; requests
that arrive while it is busy are coalesced, so only the newest is generated next) and
shown in the GUI thread by running ``gaussianem show z ...``: every action is a logged,
replayable command, and the command finds the worker's map in the result's cache instead
of generating it again. The GUI thread never waits for the engine.

:class:`LiveUpdater` is that generation path on its own (Qt signals, no ChimeraX
window), so it also runs offscreen in tests and measures slider-to-map latency.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from chimerax.core.errors import UserError
from chimerax.core.tools import ToolInstance
from Qt.QtCore import QObject, Signal

from ..errors import user_errors

TOOL_NAME = "GaussianEM Latent Explorer"


class _Bridge(QObject):
    """Carries the worker's results to the thread this object lives in (the GUI's)."""
    generated = Signal(object)


class LiveUpdater:
    """Generate latents' maps on a worker thread; apply them with ``gaussianem show``.

    ``request(z)`` returns at once. While a map is being generated, newer requests
    replace older ones, so a fast slider drag costs one generation per finished map,
    not one per slider step. ``latencies`` holds the seconds from each applied request
    to its map being shown; ``on_applied(z, seconds)`` is called after each.
    """

    def __init__(self, session, gres, on_applied=None):
        self.session = session
        self.gres = gres
        self.on_applied = on_applied
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._pending = None
        self._busy = False
        self._unapplied = 0            # generated maps whose signal the GUI thread has not handled
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gaussianem-generate")
        self._bridge = _Bridge()
        self._bridge.generated.connect(self._apply)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._busy or self._pending is not None or self._unapplied > 0

    def request(self, z) -> None:
        item = (np.asarray(z, dtype=np.float32).copy(), time.perf_counter())
        with self._lock:
            self._pending = item
            start = not self._busy
            self._busy = True
        if start:
            self._executor.submit(self._work)

    def _work(self) -> None:          # worker thread: engine only, no ChimeraX
        while True:
            with self._lock:
                item, self._pending = self._pending, None
                if item is None:
                    self._busy = False
                    return
            z, t0 = item
            try:
                out = (self.gres.generate(z), t0, None)
            except Exception as e:  # noqa: BLE001 (reported in the GUI thread)
                out = (None, t0, e)
            with self._lock:
                self._unapplied += 1
            self._bridge.generated.emit(out)

    def _apply(self, item) -> None:   # GUI thread
        try:
            self._show(item)
        finally:
            with self._lock:
                self._unapplied -= 1

    def _show(self, item) -> None:
        gen, t0, error = item
        if error is not None:
            self.session.logger.error(f"GaussianEM: cannot generate that latent: {error}")
            return
        from chimerax.core.commands import run

        from ..generation import format_latent
        from ..session_state import current_result
        if current_result(self.session) is not self.gres:
            return                     # another result was opened meanwhile
        run(self.session, f"gaussianem show z {format_latent(gen.z)}")
        dt = time.perf_counter() - t0
        self.latencies.append(dt)
        if self.on_applied is not None:
            self.on_applied(gen.z, dt)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@user_errors
def make_panel(gres, on_latent, parent=None, on_save_region=None, on_fit_domains=None):
    """A :class:`~.panel.LatentPanel` for a result (PCA, k-means centres, UMAP if any),
    starting at the medoid particle (the state ``gaussianem open`` shows), its sliders
    over the particles' 5th to 95th percentiles along each PC; its plot can be coloured by
    k-means cluster and by the particle file's columns (:func:`plot_colors`)."""
    from .panel import LatentPanel
    pca = gres.pca()
    try:
        centres = gres.kmeans().centre_index
    except UserError:
        centres = None
    ranges = [gres.pc_range(k + 1) for k in range(len(pca.components))]
    options, values = plot_colors(gres, with_kmeans=centres is not None)
    return LatentPanel(gres.result.z, pca, centre_index=centres, umap=gres.umap(),
                       split=gres.split, on_latent=on_latent, home_particle=gres.medoid,
                       pc_ranges=ranges, parent=parent, color_options=options, color_values=values,
                       on_save_region=on_save_region,
                       on_fit_domains=on_fit_domains if gres.structure is not None else None)


def plot_colors(gres, with_kmeans: bool = True):
    """(names, values(name) -> (per-particle values, categorical)) the explorer's plot can be
    coloured by: the k-means cluster (k = the session's), then the particle file's
    columns (defocus, optics group, class number, ...; none when the file cannot be read)."""
    from gaussianem.errors import GaussianEMError

    from .latent_plot import KMEANS, is_categorical
    try:
        columns = gres.particle_columns()
    except (GaussianEMError, UserError, OSError) as e:
        gres.session.logger.info(f"GaussianEM: the explorer's plot is not coloured by the particle file's "
                                 f"columns ({e})")
        columns = {}
    names = ([KMEANS] if with_kmeans else []) + list(columns)

    def values(name):
        if name == KMEANS:
            return gres.kmeans().labels, True
        return columns[name], is_categorical(columns[name])
    return names, values


def region_command(region: dict, save: str) -> str:
    """The ``gaussianem subset`` command that saves a region drawn on the explorer's plot."""
    from chimerax.core.commands import quote_path_if_necessary as quote
    def numbers(values) -> str:               # 4 decimals, as the panel rounds a region's corners
        return ",".join(f"{float(v):.4f}".rstrip("0").rstrip(".") for v in np.asarray(values).ravel())
    where = f"box {numbers(region['box'])}" if "box" in region else f"polygon {numbers(region['polygon'])}"
    return f"gaussianem subset {where} plot {region.get('plot', 'pca')} save {quote(save)}"


class LatentExplorer(ToolInstance):
    """The tool window: panel + live updater for the session's current result."""

    SESSION_ENDURING = False
    SESSION_SAVE = False          # the result is restored with a session; the window is not
    help = "help:user/commands/gaussianem.html#explorer"

    def __init__(self, session, tool_name=TOOL_NAME, result=None):
        if not session.ui.is_gui:
            raise UserError("the GaussianEM Latent Explorer needs the ChimeraX window; without it "
                            "use the commands ('gaussianem show', 'gaussianem trajectory', ...)")
        from ..session_state import require_result
        gres = result or require_result(session)
        super().__init__(session, tool_name)
        from chimerax.ui import MainToolWindow
        from Qt.QtWidgets import QVBoxLayout
        self.tool_window = MainToolWindow(self)
        self._layout = QVBoxLayout(self.tool_window.ui_area)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.panel = self.updater = None
        self.set_result(gres)
        self.tool_window.manage(placement="side")

    def set_result(self, gres) -> None:
        """Show another result (after 'gaussianem open')."""
        if self.updater is not None:
            self.updater.close()
        if self.panel is not None:
            self._layout.removeWidget(self.panel)
            self.panel.deleteLater()
        self.gres = gres
        self.updater = LiveUpdater(self.session, gres, on_applied=self._applied)
        self.panel = make_panel(gres, self.updater.request, parent=self.tool_window.ui_area,
                                on_save_region=self._save_region, on_fit_domains=self._fit_domains)
        self._layout.addWidget(self.panel)

    def _save_region(self, region: dict) -> None:
        """Save the region drawn on the plot: ask for a file, then ``gaussianem subset``."""
        from chimerax.core.commands import run
        from Qt.QtWidgets import QFileDialog
        path, _ = QFileDialog.getSaveFileName(self.tool_window.ui_area, "Save the particles in the region",
                                              os.path.join(self.gres.outdir, "selected.star"),
                                              "RELION particles (*.star);;cryoSPARC particles (*.cs)")
        if path:
            run(self.session, region_command(region, path))

    def _fit_domains(self) -> None:
        """Fit domains: ``gaussianem fitdomains`` at the state shown (a logged command)."""
        from chimerax.core.commands import run
        run(self.session, "gaussianem fitdomains")

    def _applied(self, z, seconds) -> None:
        self.session.logger.status(f"GaussianEM: map updated in {seconds * 1000:.0f} ms")

    def delete(self) -> None:
        if self.updater is not None:
            self.updater.close()
        super().delete()


def show_explorer(session, gres) -> LatentExplorer | None:
    """Show the explorer for ``gres`` (reusing an open one); None without a GUI."""
    if not session.ui.is_gui:
        return None
    for tool in session.tools.list():
        if isinstance(tool, LatentExplorer):
            tool.set_result(gres)
            tool.display(True)
            return tool
    return LatentExplorer(session, TOOL_NAME, gres)
