"""Figures of the experiments beyond the reference (notebooks 08-12), in the style of ``plots``.

Kept beside ``plots.py`` rather than inside it only because that file is being edited concurrently;
the style (seaborn theme, one function per figure, the figure returned) is the same.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots  # noqa: F401  (applies the study's seaborn theme)


def data_efficiency_curves(summary: pd.DataFrame, title: str):
    """Test accuracy (%) against training images (log axis), mean +- std over seeds, each curve's optimiser
    steps per point in its legend; ``summary`` has columns label, train_images, mean, std, seeds, steps
    (accuracies as fractions)."""
    fig, ax = plt.subplots(figsize=(11, 4.6))
    for i, (label, g) in enumerate(summary.groupby("label", sort=False)):
        g = g.sort_values("train_images")
        lo, hi = int(g.steps.min()), int(g.steps.max())
        steps = f"{lo:,} steps" if lo == hi else f"{lo:,}-{hi:,} steps"
        ax.errorbar(g.train_images, 100 * g["mean"], yerr=100 * g["std"].fillna(0), marker="o", capsize=3,
                    label=f"{label} ({int(g.seeds.min())}+ seeds; {steps})", color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images (stratified)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def reliability_diagrams(tables: dict[str, dict[str, pd.DataFrame]], title: str):
    """One panel per model: per-bin accuracy against confidence, before and after temperature
    scaling; ``tables`` = {label: {"before": reliability table, "after": reliability table}}."""
    fig, axes = plt.subplots(1, len(tables), figsize=(3.6 * len(tables), 3.6), squeeze=False)
    for ax, (label, t) in zip(axes[0], tables.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        for i, (which, table) in enumerate(t.items()):
            filled = table[table.images > 0]
            mid = (filled.lower + filled.upper) / 2
            ax.bar(mid + (i - 0.5) * 0.025, filled.accuracy - mid, bottom=mid, width=0.025, alpha=0.7,
                   label=f"{which}: accuracy - bin centre", color=f"C{i}")
            ax.plot(filled.confidence, filled.accuracy, marker="o", ms=3, color=f"C{i}", label=f"{which}")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_xlabel("confidence"), ax.set_title(label, fontsize=10)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def robustness_curves(table: pd.DataFrame, labels: dict[str, str], title: str):
    """Accuracy (%) against severity, one panel per corruption, one line per model; severity 0 is
    the clean subset. ``table`` has columns model, corruption, severity, acc."""
    corruptions = [c for c in table.corruption.unique() if c != "clean"]
    fig, axes = plt.subplots(1, len(corruptions), figsize=(3.2 * len(corruptions), 3.4), sharey=True, squeeze=False)
    clean = table[table.corruption == "clean"].set_index("model").acc
    for ax, c in zip(axes[0], corruptions):
        for i, (model, g) in enumerate(table[table.corruption == c].groupby("model", sort=False)):
            g = g.sort_values("severity")
            ax.plot([0, *g.severity], [100 * clean[model], *(100 * g.acc)], marker="o", ms=3,
                    label=labels.get(model, model), color=f"C{i}")
        ax.set_title(c.replace("_", " "), fontsize=10)
        ax.set_xlabel("severity (0 = clean)")
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def resolution_panels(table: pd.DataFrame, title: str):
    """Linear-probe accuracy and feature-extraction speed against input size, one line per backbone;
    ``table`` has columns label, size, test_acc, images_per_s. No figure (None) when it has no rows."""
    if table.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (label, g) in enumerate(table.groupby("label", sort=False)):
        g = g.sort_values("size")
        axes[0].plot(g["size"], 100 * g.test_acc, marker="o", label=label, color=f"C{i}")
        axes[1].plot(g["size"], g.images_per_s, marker="o", label=label, color=f"C{i}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table["size"].unique()))
        ax.set_xticklabels([str(s) for s in sorted(table["size"].unique())])
        ax.set_xlabel("backbone input size (px; CIFAR images are 32 px)")
    axes[0].set_ylabel("linear-probe test accuracy (%)")
    axes[1].set_ylabel("feature extraction (images/s)")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def mean_std_table(df: pd.DataFrame, by: list[str], value: str = "test_acc", scale: float = 100.0) -> pd.DataFrame:
    """mean, std and count of ``value`` per group (scaled, e.g. to percent)."""
    g = df.groupby(by, sort=False)[value]
    out = pd.DataFrame({"mean": g.mean() * scale, "std": g.std() * scale, "seeds": g.count()})
    return out.round(2)


def errorbar_label(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {0 if np.isnan(std) else std:.2f}"


def controlled_bars(summary: pd.DataFrame, lines: dict[str, float], title: str):
    """The controlled grid as bars (mean test accuracy, 95% seed interval as error bars), grouped by
    training mode, ImageNet vs random init side by side; ``lines``: label -> accuracy (%) drawn across
    (the strong scratch recipe, the reference's figures), labelled at the right edge, not over the bars."""
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    modes = list(dict.fromkeys(summary.training))
    width = 0.36
    for j, init in enumerate(("imagenet", "random")):
        sel = summary[summary.init == init].set_index("training").reindex(modes)
        x = np.arange(len(modes)) + (j - 0.5) * width
        mean = sel["test acc mean (%)"].to_numpy(dtype=float)
        err = sel["half width (points)"].fillna(0).to_numpy(dtype=float)
        ax.bar(x, mean, width, yerr=err, capsize=4, color=f"C{j}", label=f"{init} init")
        for xi, m, e in zip(x, mean, err):
            if m == m:  # the value above its error bar, never on it
                ax.text(xi, m + e + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    for i, (label, y) in enumerate(lines.items()):
        ax.axhline(y, color=f"C{i + 2}", linestyle="--", linewidth=1)
        ax.annotate(f"{label} {y:.1f}%", xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8, color=f"C{i + 2}")
    ax.set_xticks(np.arange(len(modes)))
    ax.set_xticklabels({"probe": "frozen + linear probe", "finetune": "trained end to end"}.get(m, m) for m in modes)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def budget_curve(table: pd.DataFrame, strong: dict | None, title: str):
    """Test accuracy (%) against training compute (CPU-hours, log axis) of the end-to-end column at each
    budget, ImageNet vs random init, mean with the seeds' min-max as error bars and the epochs beside each
    point; ``strong``: the strong scratch recipe's {"mean", "minutes", "seeds"} as one point."""
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    for j, (init, g) in enumerate(table.groupby("init", sort=True)):
        s = g.groupby("epochs").agg(acc=("test_acc", "mean"), lo=("test_acc", "min"), hi=("test_acc", "max"),
                                    hours=("cpu_hours", "mean"), seeds=("seed", "count")).reset_index()
        ax.errorbar(s.hours, 100 * s.acc, yerr=[100 * (s.acc - s.lo), 100 * (s.hi - s.acc)], marker="o", capsize=3,
                    color=f"C{j}", label=f"{init} init, trained end to end")
        for r in s.itertuples():
            ax.annotate(f"{r.epochs} ep ({r.seeds} seed{'s' if r.seeds > 1 else ''})", (r.hours, 100 * r.acc),
                        xytext=(5, -12 if j else 6), textcoords="offset points", fontsize=7, color=f"C{j}")
    if strong and strong.get("mean") is not None and strong.get("minutes"):
        ax.plot([strong["minutes"] / 60], [100 * strong["mean"]], marker="*", markersize=12, color="C3", linestyle="",
                label=f"strong scratch recipe, its own network ({strong['seeds']} seeds)")
    ax.set_xscale("log")
    ax.set_xlabel("training compute per run (CPU-hours on the machine that trained it, 2 threads)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
