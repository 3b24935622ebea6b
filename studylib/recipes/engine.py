"""The training engine: one loop for every recipe (torchvision references' shape).

    batched_logits(model, images, device=..., precision=...)   # evaluation, in batches
    train_one_epoch(model, plan, epoch, device=..., precision=...)   # one pass; returns (loss / accuracy, steps)
    fit(run, model, plan, ...)                                 # epochs, checkpoints, resume, outputs

A recipe (``studylib.recipes``) builds a ``Plan``: its optimiser and schedule, the batches of
each epoch (order and augmentation, seeded by the epoch so a resumed run is identical to an
uninterrupted one), its loss, optional per-step hooks (weight averaging) and how the finished
model is evaluated (plain or with test-time augmentation). ``fit`` does the rest, the same way for
all: autocast, channels_last, a checkpoint after every epoch (atomic), resume, per-epoch progress
lines with an ETA, history, and the run's outputs (model weights, per-example test predictions,
metrics written last).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import artifacts, models, runs, runtime
from ..data.augment import MixedBatch

EVAL_BATCH = 500  # images per forward pass at evaluation (memory only; results do not depend on it)


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------
def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@torch.no_grad()
def batched_logits(model: nn.Module, images: torch.Tensor, *, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   device: torch.device | str = "cpu", precision: str = "fp32", channels_last: bool = False,
                   batch_size: int = EVAL_BATCH, progress: bool = False, desc: str = "evaluate") -> torch.Tensor:
    """float32 logits (N, classes) of ``model`` in eval mode on ``prepare(images[batch])`` (the
    images as they are when ``prepare`` is None), in batches, under ``precision`` autocast."""
    dev = runtime.resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=not progress):
            x = images[start:start + batch_size]
            x = to_device(prepare(x) if prepare else x, dev, channels_last)
            with runtime.autocast(dev, precision):
                out.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def mixed_cross_entropy(logits: torch.Tensor, batch: MixedBatch) -> torch.Tensor:
    """Mean cross-entropy against ``labels_a`` weighted ``lam`` and ``labels_b`` weighted ``1 - lam``."""
    loss = F.cross_entropy(logits, batch.labels_a)
    if batch.lam < 1.0:
        loss = batch.lam * loss + (1.0 - batch.lam) * F.cross_entropy(logits, batch.labels_b)
    return loss


# ---------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------
def epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch's randomness (order, augmentation, dropout) comes from (seed, epoch) alone,
    # so a run resumed at any epoch boundary is identical to an uninterrupted one.
    return seed * 100_003 + epoch


def shuffled_batches(x: torch.Tensor, y: torch.Tensor, *, seed: int, epoch: int, batch_size: int,
                     augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], MixedBatch] | None = None,
                     prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     drop_last: bool = False) -> Iterator[MixedBatch]:
    """One epoch of shuffled batches of (x, y): ``augment(xb, yb, gen)`` when given, else
    ``prepare(xb)`` (or xb) with plain labels. Seeds torch's global generator too (dropout)."""
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    torch.manual_seed(epoch_seed(seed, epoch))
    n = len(x)
    order = torch.randperm(n, generator=gen)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        yield augment(xb, yb, gen) if augment else MixedBatch(prepare(xb) if prepare else xb, yb, yb, 1.0)


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


# ---------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Everything recipe-specific about a training run; ``fit`` supplies the loop."""

    epochs: int
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], Iterable[MixedBatch]]           # epoch (0-based) -> its batches
    evaluate: Callable[[], torch.Tensor]                     # the model's test logits (float32)
    steps_per_epoch: int
    scheduler: Any = None                                    # an LRScheduler, or None
    schedule_per: str = "epoch"                              # when the scheduler steps: "epoch" or "step"
    loss: Callable[[torch.Tensor, MixedBatch], torch.Tensor] = mixed_cross_entropy
    loss_is_sum: bool = False                                # the loss sums over the batch (stats divide by images)
    before_epoch: Callable[[int], None] | None = None
    after_step: Callable[[int], None] | None = None         # called with the number of steps taken so far
    finalize: Callable[[], None] | None = None              # after the last epoch, before the final evaluation
    eval_every_epoch: bool = True                            # test accuracy in the history after every epoch
    # the logits recorded with the finished run, in the deployed model's precision (fp32), so that a recorded
    # accuracy is what the shipped model computes; per-epoch history uses ``evaluate`` (training precision)
    final_evaluate: Callable[[], torch.Tensor] | None = None
    state: Callable[[], dict] | None = None                  # extra state to checkpoint (EMA weights, generators)
    load_state: Callable[[dict], None] | None = None
    meta: dict = field(default_factory=dict)


def train_one_epoch(model: nn.Module, plan: Plan, epoch: int, *, device: torch.device, precision: str,
                    channels_last: bool = False, step: int = 0, progress: bool = False) -> tuple[dict, int]:
    """One pass over ``plan.batches(epoch)``; returns (train loss/accuracy per image, steps so far)."""
    model.train()
    if plan.before_epoch:
        plan.before_epoch(epoch)
    loss_sum = correct = seen = 0.0
    bar = tqdm(plan.batches(epoch), total=plan.steps_per_epoch, desc=f"epoch {epoch + 1}/{plan.epochs}",
               leave=False, disable=not progress)
    for batch in bar:
        inputs = to_device(batch.images, device, channels_last)
        batch = MixedBatch(inputs, batch.labels_a.to(device), batch.labels_b.to(device), batch.lam)
        with runtime.autocast(device, precision):
            logits = model(inputs)
        logits = logits.float()
        loss = plan.loss(logits, batch)
        plan.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plan.optimizer.step()
        step += 1
        if plan.scheduler is not None and plan.schedule_per == "step":
            plan.scheduler.step()
        if plan.after_step:
            plan.after_step(step)
        n = len(batch.labels_a)
        pred = logits.argmax(1)
        loss_sum += loss.item() * (1 if plan.loss_is_sum else n)
        correct += (batch.lam * (pred == batch.labels_a).sum()
                    + (1.0 - batch.lam) * (pred == batch.labels_b).sum()).item()
        seen += n
    if plan.scheduler is not None and plan.schedule_per == "epoch":
        plan.scheduler.step()
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)}, step


