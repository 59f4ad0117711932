"""Plotting for the whole series: one style, byte-stable export, reusable figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from helpers.config import settings

STYLE = {
    "figure.figsize": (6.4, 4.0), "figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.6, "legend.frameon": False,
    "axes.prop_cycle": mpl.cycler(color=["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]),
    # Deterministic files: fixed ids in SVG, text kept as paths (no font lookups).
    "svg.hashsalt": "backprop-series", "svg.fonttype": "path",
}
# No dates or software versions in the files, so the same code gives the same bytes.
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
             "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}
mpl.rcParams.update(STYLE)


def savefig(fig: plt.Figure, name: str, formats: Sequence[str] = ("png", "svg", "pdf")) -> list[Path]:
    """Write ``fig`` to ``<figures_dir>/<name>.<format>``, byte-identical for the same code; returns the paths."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"figure name {name!r} must be a plain file stem like '01_loss_curves'.")
    out = settings().figures_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    with mpl.rc_context(STYLE):
        for fmt, path in zip(formats, paths):
            tmp = path.with_name(path.name + ".tmp")
            fig.savefig(tmp, format=fmt, metadata=_METADATA.get(fmt))
            tmp.replace(path)
    return paths


def _finish(fig: plt.Figure, title: str | None = None) -> plt.Figure:
    """``fig`` with its title (if any) and a tight layout."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(histories: Mapping[str, Mapping[str, Sequence[float]]] | Mapping[str, Sequence[float]],
                metrics: Sequence[str] | None = None, title: str | None = None) -> plt.Figure:
    """One panel per key suffix (``metrics``, default all), one colour per run: ``histories`` is one history
    ``{"train_loss": [...], ...}`` or ``{run_name: history}``; solid for train, dashed for validation/test."""
    if histories and all(isinstance(v, Sequence) for v in histories.values()):
        histories = {"": histories}
    panels = list(metrics or dict.fromkeys(key.rpartition("_")[2] for h in histories.values() for key in h))
    if not panels:
        raise ValueError("plot_curves got no series; expected keys like 'train_loss', 'val_acc'.")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for i, (run, hist) in enumerate(histories.items()):
            for key, values in hist.items():
                split, _, suffix = key.rpartition("_")
                if metric in (suffix, key):
                    label = " ".join(p for p in (run, split) if p) or key
                    ax.plot(np.arange(1, len(values) + 1), values, "-" if split in ("", "train") else "--",
                            color=f"C{i}", label=label)
        ax.set(xlabel="epoch", ylabel=metric)
        ax.legend(fontsize=8)
    return _finish(fig, title)


def plot_confusion(cm, classes: Sequence[str], title: str | None = None) -> plt.Figure:
    """Confusion matrix ``cm`` (C x C, rows = true, columns = predicted) with counts."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"cm must be {len(classes)}x{len(classes)} for {len(classes)} classes, got {cm.shape}.")
    size = max(3.5, 0.55 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(cm, cmap="Blues")
    ax.grid(False)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:d}" if np.issubdtype(cm.dtype, np.integer) else f"{v:.2f}",
                ha="center", va="center", fontsize=8, color="white" if v > threshold else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _finish(fig)


def image_grid(images, titles: Sequence[str] | None = None, ncols: int = 8, title: str | None = None,
               rescale: bool = True) -> plt.Figure:
    """``images`` (N x H x W or N x C x H x W, C = 1 or 3) in a grid, ``titles``: N strings. ``rescale``: min-max
    scale each image; ``False``: true colours (floats clipped to [0, 1], uint8 / 255)."""
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if arr.ndim == 4:
        arr = arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    if arr.ndim not in (3, 4) or len(arr) == 0:
        raise ValueError(f"images must be N x H x W or N x C x H x W with N >= 1, got {np.shape(images)}.")
    if titles is not None and len(titles) != len(arr):
        raise ValueError(f"got {len(titles)} titles for {len(arr)} images.")
    ncols = min(ncols, len(arr))
    nrows = -(-len(arr) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.3 * nrows + (0.3 if title else 0)), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(arr):
            continue
        img = arr[k].astype(np.float64)
        if rescale:
            lo, hi = img.min(), img.max()
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        else:
            img = np.clip(img / 255.0 if arr.dtype == np.uint8 else img, 0.0, 1.0)
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")  # img is in [0, 1]
        if titles is not None:
            ax.set_title(titles[k], fontsize=7)
    return _finish(fig, title)


