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
    """Horizontal bars of accuracy per class; ``per_class`` has columns class, accuracy."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    sns.barplot(data=per_class, y="class", x="accuracy", ax=ax, color="C0")
    ax.set_xlim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    return fig
