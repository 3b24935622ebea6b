"""The training engine: ``fit()`` (autocast, channels_last, checkpoints, resume, history,
progress) and ``train_from_scratch()``, the reference protocol for the scratch models.

A run is a folder in the artifact store, keyed by everything that produced it. While it
trains it holds ``checkpoint.pt`` (rewritten atomically after every epoch); when it ends it
holds ``model.pt`` (state_dict), ``history.csv``, ``test_logits.pt`` and, written last,
``metrics.json``: a folder with ``metrics.json`` is finished and is reused, not retrained.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import artifacts, config, data, models
from .augment import MixedBatch, ScratchAugment

# Bump when a change to the engine, the augmentation or a model changes results: it is part
# of every training artifact's key, so old artifacts are not reused for new code.
ENGINE_VERSION = 1
EVAL_BATCH = 500  # images per forward pass at evaluation (memory only; results do not depend on it)


# ---------------------------------------------------------------------------------------
# Devices and precision
# ---------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} asked for, but torch sees no CUDA GPU; use device='auto' or 'cpu'.")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU (AVX-512 bf16 / AMX) and CUDA alike; fp32 runs with no autocast."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def environment() -> dict:
    """Hardware and versions, recorded with every result."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": _cpu_name(), "host": platform.node()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor],
                   device: torch.device, precision: str = "bf16", channels_last: bool = False,
                   batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """float32 logits (N, classes) of ``model`` in eval mode on ``prepare(x[batch])``."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        inputs = _to_device(prepare(x[start:start + batch_size]), device, channels_last)
        with autocast(device, precision):
            out.append(model(inputs).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# ---------------------------------------------------------------------------------------
# fit()
# ---------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    out_dir: Path
    model: nn.Module
    history: pd.DataFrame
    metrics: dict
    reused: bool


def _epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch's randomness (order, augmentation, dropout) comes from (seed, epoch) alone,
    # so a run resumed at any epoch boundary is identical to an uninterrupted one.
    return seed * 100_003 + epoch


def fit(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
        out_dir: Path, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], MixedBatch] | None = None,
        device: str = "auto", precision: str = "bf16", channels_last: bool = False,
        params: nn.Module | None = None, meta: dict | None = None, progress: bool | None = None,
        on_epoch_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``model`` with Adam + per-epoch cosine annealing; evaluate on the test set every epoch.

    ``prepare`` maps a stored batch to model input (normalisation) for evaluation and, when
    ``augment`` is None, for training. ``params`` is the module whose parameters are
    optimised (default: ``model``; a frozen backbone passes its head). Reuses a finished
    ``out_dir``, resumes an unfinished one from its checkpoint.
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if (out_dir / "metrics.json").exists():
        model.load_state_dict(torch.load(out_dir / "model.pt", map_location=dev))
        return TrainResult(out_dir, model, pd.read_csv(out_dir / "history.csv"),
                           artifacts.read_json(out_dir / "metrics.json"), reused=True)

    trainable = [p for p in (params or model).parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    history: list[dict] = []
    start_epoch = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history, start_epoch = ckpt["history"], ckpt["epoch"] + 1
        print(f"resuming {out_dir.name} after epoch {start_epoch}/{epochs}", flush=True)

    if progress is None:
        progress = sys.stderr.isatty()
    n = len(train_x)
    test_logits = None
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        torch.manual_seed(_epoch_seed(seed, epoch))  # dropout
        order = torch.randperm(n, generator=gen)
        model.train()
        if params is not None:  # a frozen backbone stays in eval mode (fixed BatchNorm statistics)
            model.eval(), params.train()
        lr_now = opt.param_groups[0]["lr"]
        loss_sum = correct = 0.0
        bar = tqdm(range(0, n, batch_size), desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        for start in bar:
            idx = order[start:start + batch_size]
            xb, yb = train_x[idx], train_y[idx]
            batch = augment(xb, yb, gen) if augment else MixedBatch(prepare(xb), yb, yb, 1.0)
            inputs = _to_device(batch.images, dev, channels_last)
            ya, yb_ = batch.labels_a.to(dev), batch.labels_b.to(dev)
            with autocast(dev, precision):
                logits = model(inputs)
            logits = logits.float()
            loss = F.cross_entropy(logits, ya)
            if batch.lam < 1.0:
                loss = batch.lam * loss + (1.0 - batch.lam) * F.cross_entropy(logits, yb_)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            pred = logits.argmax(1)
            loss_sum += loss.item() * len(idx)
            correct += (batch.lam * (pred == ya).sum() + (1.0 - batch.lam) * (pred == yb_).sum()).item()
        sched.step()
        test_logits = predict_logits(model, test_x, prepare, dev, precision, channels_last)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n,
               "test_loss": F.cross_entropy(test_logits, test_y).item(),
               "test_acc": (test_logits.argmax(1) == test_y).float().mean().item(),
               "lr": lr_now, "seconds": time.perf_counter() - t0}
        history.append(row)
        artifacts.torch_save(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                         "scheduler": sched.state_dict(), "epoch": epoch, "history": history,
                                         "meta": meta})
        print(f"epoch {row['epoch']:>2}/{epochs}  train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}  "
              f"test loss {row['test_loss']:.3f} acc {row['test_acc']:.4f}  lr {lr_now:.2e}  {row['seconds']:.1f} s",
              flush=True)
        if on_epoch_end:
            on_epoch_end(epoch)

    if test_logits is None:  # resumed after the last epoch's checkpoint: nothing evaluated in this process
        test_logits = predict_logits(model, test_x, prepare, dev, precision, channels_last)
    hist = pd.DataFrame(history)
    counts = models.count_params(model)
    metrics = {
        "test_acc": (test_logits.argmax(1) == test_y).float().mean().item(),
        "test_n": len(test_y), "train_n": n, "epochs": epochs,
        "params_total": counts["total"],
        "params_trainable": models.count_params(params or model)["trainable"],
        "train_seconds": float(hist.seconds.sum()) if len(hist) else 0.0,
        "device": str(dev), "precision": precision, "environment": environment(), **(meta or {}),
    }
    artifacts.torch_save(out_dir / "model.pt", model.state_dict())
    artifacts.torch_save(out_dir / "test_logits.pt", test_logits)
    artifacts.write_bytes(out_dir / "history.csv", hist.to_csv(index=False).encode())
    artifacts.write_json(out_dir / "metrics.json", metrics)  # last: marks the run finished
    ckpt_path.unlink(missing_ok=True)
    return TrainResult(out_dir, model, hist, metrics, reused=False)


# ---------------------------------------------------------------------------------------
# The reference protocol for scratch models
# ---------------------------------------------------------------------------------------
SCRATCH_MODELS = ("custom_cnn", "vit_small")
# channels_last speeds the CNN's bf16 convolutions up on CPU ~1.4x but slows fp32 ones ~3x
# (benchmarks/bench_scratch.py); the ViT has a single conv, so it stays contiguous.
CHANNELS_LAST = {"custom_cnn": True, "vit_small": False}


def use_channels_last(name: str, precision: str) -> bool:
    return CHANNELS_LAST[name] and precision == "bf16"


def scratch_augment(cfg: dict) -> ScratchAugment:
    return ScratchAugment(**cfg["scratch_augment"], mean=config.CIFAR10_MEAN, std=config.CIFAR10_STD)


def run_key(name: str, cfg: dict, train: data.CifarSplit, test: data.CifarSplit) -> dict:
    """Everything that determines a scratch run's result (the device does not)."""
    keys = ("seed", "epochs", "batch_size", "optimizer", "schedule", "scratch_augment", "precision",
            "train_per_class", "test_per_class")
    return {"model": name, "engine": ENGINE_VERSION, **{k: cfg[k] for k in keys},
            "train_data": artifacts.hash_tensor(train.images) + artifacts.hash_tensor(train.labels),
            "test_data": artifacts.hash_tensor(test.images) + artifacts.hash_tensor(test.labels)}


