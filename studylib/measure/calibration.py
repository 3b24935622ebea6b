"""Calibration: expected calibration error, reliability tables, temperature scaling.

    ece(logits, labels)                       # 15 equal-width confidence bins (Guo et al. 2017)
    t = fit_temperature(val_logits, val_y)    # one scalar T > 0, LBFGS on the validation NLL
    report = before_after(val_logits, val_y, test_logits, test_y)

Temperature is always fitted on a held-out validation split, never on the test set: a T
fitted on the test set would make the "after" numbers optimistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

N_BINS = 15  # equal-width confidence bins, the usual ECE setting (Guo et al. 2017, "On Calibration ...")


def _check(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = torch.as_tensor(logits).float(), torch.as_tensor(labels).long()
    if logits.dim() != 2 or labels.dim() != 1 or len(logits) != len(labels):
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("calibration metrics need at least one example")
    return logits, labels


def reliability(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> pd.DataFrame:
    """One row per equal-width confidence bin: lower/upper edge, images, mean confidence, accuracy.

    Confidence is the top softmax probability; a confidence of exactly 0 goes to the first bin,
    every other one to the bin whose (lower, upper] interval holds it.
    """
    logits, labels = _check(logits, labels)
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    idx = (torch.bucketize(conf, edges[1:-1], right=False)).clamp(0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        rows.append({"lower": edges[b].item(), "upper": edges[b + 1].item(), "images": n,
                     "confidence": conf[mask].mean().item() if n else float("nan"),
                     "accuracy": correct[mask].mean().item() if n else float("nan")})
    return pd.DataFrame(rows)


def ece(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over bins of (images in bin / N) * |accuracy - confidence|."""
    table = reliability(logits, labels, n_bins)
    filled = table[table.images > 0]
    return float((filled.images / table.images.sum() * (filled.accuracy - filled.confidence).abs()).sum())


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    logits, labels = _check(logits, labels)
    return F.cross_entropy(logits / temperature, labels).item()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (LBFGS on log T, so T
    stays positive). Fit it on validation logits; it never changes the predicted class."""
    logits, labels = _check(logits, labels)
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not torch.isfinite(torch.tensor(t)):
        raise RuntimeError("temperature fit diverged (non-finite T); check the validation logits")
    return t


def summary(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, n_bins: int = N_BINS) -> dict:
    """Accuracy, ECE, NLL and mean confidence of logits / temperature."""
    logits, labels = _check(logits, labels)
    scaled = logits / temperature
    return {"acc": (scaled.argmax(1) == labels).float().mean().item(), "ece": ece(scaled, labels, n_bins),
            "nll": nll(scaled, labels), "confidence": scaled.softmax(1).max(1).values.mean().item()}


def before_after(val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor,
                 test_labels: torch.Tensor, n_bins: int = N_BINS) -> dict:
    """Fit T on the validation split; test-set accuracy/ECE/NLL before (T = 1) and after."""
    t = fit_temperature(val_logits, val_labels)
    before, after = summary(test_logits, test_labels, 1.0, n_bins), summary(test_logits, test_labels, t, n_bins)
    return {"temperature": t, "val_n": len(val_labels), "test_n": len(test_labels), "n_bins": n_bins,
            **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}


def report(val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor, test_labels: torch.Tensor,
           n_bins: int = N_BINS) -> dict:
    """``before_after`` plus the test set's reliability tables before and after scaling (JSON-able): what
    a run records so the report needs no logits."""
    out = before_after(val_logits, val_labels, test_logits, test_labels, n_bins)
    out["reliability"] = {"before": reliability(test_logits, test_labels, n_bins).to_dict("records"),
                          "after": reliability(test_logits / out["temperature"], test_labels, n_bins).to_dict("records")}
    return out


def ece_from_confidence(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE from per-example top probabilities and correctness (what a run's predictions.npz holds), with
    the same bins as ``ece`` (a confidence of 0 in the first bin, else the bin whose (lower, upper] holds it)."""
    conf = torch.as_tensor(np.asarray(confidence, dtype=np.float32))
    ok = torch.as_tensor(np.asarray(correct, dtype=np.float32))
    if len(conf) == 0 or len(conf) != len(ok):
        raise ValueError(f"need equal, non-zero numbers of confidences and outcomes, got {len(conf)} and {len(ok)}")
    edges = torch.linspace(0, 1, n_bins + 1)
    idx = torch.bucketize(conf, edges[1:-1], right=False).clamp(0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            total += mask.float().mean().item() * abs(ok[mask].mean().item() - conf[mask].mean().item())
    return total