def plot_sweep_curves(records: Sequence[Mapping], title: str | None = None, highlight: str | None = None):
    """Validation accuracy and loss per epoch, one line per sweep record; the one keyed ``highlight`` in bold."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.6))
    for r, color in zip(records, plt.get_cmap("viridis")(np.linspace(0, 1, len(records)))):
        bold = r["key"] == highlight
        style = {"color": "#d62728" if bold else color, "linewidth": 2.8 if bold else 1.1, "zorder": 3 if bold else 2}
        epochs = range(1, len(r["history"]["val_acc"]) + 1)
        ax_acc.plot(epochs, r["history"]["val_acc"], label=r["label"] + (" (selected)" if bold else ""), **style)
        ax_loss.plot(epochs, r["history"]["val_loss"], **style)
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="validation loss", yscale="log")
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="best first")
    return _finish(fig, title)


def plot_generalization_gap(records: Sequence[Mapping], title: str | None = None):
    """Final train and validation accuracy per sweep record (in the order given) and their gap."""
    train_acc, val_acc = (np.array([r["final"][k] for r in records]) for k in ("train_acc", "val_acc"))
    y = np.arange(len(records))
    fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(11, 0.28 * len(records) + 1.6), sharey=True,
                                     gridspec_kw={"width_ratios": (2, 1)})
    ax.scatter(train_acc, y, marker="o", label="train (running mean of last epoch)", zorder=3)
    ax.scatter(val_acc, y, marker="s", label="validation", zorder=3)
    ax.hlines(y, val_acc, train_acc, color="grey", linewidth=1)
    ax.set(yticks=y, xlabel="final accuracy")
    ax.set_yticklabels([r["label"] for r in records], fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax_gap.barh(y, train_acc - val_acc, color="#ff7f0e")
    ax_gap.set(xlabel="train - validation accuracy")
    return _finish(fig, title)


def best_so_far(trials: Sequence[tuple[float | None, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Best final value after each trial and the epochs trained so far, for ``trials`` of (final value, or None
    for a pruned run; epochs it trained, pruned ones included). Returns two arrays of length T (NaN: none yet)."""
    values = np.array([np.nan if v is None else v for v, _ in trials], dtype=float)
    best = np.fmax.accumulate(values) if len(values) else values
    return best, np.cumsum([e for _, e in trials])


def plot_search_progress(searches: Mapping[str, Sequence[tuple[float | None, int]]], title: str | None = None,
                         ylabel: str = "best validation accuracy"):
    """Best value so far against trials and against epochs trained, one line per search (see :func:`best_so_far`);
    a pruned trial is a hollow marker."""
    fig, (ax_trials, ax_epochs) = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True)
    for name, trials in searches.items():
        best, epochs = best_so_far(trials)
        pruned = np.array([v is None for v, _ in trials], dtype=bool)
        line, = ax_trials.plot(np.arange(1, len(best) + 1), best, drawstyle="steps-post", label=name)
        ax_epochs.plot(epochs, best, drawstyle="steps-post", color=line.get_color())
        ax_epochs.scatter(epochs[pruned], best[pruned], facecolors="none", edgecolors=line.get_color(), s=18)
    ax_trials.set(xlabel="trials", ylabel=ylabel)
    ax_epochs.set(xlabel="epochs trained (pruned runs' epochs counted; hollow: pruned)")
    ax_trials.legend()
    return _finish(fig, title)


def plot_reliability(calibration: Mapping, title: str | None = None):
    """Reliability diagram of ``helpers.train.calibration``: accuracy, mean confidence and count per bin."""
    conf, acc, count = (np.asarray(calibration[k], dtype=float) for k in ("confidence", "accuracy", "count"))
    edges = np.linspace(0, 1, len(count) + 1)
    bars = {"x": edges[:-1], "width": np.diff(edges), "align": "edge", "edgecolor": "black"}
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.8, 5.6), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.bar(height=np.nan_to_num(acc), alpha=0.6, label="accuracy in bin", **bars)
    ax.plot((edges[:-1] + edges[1:]) / 2, conf, "o", color="#d62728",
            label="mean confidence in bin (gap to the bar: miscalibration)")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"ECE = {calibration['ece']:.3f}")
    ax.legend(fontsize=8, loc="upper left")
    ax_n.bar(height=count, color="#1f77b4", **bars)
    ax_n.set(xlabel="confidence (top predicted probability)", ylabel="predictions", yscale="log")
    return _finish(fig, title)
