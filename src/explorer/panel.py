"""The Latent Explorer's panel: a plain Qt widget that knows nothing of ChimeraX.

:class:`LatentPanel` shows the particles' latents (PCA, or the UMAP written by
``gaussianem analyze``) as a density-coloured scatter plot with the k-means centres
marked, sliders along the first principal components (in standard deviations, over the
particles' range along each when ``pc_ranges`` gives it), play and loop along a component,
and, for a split latent, a composition switch. Every action ends
in one call, ``on_latent(z)``, with the latent to show; the tool
(:mod:`.tool`) turns that into a ``gaussianem show`` command. Because it takes data
and a callback only, it is built and tested without ChimeraX (offscreen Qt).

Slider semantics: moving PC k's slider to v moves the current latent along PC k only,
to score v standard deviations, keeping its other components; from the mean latent
that is exactly ``pca.latent(k, v)``. Clicking a point picks that particle's latent.
With ``home_particle`` (the tool gives the medoid particle) the panel starts at that
particle's latent, and its Medoid button returns there; without, at the mean (Mean).
With the composition switch off, the compositional part of every latent sent is held at
the particles' mean, so only conformational change is shown.

The plot (drawn by :mod:`.latent_plot`) is coloured by point density, by k-means cluster
or by a column of the particle file (``color_values(name)``); with Select set to Box or
Lasso, a region drawn on it rings the particles inside, and Save hands the region to
``on_save_region(region)`` (the tool saves it with ``gaussianem subset box|polygon``).
"""

from __future__ import annotations

import numpy as np
from Qt.QtCore import Qt
from Qt.QtWidgets import (QCheckBox, QComboBox, QGridLayout, QHBoxLayout, QLabel,
                          QSizePolicy, QSlider, QVBoxLayout, QWidget)

from .latent_plot import DENSITY, RegionSelector, draw_particles
from .panel_player import SLIDER_TICKS_PER_SD, PlayerMixin
from .panel_selection import PlotSelectionMixin

