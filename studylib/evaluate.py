"""Metrics computed from a run's saved test logits (evaluation never trains)."""

from __future__ import annotations

import pandas as pd
import torch


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, classes) -> pd.DataFrame:
    """Accuracy on each class: correct / images of that class."""
    pred = logits.argmax(1)
    rows = [{"class": name, "images": int((labels == c).sum()),
             "accuracy": (pred[labels == c] == c).float().mean().item()} for c, name in enumerate(classes)]
    return pd.DataFrame(rows)
