"""The Latent Explorer's scatter plot, drawn with matplotlib on any Axes (no Qt, no ChimeraX):
the particles coloured by point density, by k-means cluster or by a column of the particle
file, the k-means centres, and a region drawn on it (a box or a lasso, dashed) with the
particles inside it ringed in black.

:class:`RegionSelector` puts matplotlib's RectangleSelector or LassoSelector on the Axes
and hands each finished region, as polygon corners in plot coordinates, to a callback;
which particles lie inside is the engine's rule
(:func:`gaussianem.analysis.selection.points_in_polygon`), the one the
``gaussianem subset box|polygon`` command applies.
"""

from __future__ import annotations

import numpy as np

DENSITY = "density"
KMEANS = "k-means cluster"
MAX_CATEGORIES = 12          # a column with at most this many whole values is coloured by category
MAX_LASSO_CORNERS = 60       # a lasso's path is thinned to this many corners (the command stays short)


def point_density(xy: np.ndarray, bins: int = 64) -> np.ndarray:
    """Each point's count in a ``bins`` x ``bins`` histogram of the points (log scale)."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) == 0:
        return np.zeros(0)
    h, xe, ye = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins)
    ix = np.clip(np.searchsorted(xe, xy[:, 0], side="right") - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(ye, xy[:, 1], side="right") - 1, 0, bins - 1)
    return np.log1p(h[ix, iy])


def is_categorical(values) -> bool:
    """Whether a column reads as categories (optics group, class number): few whole values."""
    v = np.asarray(values, dtype=np.float64)
    return bool(len(v) and np.all(v == np.round(v)) and len(np.unique(v)) <= MAX_CATEGORIES)


def draw_particles(ax, xy, *, values=None, categorical=False, name=DENSITY, centres=None,
                   selected=None, region=None) -> str:
    """Scatter the particles ``xy`` (N, 2) on ``ax``: by point density (``values`` None),
    by category (a legend) or on a continuous scale (viridis); number the k-means
    ``centres`` (k, 2); ring the ``selected`` particles and outline the ``region`` (M, 2).
    Returns a line that says what the colours mean."""
    xy = np.asarray(xy, dtype=np.float64)
    size = float(np.clip(3000.0 / max(len(xy), 1), 2.0, 12.0))
    if values is None:
        c = point_density(xy, bins=int(np.clip(np.sqrt(len(xy)) / 2, 8, 64)))
        order = np.argsort(c, kind="stable")            # densest on top
        ax.scatter(xy[order, 0], xy[order, 1], c=c[order], s=size, cmap="viridis", linewidths=0)
        key = "coloured by point density"
    elif categorical:
        import matplotlib
        v = np.asarray(values, dtype=np.float64)
        cats = np.unique(v)
        cmap = matplotlib.colormaps["tab10" if len(cats) <= 10 else "tab20"]
        for i, cat in enumerate(cats):
            m = v == cat
            ax.scatter(xy[m, 0], xy[m, 1], color=cmap(i % cmap.N), s=size, linewidths=0, label=f"{cat:g}")
        ax.legend(title=name, fontsize=7, title_fontsize=7, markerscale=max(1.0, 12 / size), loc="best",
                  framealpha=0.7)
        key = f"coloured by {name} ({len(cats)} values)"
    else:
        v = np.asarray(values, dtype=np.float64)
        ax.scatter(xy[:, 0], xy[:, 1], c=v, s=size, cmap="viridis", linewidths=0)
        key = f"coloured by {name}, {v.min():.4g} (dark) to {v.max():.4g} (yellow)"
    if centres is not None and len(centres):
        c = np.asarray(centres, dtype=np.float64)
        ax.scatter(c[:, 0], c[:, 1], marker="x", c="black", s=40, linewidths=1.5)
        for i, (x, y) in enumerate(c):
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if selected is not None and len(selected):
        s = xy[np.asarray(selected, dtype=np.int64)]
        ax.scatter(s[:, 0], s[:, 1], s=size * 2.5, facecolors="none", edgecolors="black", linewidths=0.5)
    if region is not None:
        r = np.asarray(region, dtype=np.float64)
        ax.plot(np.r_[r[:, 0], r[0, 0]], np.r_[r[:, 1], r[0, 1]], color="black", lw=1, ls="--")
    return key


def thin_path(vertices, n: int = MAX_LASSO_CORNERS) -> np.ndarray:
    """At most ``n`` corners of a lasso's path, evenly spaced along it."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    if len(v) <= n:
        return v
    return v[np.linspace(0, len(v) - 1, n).round().astype(int)]


class RegionSelector:
    """A box or lasso tool on a matplotlib Axes; ``on_region(kind, corners)`` gets each
    finished region ("box": (x0, y0, x1, y1); "polygon": (M, 2) corners). Mode "click"
    removes the tool (clicks then pick particles)."""

    MODES = ("click", "box", "lasso")

    def __init__(self, ax, on_region):
        self.ax = ax
        self.on_region = on_region
        self.mode = "click"
        self._widget = None

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"selection mode must be one of {', '.join(self.MODES)}, not {mode!r}")
        self.mode = mode
        self.attach()

    def attach(self) -> None:
        """(Re)make the tool on the Axes, e.g. after the Axes was cleared and redrawn."""
        from matplotlib.widgets import LassoSelector, RectangleSelector
        if self._widget is not None:
            self._widget.set_active(False)
            self._widget.disconnect_events()
            self._widget = None
        if self.mode == "box":
            self._widget = RectangleSelector(self.ax, self._box_done, useblit=False, interactive=False,
                                             props=dict(edgecolor="black", fill=False, linestyle="--"))
        elif self.mode == "lasso":
            self._widget = LassoSelector(self.ax, self._lasso_done, useblit=False,
                                         props=dict(color="black", linestyle="--"))

    def _box_done(self, press, release) -> None:
        x0, x1 = sorted((press.xdata, release.xdata))
        y0, y1 = sorted((press.ydata, release.ydata))
        if x1 > x0 and y1 > y0:
            self.on_region("box", (x0, y0, x1, y1))

    def _lasso_done(self, vertices) -> None:
        v = thin_path(vertices)
        if len(v) >= 3:
            self.on_region("polygon", v)
