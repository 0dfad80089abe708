"""The Latent Explorer panel's plot tools (a part of :class:`~.panel.LatentPanel`): the
Colour menu (point density, k-means cluster, columns of the particle file), the Select
menu (click, box, lasso), the count of particles in the region drawn, and Save, which
hands the region to the panel's ``on_save_region`` callback. Plain Qt, no ChimeraX.
"""

from __future__ import annotations

import numpy as np
from Qt.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton

from .latent_plot import DENSITY


class PlotSelectionMixin:
    """Colouring and regions of the panel's plot; the panel provides ``plot_coordinates``,
    ``_draw``, ``selector`` (a :class:`~.latent_plot.RegionSelector`), ``color_values``,
    ``on_save_region``, ``region``, ``selected``, ``_color`` and ``_view``."""

    def _build_plot_tools(self, color_options) -> QHBoxLayout:
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Colour"))
        self.color_menu = QComboBox()
        self.color_menu.addItem(DENSITY)
        for name in color_options:
            self.color_menu.addItem(name)
        self.color_menu.currentTextChanged.connect(self.color_by)
        tools.addWidget(self.color_menu)
        tools.addWidget(QLabel("Select"))
        self.select_menu = QComboBox()
        self.select_menu.addItems(["click", "box", "lasso"])
        self.select_menu.setToolTip("click: show a particle; box or lasso: draw a region, then Save its particles")
        self.select_menu.currentTextChanged.connect(self.selector.set_mode)
        tools.addWidget(self.select_menu)
        self.selected_label = QLabel("")
        tools.addWidget(self.selected_label)
        tools.addStretch(1)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save the particles in the region as a .star or .cs file (gaussianem subset)")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save_region)
        tools.addWidget(self.save_button)
        return tools

    def color_by(self, name: str) -> None:
        """Colour the plot by ``name``: "density", or one of ``color_options``."""
        if name != DENSITY and (self.color_values is None or self.color_menu.findText(name) < 0):
            raise ValueError(f"the plot cannot be coloured by {name!r}")
        self._color = name
        if self.color_menu.currentText() != name:
            self.color_menu.blockSignals(True)
            self.color_menu.setCurrentText(name)
            self.color_menu.blockSignals(False)
        self._draw()

    def _region_drawn(self, kind: str, corners) -> None:
        self.select_region(kind, corners)

    def select_region(self, kind: str, corners) -> np.ndarray:
        """Ring the particles in a region of the plot: ``kind`` "box" with (x0, y0, x1, y1),
        or "polygon" with (M, 2) corners (rounded to 4 decimals, as the command gets them);
        returns their indices (the engine's points_in_polygon)."""
        from gaussianem.analysis.selection import box_corners, points_in_polygon
        if kind == "box":
            numbers = tuple(round(float(v), 4) for v in corners)
            region = {"box": numbers, "corners": box_corners(numbers)}
        else:
            c = np.round(np.asarray(corners, dtype=np.float64).reshape(-1, 2), 4)
            region = {"polygon": c, "corners": c}
        self.region = region
        self.selected = np.flatnonzero(points_in_polygon(self.plot_coordinates(), region["corners"]))
        self.selected_label.setText(f"{len(self.selected)} selected")
        self.save_button.setEnabled(len(self.selected) > 0 and self.on_save_region is not None)
        self._draw()
        return self.selected

    def clear_region(self) -> None:
        self.region, self.selected = None, np.zeros(0, dtype=np.int64)
        self.selected_label.setText("")
        self.save_button.setEnabled(False)

    def save_region(self) -> None:
        """Hand the region to ``on_save_region`` (the tool asks for a file and saves)."""
        if self.region is None or self.on_save_region is None:
            return
        region = {k: v for k, v in self.region.items() if k != "corners"}
        self.on_save_region({**region, "plot": self._view})