def train_from_scratch(name: str, profile: str = "full", *, seed: int | None = None, data_dir=None,
                       device: str = "auto", force: bool = False, progress: bool | None = None,
                       on_epoch_end: Callable[[int], None] | None = None, **overrides) -> TrainResult:
    """Train (or reuse) scratch model ``name`` under the protocol of ``profile``."""
    if name not in SCRATCH_MODELS:
        raise KeyError(f"{name!r} is not a scratch model; choose one of {SCRATCH_MODELS}")
    if seed is not None:
        overrides["seed"] = seed
    cfg = config.get_profile(profile, **overrides)
    train, test = data.load_profile_data(cfg, data_dir)
    key = run_key(name, cfg, train, test)
    out_dir = artifacts.artifact_dir(profile, "train", name, key)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    torch.manual_seed(cfg["seed"])  # model initialisation
    model = models.build_model(name)
    aug = scratch_augment(cfg)
    return fit(model, train.images, train.labels, test.images, test.labels, out_dir=out_dir,
               epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["optimizer"]["lr"],
               weight_decay=cfg["optimizer"]["weight_decay"], seed=cfg["seed"], prepare=aug.normalize,
               augment=aug, device=device, precision=cfg["precision"], channels_last=use_channels_last(name, cfg["precision"]),
               meta={"model": name, "profile": profile, "key": key, "strategy": "from scratch"},
               progress=progress, on_epoch_end=on_epoch_end)


def main(argv: list[str] | None = None) -> None:
    """``python -m studylib.train custom_cnn vit_small --profile full --device auto``: train
    (or reuse) scratch models outside the notebooks, e.g. on a GPU machine."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("models", nargs="+", choices=SCRATCH_MODELS)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--precision", choices=["bf16", "fp32"], default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    extra = {"precision": args.precision} if args.precision else {}
    for name in args.models:
        r = train_from_scratch(name, args.profile, seed=args.seed, data_dir=args.data_dir, device=args.device,
                               force=args.force, **extra)
        print(f"{name}: test accuracy {100 * r.metrics['test_acc']:.2f}% after {r.metrics['epochs']} epochs, "
              f"{r.metrics['train_seconds']:.0f} s on {r.metrics['device']} ({'reused' if r.reused else 'trained'})"
              f" -> {r.out_dir}", flush=True)


if __name__ == "__main__":
    main()