class LatentPanel(PlayerMixin, PlotSelectionMixin, QWidget):
    """Latent-space plot, PC sliders and player.

    ``z`` (N, zdim) latents; ``pca`` with ``mean``, ``components`` (k, zdim), ``sd``,
    ``scores`` (N, k), ``explained`` and ``latent(pc, value)`` (the engine's PCA);
    ``centre_index``: particles at the k-means centres; ``umap``: (N, 2) or None;
    ``split``: (zdim_conf, zdim_comp) or None; ``on_latent(z)``: called with each latent
    to show; ``home_particle``: the particle to start from and return to (else the mean);
    ``pc_ranges``: (low, high) sd per PC for its slider and player (the tool gives the
    particles' 5th-95th percentiles), else +-``slider_range_sd`` and +-``play_range_sd``;
    ``color_options``: names the plot can be coloured by besides density (k-means first
    when there are centres), ``color_values(name)``: (values (N,), categorical) for one;
    ``on_save_region(region)``: called by Save with ``{"box": (x0, y0, x1, y1)}`` or
    ``{"polygon": corners}`` and ``"plot"``: "pca" or "umap"; ``on_fit_domains()``: called
    by Fit domains (shown only when given; the tool runs ``gaussianem fitdomains``).
    """

    def __init__(self, z, pca, *, centre_index=None, umap=None, split=None, on_latent=None,
                 home_particle=None, pc_ranges=None, color_options=(), color_values=None, on_save_region=None,
                 on_fit_domains=None, n_sliders: int = 3, slider_range_sd: float = 3.0, play_range_sd: float = 2.0,
                 play_step_sd: float = 0.2, play_interval_ms: int = 100, parent=None):
        super().__init__(parent)
        self.z = np.asarray(z, dtype=np.float32)
        self.pca = pca
        self.centre_index = None if centre_index is None else np.asarray(centre_index, dtype=np.int64)
        self.umap = umap
        self.split = split
        self.on_latent = on_latent
        self.play_range_sd = float(play_range_sd)
        self.play_step_sd = float(play_step_sd)
        self.home_particle = None if home_particle is None else int(home_particle)
        self._pc_ranges = pc_ranges
        self._mean = np.asarray(pca.mean, dtype=np.float32)
        self.current = self._home()
        self.current_particle = self.home_particle
        self._n_pcs = len(pca.components)
        self._view = "pca"
        self._play_direction = 1
        self.color_values = color_values
        self.on_save_region = on_save_region
        self._color = DENSITY
        self.region = None              # {"box": ...} or {"polygon": ...}, and "corners" (M, 2)
        self.selected = np.zeros(0, dtype=np.int64)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        top = QHBoxLayout()
        top.addWidget(QLabel("Plot"))
        self.view_menu = QComboBox()
        self.view_menu.addItem("PCA")
        if umap is not None:
            self.view_menu.addItem("UMAP")
        self.view_menu.currentTextChanged.connect(lambda t: self.set_view(t.lower()))
        top.addWidget(self.view_menu)
        top.addStretch(1)
        self.info = QLabel("")
        top.addWidget(self.info)
        layout.addLayout(top)

        self._build_plot(layout)

        layout.addLayout(self._build_plot_tools(color_options))

        grid = QGridLayout()
        self.sliders: list[QSlider] = []
        self._slider_labels: list[QLabel] = []
        #: (low, high) ticks of each slider; the player steps between them
        self.slider_ticks: list[tuple[int, int]] = []
        ticks = int(round(slider_range_sd * SLIDER_TICKS_PER_SD))
        for k in range(min(n_sliders, self._n_pcs)):
            pct = 100 * float(pca.explained[k]) if len(pca.explained) > k else 0.0
            grid.addWidget(QLabel(f"{'z ' if split else ''}PC{k + 1} ({pct:.0f}%)"), k, 0)
            s = QSlider(Qt.Orientation.Horizontal)
            if pc_ranges is not None:           # outward to whole ticks, always through 0 (the mean)
                lo, hi = pc_ranges[k]
                rng = (min(0, int(np.floor(lo * SLIDER_TICKS_PER_SD + 1e-6))),
                       max(0, int(np.ceil(hi * SLIDER_TICKS_PER_SD - 1e-6))))
                s.setToolTip(f"PC{k + 1} from {lo:+.2f} to {hi:+.2f} sd: the particles' 5th to 95th "
                             "percentiles")
            else:
                rng = (-ticks, ticks)
            s.setRange(*rng)
            s.setValue(0)
            self.slider_ticks.append(rng)
            s.valueChanged.connect(lambda v, pc=k + 1: self._slider_moved(pc, v))
            grid.addWidget(s, k, 1)
            label = QLabel("+0.0 sd")
            label.setMinimumWidth(60)
            grid.addWidget(label, k, 2)
            self.sliders.append(s)
            self._slider_labels.append(label)
        layout.addLayout(grid)

        layout.addLayout(self._build_player(on_fit_domains))

        self.composition = None
        if split is not None:
            self.composition = QCheckBox("Vary composition")
            self.composition.setToolTip(
                f"The latent has {split[0]} conformational and {split[1]} compositional values. "
                "Off: the compositional part is held at the particles' mean, so only "
                "conformational change is shown.")
            self.composition.setChecked(True)
            self.composition.toggled.connect(lambda _on: self._emit())
            layout.addWidget(self.composition)

        self._start_timer(play_interval_ms)
        self._sync_sliders()
        self._draw()

    # ------------------------------------------------------------------ plot
    def _build_plot(self, layout) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        self.figure = Figure(figsize=(4, 3.5), dpi=90, layout="tight")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(240)
        self.axes = self.figure.add_subplot(111)
        self._background = None
        self._current_artist = None
        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.canvas.mpl_connect("draw_event", self._on_draw_event)
        self.selector = RegionSelector(self.axes, self._region_drawn)
        layout.addWidget(self.canvas, 1)

    def plot_coordinates(self, view: str | None = None) -> np.ndarray:
        """(N, 2) coordinates of the particles in the plot: PC1, PC2 scores in sd, or UMAP."""
        view = view or self._view
        if view == "umap" and self.umap is not None:
            return np.asarray(self.umap, dtype=np.float64)
        s = np.asarray(self.pca.scores, dtype=np.float64)[:, :2] / np.asarray(self.pca.sd)[:2]
        return s if s.shape[1] == 2 else np.column_stack([s[:, 0], np.zeros(len(s))])

    def _current_xy(self):
        if self._view == "umap":
            if self.current_particle is None or self.umap is None:
                return None
            return np.asarray(self.umap[self.current_particle], dtype=np.float64)
        s = (self.current - self._mean) @ np.asarray(self.pca.components).T / np.asarray(self.pca.sd)
        return np.array([s[0], s[1] if len(s) > 1 else 0.0])

    def _draw(self) -> None:
        ax = self.axes
        ax.clear()
        xy = self.plot_coordinates()
        values, categorical = (None, False) if self._color == DENSITY else self.color_values(self._color)
        centres = None if self.centre_index is None or not len(self.centre_index) else xy[self.centre_index]
        key = draw_particles(ax, xy, values=values, categorical=categorical, name=self._color, centres=centres,
                             selected=self.selected,
                             region=None if self.region is None else self.region["corners"])
        self.selector.attach()
        # The current-latent star is drawn on its own (animated, blitted over a saved
        # background), so moving it does not re-render the scatter plot.
        cur = self._current_xy()
        (self._current_artist,) = ax.plot([], [], marker="*", color="red", markersize=14,
                                          markeredgecolor="black", linestyle="", animated=True)
        if cur is not None:
            self._current_artist.set_data([cur[0]], [cur[1]])
        if self._view == "umap":
            ax.set_xlabel("UMAP1")
            ax.set_ylabel("UMAP2")
        else:
            ax.set_xlabel(self.axis_label(1))
            ax.set_ylabel(self.axis_label(2) if self._n_pcs > 1 else "")
        self.info.setText(f"{len(xy)} particles, {key}")
        self.canvas.draw_idle()

    def axis_label(self, pc: int) -> str:
        """The plot's axis for PC ``pc``: of all of z ("z PC1 (sd)" when the latent is
        split into conf and comp parts, whose PCs the commands name "conf PC1")."""
        return f"{'z ' if self.split else ''}PC{pc} (sd)"

    def _on_draw_event(self, _event) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        if self._current_artist is not None:
            self.axes.draw_artist(self._current_artist)

    def _move_current_marker(self) -> None:
        cur = self._current_xy()
        artist = self._current_artist
        if artist is None:
            return
        artist.set_data([], []) if cur is None else artist.set_data([cur[0]], [cur[1]])
        if self._background is None:
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self._background)
        self.axes.draw_artist(artist)
        self.canvas.blit(self.figure.bbox)

    def set_view(self, view: str) -> None:
        """'pca' or 'umap' (when the result has one)."""
        if view not in ("pca", "umap") or (view == "umap" and self.umap is None):
            raise ValueError(f"no {view!r} view in this panel")
        self._view = view
        self.clear_region()             # drawn in the other plot's coordinates
        self._draw()

    def _on_press(self, event) -> None:
        if event.inaxes is not self.axes or event.xdata is None or event.button not in (1, None) \
                or self.selector.mode != "click":
            return
        self.pick_at(event.xdata, event.ydata)

    def nearest_particle(self, x: float, y: float) -> int:
        """The particle nearest to plot position (x, y), distances scaled by the axis spans."""
        xy = self.plot_coordinates()
        span = np.maximum(np.ptp(xy, axis=0), 1e-12)
        d = (((xy - np.array([x, y])) / span) ** 2).sum(1)
        return int(np.argmin(d))

    def pick_at(self, x: float, y: float) -> int:
        i = self.nearest_particle(x, y)
        self.pick_particle(i)
        return i

    # ------------------------------------------------------------------ latents
    def pick_particle(self, index: int) -> None:
        """Show particle ``index``'s latent."""
        self.current_particle = int(index)
        self.current = self.z[int(index)].copy()
        self._sync_sliders()
        self._move_current_marker()
        self._emit()

    def set_pc_value(self, pc: int, value_sd: float) -> None:
        """Move PC ``pc``'s slider (1-based) to ``value_sd`` (rounded to 0.1 sd)."""
        self.sliders[pc - 1].setValue(int(round(value_sd * SLIDER_TICKS_PER_SD)))

    def pc_value(self, pc: int) -> float:
        return self.sliders[pc - 1].value() / SLIDER_TICKS_PER_SD

    def _home(self) -> np.ndarray:
        if self.home_particle is None:
            return self._mean.copy()
        return self.z[self.home_particle].copy()

    def reset(self) -> None:
        """Back to the home particle's latent (the medoid in the tool), else the mean."""
        self.current = self._home()
        self.current_particle = self.home_particle
        self._sync_sliders()
        self._move_current_marker()
        self._emit()

    def _score(self, pc: int) -> float:
        comp = np.asarray(self.pca.components[pc - 1], dtype=np.float64)
        return float((self.current - self._mean) @ comp / self.pca.sd[pc - 1])

    def _slider_moved(self, pc: int, ticks: int) -> None:
        value = ticks / SLIDER_TICKS_PER_SD
        self._slider_labels[pc - 1].setText(f"{value:+.1f} sd")
        if abs(self._score(pc) - value) < 1e-6:
            return
        comp = np.asarray(self.pca.components[pc - 1], dtype=np.float64)
        if np.allclose(self.current, self._mean):
            self.current = np.asarray(self.pca.latent(pc, value), dtype=np.float32)
        else:
            delta = (value - self._score(pc)) * float(self.pca.sd[pc - 1])
            self.current = (self.current + delta * comp).astype(np.float32)
        self.current_particle = None
        self._move_current_marker()
        self._emit()

    def _sync_sliders(self) -> None:
        for k, s in enumerate(self.sliders):
            v = int(round(self._score(k + 1) * SLIDER_TICKS_PER_SD))
            s.blockSignals(True)
            s.setValue(max(s.minimum(), min(s.maximum(), v)))
            s.blockSignals(False)
            self._slider_labels[k].setText(f"{self._score(k + 1):+.1f} sd")

    def latent_to_send(self) -> np.ndarray:
        """The current latent as sent: with the mean composition when composition is off."""
        z = self.current.copy()
        if self.split is not None and self.composition is not None and not self.composition.isChecked():
            z[self.split[0]:] = self._mean[self.split[0]:]
        return z

    def _emit(self) -> None:
        if self.on_latent is not None:
            self.on_latent(self.latent_to_send())
