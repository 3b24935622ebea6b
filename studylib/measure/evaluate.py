"""Evaluation: metrics from a model's test logits or predicted classes (accuracy with its interval, per class,
the most confident mistakes). Evaluation never trains; timing, ONNX and BatchNorm folding are in ``studylib.measure``,
the interval and the confusion counts (numpy only, used by the report too) in ``studylib.report.stats``.

    accuracy_with_ci(logits, labels)                 # accuracy with its Wilson 95% interval
    classification_report(logits, labels, classes)   # precision / recall / F1 per class
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..report.stats import confusion_matrix, wilson_interval

# ---------------------------------------------------------------------------------------
# Accuracy and its uncertainty
# ---------------------------------------------------------------------------------------
def as_classes(outputs) -> torch.Tensor:
    """Predicted classes from logits (N, classes) or from predicted classes (N,) as they are."""
    outputs = torch.as_tensor(outputs)
    return outputs.argmax(1) if outputs.dim() == 2 else outputs.long()


def accuracy_with_ci(outputs, labels: torch.Tensor) -> dict:
    """Accuracy of logits or predicted classes ``outputs`` with its Wilson 95% interval."""
    correct = int((as_classes(outputs) == labels).sum())
    lo, hi = wilson_interval(correct, len(labels))
    return {"correct": correct, "n": len(labels), "acc": correct / len(labels), "ci_low": lo, "ci_high": hi}


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, classes) -> pd.DataFrame:
    """Accuracy on each class: correct / images of that class."""
    pred = logits.argmax(1)
    rows = [{"class": name, "images": int((labels == c).sum()),
             "accuracy": (pred[labels == c] == c).float().mean().item()} for c, name in enumerate(classes)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Confusion
# ---------------------------------------------------------------------------------------
def classification_report(outputs, labels: torch.Tensor, classes) -> pd.DataFrame:
    """Precision, recall and F1 per class (0 where undefined: a class never predicted), from logits or predicted
    classes."""
    cm = confusion_matrix(as_classes(outputs), labels, len(classes)).astype(float)
    tp = np.diag(cm)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return pd.DataFrame({"class": list(classes), "precision": precision, "recall": recall, "f1": f1,
                         "support": actual.astype(int)})


def most_confident_mistakes(logits: torch.Tensor, labels: torch.Tensor, k: int = 8) -> pd.DataFrame:
    """The ``k`` wrong predictions with the highest softmax probability on the predicted class."""
    prob = logits.float().softmax(1)
    conf, pred = prob.max(1)
    wrong = torch.nonzero(pred != labels).flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:k]
    return pd.DataFrame({"index": order.tolist(), "true": labels[order].tolist(), "pred": pred[order].tolist(),
                         "confidence": conf[order].tolist()})
