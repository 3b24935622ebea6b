"""Every figure style used by the notebooks, in one place."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

sns.set_theme(context="notebook", style="whitegrid")


def class_grid(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], per_class: int = 8, seed: int = 0):
    """A grid with one row per class and ``per_class`` random examples of it (seeded)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.0, len(classes) * 1.05))
    for c, name in enumerate(classes):
        picks = rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for j, idx in enumerate(picks):
            ax = axes[c, j]
            ax.imshow(images[idx].permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("CIFAR-10: random training images per class", y=1.0)
    fig.tight_layout()
    return fig


def class_balance(counts: pd.DataFrame):
    """Bar chart of images per class and split; ``counts`` has columns class, split, images."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    sns.barplot(data=counts, x="class", y="images", hue="split", ax=ax)
    ax.set_xlabel("")
    ax.set_title("Images per class")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def history_curves(history: pd.DataFrame, title: str):
    """Loss, accuracy and learning rate per epoch from a training history table."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(history.epoch, history.train_loss, marker="o", label="train")
    axes[0].plot(history.epoch, history.test_loss, marker="o", label="test")
    axes[0].set_title("loss")
    axes[1].plot(history.epoch, 100 * history.train_acc, marker="o", label="train")
    axes[1].plot(history.epoch, 100 * history.test_acc, marker="o", label="test")
    axes[1].set_title("accuracy (%)")
    axes[2].plot(history.epoch, history.lr, marker="o")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(), axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_class_bars(per_class: pd.DataFrame, title: str):
    """Horizontal bars of accuracy per class; ``per_class``: classes x runs (one bar colour per run),
    legend outside the axes. No figure (None) when no run has finished."""
    if per_class.empty or not len(per_class.columns):
        return None
    long = per_class.reset_index().melt(id_vars="class", var_name="run", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    sns.barplot(data=long, y="class", x="accuracy", hue="run", ax=ax)
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 90) -> bytes:
    """A figure as PNG bytes (for widgets), closing it so it is not shown a second time."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def topk_bars(results, image: torch.Tensor | None = None, cams: dict | None = None):
    """The demo's chart: one row per model that ran, its top-k probabilities as horizontal bars,
    titled with the prediction and the measured time; with ``cams`` ({name: (32, 32) map in [0, 1]
    or a message}) a Grad-CAM overlay on ``image`` (uint8 (3, 32, 32)) beside each row."""
    ran = [r for r in results if r.ok]
    ncols = 2 if cams is not None and image is not None else 1
    fig, axes = plt.subplots(max(len(ran), 1), ncols, figsize=(4.6 + 1.9 * (ncols - 1), 1.45 * max(len(ran), 1) + 0.3),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 1.1][:ncols]})
    for row, r in zip(axes, ran):
        ax = row[0]
        names, probs = [c for c, _ in r.top][::-1], [p for _, p in r.top][::-1]
        ax.barh(names, probs, color=["C1"] * (len(names) - 1) + ["C0"])
        for y, p in enumerate(probs):
            ax.text(min(p + 0.02, 0.82), y, f"{p:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=8)
        ms = "" if r.ms is None else f", {r.ms:.1f} ms"  # latency only where it was measured
        ax.set_title(f"{r.label}: {r.prediction} ({r.top[0][1]:.2f}){ms}", fontsize=9, loc="left")
        if ncols == 2:
            cam_ax = row[1]
            cam_ax.imshow(image.permute(1, 2, 0).numpy())
            cam = cams.get(r.name)
            if isinstance(cam, np.ndarray):
                cam_ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                cam_ax.set_title("Grad-CAM", fontsize=8)
            else:
                cam_ax.set_title(str(cam or "no Grad-CAM")[:40], fontsize=6)
            cam_ax.set_xticks([]), cam_ax.set_yticks([])
    if not ran:
        axes[0, 0].text(0.5, 0.5, "no model ran", ha="center", va="center")
        axes[0, 0].set_axis_off()
    axes[-1, 0].set_xlabel("probability (over the 10 CIFAR-10 classes)", fontsize=8)
    fig.tight_layout()
    return fig


def example_predictions(images: torch.Tensor, true_classes: Sequence[str], p_true: pd.DataFrame,
                        predicted: pd.DataFrame):
    """Example thumbnails above a heat map of each model's probability for the true class
    (rows: models, columns: examples), each cell annotated with the predicted class."""
    n = len(true_classes)
    fig = plt.figure(figsize=(max(8.0, 0.62 * n + 2.5), 1.0 + 0.45 * len(p_true) + 1.2))
    grid = fig.add_gridspec(2, n, height_ratios=[1.0, 0.45 * len(p_true) + 0.4], hspace=0.05)
    for j in range(n):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(images[j].permute(1, 2, 0).numpy())
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(true_classes[j], fontsize=7, rotation=35)
    ax = fig.add_subplot(grid[1, :])
    # No colour bar: it would shift the heat map's columns away from the thumbnails above them.
    sns.heatmap(p_true, ax=ax, vmin=0, vmax=1, cmap="RdYlGn", cbar=False,
                annot=predicted.to_numpy(), fmt="", annot_kws={"fontsize": 6, "rotation": 90})
    ax.set_xticks([])
    ax.set_xlabel("columns: the example images above; text: predicted class; "
                  "colour: probability of the true class (red 0, yellow 0.5, green 1)", fontsize=8)
    ax.set_ylabel("")
    return fig


def tradeoff_scatter(table: pd.DataFrame, x: str, y: str, title: str, logx: bool = False):
    """One labelled point per model (``table`` indexed by model label), e.g. accuracy vs latency."""
    fig, ax = plt.subplots(figsize=(6.2, 4))
    for i, (label, row) in enumerate(table.iterrows()):
        ax.scatter(row[x], row[y], s=60, color=f"C{i}")
        ax.annotate(label, (row[x], row[y]), textcoords="offset points", xytext=(6, 4), fontsize=9)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x), ax.set_ylabel(y), ax.set_title(title)
    fig.tight_layout()
    return fig


def confusion_heatmaps(matrices: dict, classes: Sequence[str], title: str):
    """Row-normalised confusion matrices (true class rows, % of the row), one panel per model."""
    n = len(matrices)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.6 * rows), squeeze=False)
    for ax, (label, cm) in zip(axes.flat, matrices.items()):
        pct = 100 * cm / np.maximum(cm.sum(1, keepdims=True), 1)
        sns.heatmap(pct, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, cbar=False, ax=ax,
                    xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7})
        ax.set_title(label), ax.set_xlabel("predicted"), ax.set_ylabel("true")
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_gallery(images: torch.Tensor, captions: Sequence[str], title: str, cols: int = 8):
    """uint8 (N, 3, H, W) images in a grid with a caption each."""
    rows = max(1, (len(images) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(cap, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def gradcam_grid(images: torch.Tensor, maps: dict, column_titles: Sequence[str], title: str):
    """Row 0: the images; one row per model: its Grad-CAM map over the image (jet, alpha 0.5)."""
    n = len(images)
    fig, axes = plt.subplots(len(maps) + 1, n, figsize=(1.25 * n, 1.35 * (len(maps) + 1)), squeeze=False)
    for j in range(n):
        img = images[j].permute(1, 2, 0).numpy()
        axes[0, j].imshow(img)
        axes[0, j].set_title(column_titles[j], fontsize=7)
        for i, (label, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(img)
            axes[i, j].imshow(m[j].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if j == 0:
                axes[i, j].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig
