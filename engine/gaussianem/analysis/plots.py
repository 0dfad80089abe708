"""Plots of a training result (matplotlib, Agg backend): latent-density hexbins,
explained variance and loss curves from ``log.jsonl``. Each PNG is written to a
temporary name beside its destination and renamed."""

from __future__ import annotations

import json
import os

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


_LOSS_TERMS = ("image", "kl", "distance", "alignment", "embedding", "spacing", "contrastive")


def plot_losses(log_paths, path) -> bool:
    """Loss curves from a training ``log.jsonl`` (or the logs of successive stages, e.g.
    coarse then fine, whose epochs continue; a dashed line marks where each later stage
    starts): the total loss per logged step and per epoch (left), and the epoch means of
    each term, log scale (right). False (nothing written) when the logs hold no losses."""
    if isinstance(log_paths, (str, os.PathLike)):
        log_paths = [log_paths]
    logs = [read_log(p) for p in log_paths]
    starts = [min(r["epoch"] for r in recs if "epoch" in r) - 1 for recs in logs[1:]
              if any("epoch" in r for r in recs)]
    recs = [r for rs in logs for r in rs]
    steps = [r for r in recs if r.get("kind") == "step" and "loss" in r]
    epochs = [r for r in recs if r.get("kind") == "epoch" and "total" in r]
    if not steps and not epochs:
        return False
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if steps:
        # x in epochs: epoch - 1 + step / (largest step logged in that epoch)
        last = {}
        for r in steps:
            last[r["epoch"]] = max(last.get(r["epoch"], 1), r.get("step", 1))
        seen, xs, ys = set(), [], []
        for r in steps:
            key = (r["epoch"], r.get("step"))
            if key in seen:     # a resumed run may log a step twice
                continue
            seen.add(key)
            xs.append(r["epoch"] - 1 + r.get("step", 1) / last[r["epoch"]])
            ys.append(r["loss"])
        a1.plot(xs, ys, color="#88ccee", lw=1, label="step")
    if epochs:
        a1.plot([r["epoch"] for r in epochs], [r["total"] for r in epochs], "o-", color="#332288",
                label="epoch mean")
    a1.set_xlabel("epoch")
    a1.set_ylabel("total loss")
    a1.legend(frameon=False)
    for term in _LOSS_TERMS:
        pts = [(r["epoch"], r[term]) for r in epochs if isinstance(r.get(term), (int, float)) and r[term] > 0]
        if pts:
            a2.plot(*zip(*pts), "o-", ms=3, label=term)
    for x in starts:
        for ax in (a1, a2):
            ax.axvline(x, color="0.6", ls="--", lw=1)
    a2.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter
    a2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain text, no mathtext
    a2.yaxis.set_minor_formatter(NullFormatter())
    a2.set_xlabel("epoch")
    a2.set_ylabel("loss term (epoch mean)")
    if a2.lines:
        a2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    return True


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