# ---------------------------------------------------------------------------------------
# fit()
# ---------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    run: runs.Run
    model: nn.Module
    history: pd.DataFrame
    test_logits: torch.Tensor | None   # None when the run was reused


def fit(run: runs.Run, model: nn.Module, plan: Plan, *, test_labels: torch.Tensor, train_n: int,
        device: str = "auto", precision: str = "bf16", channels_last: bool = False,
        save_weights: Callable[[nn.Module], dict] | None = None, progress: bool | None = None,
        extra_metrics: Callable[[torch.Tensor], dict] | None = None, eval_name: str = "test") -> TrainResult:
    """Train ``model`` with ``plan`` into ``run`` (resuming its checkpoint), evaluate, and finish the
    run: ``model.pt`` (``save_weights(model)``, default the state dict), ``predictions.npz``,
    ``history.csv`` and ``metrics.json``. The caller decides reuse (``run.ensure``).

    ``test_labels`` are the labels of what ``plan.evaluate`` predicts; ``eval_name`` names that split in
    the metrics and history ("test", or "val" for a held-out validation split). Denormals are flushed to zero
    while it trains (``runtime.flush_denormals``; recorded as ``flush_denormal``): a speed setting, not in the key."""
    with runtime.flush_denormals() as flushed:
        dev = runtime.resolve_device(device)
        model.to(dev)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        history: list[dict] = []
        start_epoch, step = 0, 0
        ckpt_path = run.folder / "checkpoint.pt"
        if ckpt_path.exists():
            ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
            model.load_state_dict(ckpt["model"])
            plan.optimizer.load_state_dict(ckpt["optimizer"])
            if plan.scheduler is not None:
                plan.scheduler.load_state_dict(ckpt["scheduler"])
            if plan.load_state:
                plan.load_state(ckpt["extra"])
            history, start_epoch, step = ckpt["history"], ckpt["epoch"] + 1, ckpt["step"]
            print(f"resuming {run.id} after epoch {start_epoch}/{plan.epochs}", flush=True)
        if progress is None:
            progress = sys.stderr.isatty()

        test_logits = None
        for epoch in range(start_epoch, plan.epochs):
            t0 = time.perf_counter()
            lr_now = plan.optimizer.param_groups[-1]["lr"]
            row, step = train_one_epoch(model, plan, epoch, device=dev, precision=precision,
                                        channels_last=channels_last, step=step, progress=progress)
            row = {"epoch": epoch + 1, **row}
            if plan.eval_every_epoch:
                test_logits = plan.evaluate()
                row.update({f"{eval_name}_loss": F.cross_entropy(test_logits, test_labels).item(),
                            f"{eval_name}_acc": (test_logits.argmax(1) == test_labels).float().mean().item()})
            row.update(lr=lr_now, seconds=time.perf_counter() - t0)
            history.append(row)
            artifacts.torch_save(ckpt_path, {"model": model.state_dict(), "optimizer": plan.optimizer.state_dict(),
                                             "scheduler": plan.scheduler.state_dict() if plan.scheduler else None,
                                             "extra": plan.state() if plan.state else None, "epoch": epoch,
                                             "step": step, "history": history})
            print(progress_line(row, plan.epochs, history, eval_name), flush=True)

        if plan.finalize:
            plan.finalize()
        if plan.final_evaluate:
            test_logits = plan.final_evaluate()
        elif test_logits is None or plan.finalize or not plan.eval_every_epoch:
            test_logits = plan.evaluate()
        hist = pd.DataFrame(history)
        counts = models.count_params(model)
        metrics = {
            f"{eval_name}_acc": (test_logits.argmax(1) == test_labels).float().mean().item(),
            f"{eval_name}_n": len(test_labels), "train_n": train_n, "epochs": plan.epochs, "steps": step,
            "params_total": counts["total"], "params_trainable": counts["trainable"],
            "train_seconds": float(hist.seconds.sum()) if len(hist) else 0.0,
            "device": str(dev), "precision": precision, "flush_denormal": flushed, **plan.meta,
            **(extra_metrics(test_logits) if extra_metrics else {}),
        }
        weights = save_weights(model) if save_weights else model.state_dict()
        run.finish(metrics, history=hist, predictions=runs.predictions_from_logits(test_logits, test_labels),
                   files={runs.WEIGHTS_FILE: {k: v.detach().cpu() for k, v in weights.items()}})
        return TrainResult(run, model, hist, test_logits)


def progress_line(row: dict, epochs: int, history: list[dict], eval_name: str = "test") -> str:
    """``epoch  3/15  train loss 1.234 acc 0.456  test loss 1.1 acc 0.5678  lr 1.00e-03  90.1 s  ETA 18.0 min``"""
    done = len(history)
    mean_s = sum(h["seconds"] for h in history) / max(done, 1)
    eta = (epochs - row["epoch"]) * mean_s
    test = (f"  {eval_name} loss {row[eval_name + '_loss']:.3f} acc {row[eval_name + '_acc']:.4f}"
            if f"{eval_name}_acc" in row else "")
    return (f"epoch {row['epoch']:>2}/{epochs}  train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}{test}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f} s  ETA {eta / 60:.1f} min")
