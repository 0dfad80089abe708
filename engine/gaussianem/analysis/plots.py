"""Plots of a training result (matplotlib, Agg backend): latent-density hexbins,
explained variance and the training's progress from ``log.jsonl`` (the image signal
explained relative to the consensus alone in the same low-pass band, and the
regularising terms). Each PNG is written to a
temporary name beside its destination and renamed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from gaussianem.io.atomic import atomic_output


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save_figure(fig, path) -> None:
    plt = _pyplot()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_density(xy: np.ndarray, path, xlabel: str, ylabel: str, title: str = "",
                 centres: np.ndarray | None = None) -> None:
    """Hexbin density (log counts) of points ``xy`` (N, 2), optionally with numbered
    k-means centres ``centres`` (k, 2). A single column becomes a histogram."""
    plt = _pyplot()
    xy = np.asarray(xy, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    if xy.ndim == 1 or xy.shape[1] == 1:
        ax.hist(xy.reshape(-1), bins=max(10, min(100, len(xy) // 10)), color="#4477aa")
        ax.set_ylabel("particles")
        if centres is not None:
            for i, c in enumerate(np.asarray(centres).reshape(-1)):
                ax.axvline(c, color="k", lw=0.8)
                ax.annotate(str(i), (c, 0), textcoords="offset points", xytext=(2, 2), fontsize=8)
    else:
        grid = int(np.clip(np.sqrt(len(xy)) / 1.5, 10, 60))
        hb = ax.hexbin(xy[:, 0], xy[:, 1], gridsize=grid, bins="log", cmap="viridis", mincnt=1)
        fig.colorbar(hb, ax=ax, label="particles (log scale)", format="%g")
        ax.set_ylabel(ylabel)
        if centres is not None:
            c = np.asarray(centres, dtype=np.float64)
            ax.scatter(c[:, 0], c[:, 1], s=30, c="none", edgecolors="red", linewidths=1.2)
            for i, p in enumerate(c):
                ax.annotate(str(i), p, textcoords="offset points", xytext=(4, 4), fontsize=8, color="red")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    _save_figure(fig, path)


def plot_explained_variance(explained: np.ndarray, path) -> None:
    plt = _pyplot()
    e = np.asarray(explained, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    x = np.arange(1, len(e) + 1)
    ax.bar(x, e, color="#4477aa")
    ax.plot(x, np.cumsum(e), "o-", color="#cc6677", label="cumulative")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(x)
    ax.legend(frameon=False)
    _save_figure(fig, path)


def read_log(path) -> list[dict]:
    """The records of a training ``log.jsonl`` (unreadable lines skipped)."""
    recs = []
    if not os.path.exists(path):
        return recs
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                recs.append(rec)
    return recs


_LOSS_TERMS = ("image", "kl", "distance", "alignment", "embedding", "spacing", "amplitude", "contrastive")
_REGULARISERS = tuple(t for t in _LOSS_TERMS if t != "image")

LOSS_RELATIVE_LABEL = "image signal explained, relative to the consensus alone"
LOSS_CAPTION = ("Left: the image signal the model explains (how far its predictions bring the particle images' "
                "mean squared error down from that of an empty prediction) relative to what the consensus map "
                "alone explains, both in the same low-pass band as the loss. 1 (grey line) is the consensus; above 1 "
                "the latent explains what differs between particles. Noise does not enter this ratio, but it does "
                "enter the raw image loss, which grows while the band widens towards Nyquist (dashed, right axis), "
                "so that is not plotted here. Right: the other loss terms (epoch means), which keep the model "
                "regular.")


@dataclass
class LossCurves:
    """What the loss plot shows, per epoch (all stages of a run in order): ``relative``
    (epoch, image signal the model explains / that the consensus alone explains, in the
    same band: the run health's ``explained``, ``(L_zero - L_model) / (L_zero -
    L_consensus)``) from the health numbers the log records each epoch (runs without
    them: empty), ``band`` (epoch,
    resolution in A of the loss's low-pass band at the epoch's last logged step; None:
    the full band), ``raw_image`` (epoch, image loss), ``terms`` (name -> [(epoch, mean)])
    of the regularising terms, and ``starts`` (epochs after which a later stage begins)."""

    relative: list = field(default_factory=list)
    band: list = field(default_factory=list)
    raw_image: list = field(default_factory=list)
    terms: dict = field(default_factory=dict)
    starts: list = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.relative or self.raw_image or self.terms)


def loss_curves(log_paths) -> LossCurves:
    """:class:`LossCurves` from a training ``log.jsonl`` (or the logs of successive stages,
    e.g. coarse then fine, whose epochs continue)."""
    if isinstance(log_paths, (str, os.PathLike)):
        log_paths = [log_paths]
    logs = [read_log(p) for p in log_paths]
    out = LossCurves()
    out.starts = [min(r["epoch"] for r in recs if "epoch" in r) - 1 for recs in logs[1:]
                  if any("epoch" in r for r in recs)]
    recs = [r for rs in logs for r in rs]
    epochs = {}
    for r in recs:              # a resumed run may log an epoch twice: the last one counts
        if r.get("kind") == "epoch" and "epoch" in r:
            epochs[int(r["epoch"])] = r
    bands = {}
    for r in recs:
        if r.get("kind") == "step" and "epoch" in r and "band" in r:
            bands[int(r["epoch"])] = r["band"]
    for e in sorted(epochs):
        r, h = epochs[e], epochs[e].get("health") or {}
        zero, model, cons = (h.get(k) for k in ("l2_zero", "l2_model", "l2_consensus"))
        if all(isinstance(v, (int, float)) for v in (zero, model, cons)) and zero > cons:
            out.relative.append((e, (float(zero) - float(model)) / (float(zero) - float(cons))))
        if isinstance(r.get("image"), (int, float)):
            out.raw_image.append((e, float(r["image"])))
        if e in bands:
            out.band.append((e, None if bands[e] is None else float(bands[e])))
        for term in _REGULARISERS:
            v = r.get(term)
            if isinstance(v, (int, float)) and v > 0:
                out.terms.setdefault(term, []).append((e, float(v)))
    return out


def plot_losses(log_paths, path) -> LossCurves | bool:
    """The loss plot of a training ``log.jsonl`` (or of successive stages' logs; a dashed
    line marks where each later stage starts), captioned (:data:`LOSS_CAPTION`): left, the
    image signal explained relative to the consensus alone in the same low-pass band, with the band's
    resolution on a second axis; right, the regularising terms (log scale). Returns the
    :class:`LossCurves` plotted, or False (nothing written) when the logs hold no losses."""
    c = loss_curves(log_paths)
    if c.empty:
        return False
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.4))
    if c.relative:
        a1.plot(*zip(*c.relative), "o-", ms=3, color="#332288", label="model ÷ consensus alone")
        a1.axhline(1.0, color="0.6", lw=1)
        a1.set_ylabel(LOSS_RELATIVE_LABEL)
    else:                       # logs from before the health numbers: the raw loss, said to be so
        a1.plot(*zip(*c.raw_image), "o-", ms=3, color="#332288", label="image loss")
        a1.set_ylabel("image loss (raw: grows as the band widens)")
    a1.set_xlabel("epoch")
    a1.set_title("What the latent adds to the consensus map", fontsize=9)
    shown = [(e, b) for e, b in c.band if b is not None]
    if shown:
        a3 = a1.twinx()
        a3.plot(*zip(*shown), "--", color="#999933", lw=1.2, label="loss band (A)")
        a3.set_ylabel("low-pass band of the loss (A)", color="#666622")
        a3.invert_yaxis()           # finer (wider band) upwards
    a1.legend(frameon=False, fontsize=8, loc="lower right")
    for term, pts in c.terms.items():
        a2.plot(*zip(*pts), "o-", ms=3, label=term)
    a2.set_yscale("log")
    a2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain text, no mathtext
    a2.yaxis.set_minor_formatter(NullFormatter())
    a2.set_xlabel("epoch")
    a2.set_ylabel("regularising loss terms (epoch mean)")
    a2.set_title("Regularisers", fontsize=9)
    if a2.lines:
        a2.legend(frameon=False, fontsize=8)
    for x in c.starts:
        for ax in (a1, a2):
            ax.axvline(x, color="0.6", ls="--", lw=1)
    import textwrap
    fig.text(0.01, 0.0, textwrap.fill(LOSS_CAPTION, 150), fontsize=7.5, va="top", ha="left")
    fig.tight_layout()
    _save_figure(fig, path)
    return c


def plot_fsc(freqs: np.ndarray, curves: dict, path, title: str = "") -> None:
    """FSC curves (name -> values over ``freqs`` in 1/Angstrom) with the 0.143 line;
    the x axis in 1/Angstrom with resolution labels."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    styles = {"deformed": ("#cc3311", "-"), "deformed unmasked": ("#cc3311", ":"),
              "rigid": ("#0077bb", "-"), "rigid unmasked": ("#0077bb", ":")}
    for name, vals in curves.items():
        colour, ls = styles.get(name, (None, "-"))
        ax.plot(freqs, vals, ls, color=colour, lw=1.4, label=name)
    ax.axhline(0.143, color="0.4", lw=0.8, ls="--")
    ax.annotate("0.143", (freqs[0], 0.143), textcoords="offset points", xytext=(2, 3), fontsize=8, color="0.3")
    ax.set_xlim(0, float(freqs[-1]))
    ax.set_ylim(-0.1, 1.02)
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("Fourier shell correlation")
    ticks = ax.get_xticks()
    top = ax.secondary_xaxis("top")
    top.set_xticks([t for t in ticks if 0 < t <= freqs[-1]])
    top.set_xticklabels([f"{1 / t:.3g}" for t in ticks if 0 < t <= freqs[-1]])
    top.set_xlabel("resolution (A)")
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    _save_figure(fig, path)
