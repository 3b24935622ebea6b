"""A strong from-scratch CIFAR-10 baseline, in the spirit of the fast-training records (airbench94,
Keller Jordan 2024, github.com/KellerJordan/cifar10-airbench), re-written for this study.

NOT the reference protocol: its own network, optimiser, schedule and augmentation, inside the
study's 15-epoch budget (it uses 10). What it takes from airbench94:
  * a frozen 2x2 patch-whitening first layer (eigenvectors of the training patches' covariance),
  * three conv-pool-BN-GELU-conv-BN-GELU blocks (64/256/256), identity (Dirac) conv init,
    BatchNorm with fixed unit scale, a 1/9-scaled bias-free linear head,
  * Nesterov SGD with a per-1024-examples learning rate, decoupled weight decay, a 64x learning
    rate on BatchNorm biases, label smoothing 0.2, a linear warm-up/warm-down schedule,
  * Lookahead-style weight averaging, alternating flips + 2-pixel reflect translation,
  * test-time augmentation (flip + 1-pixel translations).

    python -m studylib.strong --profile full --device cuda --seeds 0 1 2

Runs live in ``<artifacts>/<profile>/strong/strong_cnn-<hash>/`` (metrics.json, history.csv,
test_logits.pt with TTA, model.pt), keyed by the recipe, seed, data subset and code version.
"""

from __future__ import annotations

import copy
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import artifacts, config, data, models, train

STRONG_VERSION = 1
NAME = "strong_cnn"

# =======================================================================================
# Hyper-parameters (airbench94's values unless noted; units in the comments)
# =======================================================================================
HYP: dict = {
    "epochs": 10,               # <= the study's 15-epoch budget (airbench94: 9.9)
    "batch_size": 1024,         # images per step
    "lr": 11.5,                 # learning rate per 1024 examples (summed loss)
    "momentum": 0.85,           # Nesterov momentum
    "weight_decay": 0.0153,     # per 1024 examples, decoupled from the learning rate
    "bias_scaler": 64.0,        # BatchNorm biases get 64x the learning rate (not the decay)
    "label_smoothing": 0.2,
    "whiten_bias_epochs": 3,    # the whitening layer's bias trains for the first 3 epochs, then freezes
    "whiten_images": 5000,      # training images whose 2x2 patches define the whitening
    "whiten_eps": 5e-4,         # added to the patch-covariance eigenvalues
    "widths": (64, 256, 256),   # channels of the three blocks
    "bn_momentum": 0.6,         # airbench's convention: running = 0.6 * running + 0.4 * batch
    "scaling_factor": 1 / 9,    # output logit scale
    "translate": 2,             # random translation (reflect padding), pixels
    "tta_level": 2,             # 0 none, 1 flip, 2 flip + 1-pixel translations
    "warmup_frac": 0.23,        # linear warm-up over 23% of steps (0.2 -> 1.0 x lr), then down to 0.07 x
    "ema_every": 5,             # Lookahead: average every 5 steps, decay 0.95^5 * (progress)^3
    "precision": "bf16",        # autocast on CPU and GPU alike (BatchNorm stays fp32)
}
# quick: 1,000 training images; a 1024 batch would be a single step per epoch.
QUICK_HYP = {"epochs": 2, "batch_size": 100, "whiten_images": 500}


def hyp_for(profile: str) -> dict:
    h = copy.deepcopy(HYP)
    if profile == "quick":
        h.update(QUICK_HYP)
    return h


# =======================================================================================
# Network
# =======================================================================================
class BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int, momentum: float, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad_(False)  # unit scale, trainable bias


class Conv(nn.Conv2d):
    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[:w.size(1)])  # the first cin filters start as the identity


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bn_momentum: float):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(cin, cout), nn.MaxPool2d(2), BatchNorm(cout, bn_momentum)
        self.conv2, self.norm2, self.activ = Conv(cout, cout), BatchNorm(cout, bn_momentum), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class StrongCNN(nn.Sequential):
    """whiten (2x2, 24 ch) -> GELU -> 3 ConvGroups -> MaxPool(3) -> Linear (no bias) -> x 1/9."""

    def __init__(self, *, num_classes: int = 10, widths=(64, 256, 256), bn_momentum: float = 0.6,
                 scaling_factor: float = 1 / 9):
        whiten_width = 2 * 3 * 2 ** 2  # +/- the 12 eigen-directions of 2x2x3 patches
        super().__init__(
            nn.Conv2d(3, whiten_width, 2, padding=0, bias=True), nn.GELU(),
            ConvGroup(whiten_width, widths[0], bn_momentum), ConvGroup(widths[0], widths[1], bn_momentum),
            ConvGroup(widths[1], widths[2], bn_momentum), nn.MaxPool2d(3), nn.Flatten(),
            nn.Linear(widths[2], num_classes, bias=False), Mul(scaling_factor))
        self[0].weight.requires_grad_(False)


@models.register(NAME)
def strong_cnn(*, num_classes: int = 10) -> StrongCNN:
    return StrongCNN(num_classes=num_classes, widths=HYP["widths"], bn_momentum=HYP["bn_momentum"],
                     scaling_factor=HYP["scaling_factor"])


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float) -> None:
    """Set the first layer to +/- the eigenvectors of the 2x2 patch covariance of ``images``
    (normalised float), scaled by 1/sqrt(eigenvalue + eps): whitened patches."""
    c, (h, w) = images.shape[1], conv.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
    flat = patches.view(len(patches), -1)
    cov = (flat.T @ flat) / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov, UPLO="U")
    eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
    eigenvectors = eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    conv.weight.data[:] = torch.cat((scaled, -scaled)).to(conv.weight.dtype)


# =======================================================================================
# Data: normalisation, alternating flips, translation, TTA
# =======================================================================================
MEAN = torch.tensor(config.CIFAR10_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(config.CIFAR10_STD).view(1, 3, 1, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - MEAN.to(x.device)) / STD.to(x.device)


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``pad`` and crop back at a random offset per image (on the batch's device)."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, x.shape[1], h, w)
    return out.gather(3, cols)


@torch.no_grad()
def predict_tta(model: nn.Module, images: torch.Tensor, device: torch.device, level: int, precision: str,
                batch_size: int = 2000) -> torch.Tensor:
    """float32 logits with airbench's TTA: level 1 averages the image and its mirror; level 2 also
    averages the two 1-pixel diagonal translations (reflect padding), weighted 1/2 : 1/4 : 1/4."""
    model.eval()
    out = []

    def run(x):
        with train.autocast(device, precision):
            return model(x).float()

    def mirror(x):
        return 0.5 * run(x) + 0.5 * run(x.flip(-1)) if level >= 1 else run(x)

    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size].to(device))
        logits = mirror(x)
        if level >= 2:
            padded = F.pad(x, (1,) * 4, mode="reflect")
            shifted = 0.5 * mirror(padded[:, :, 0:32, 0:32]) + 0.5 * mirror(padded[:, :, 2:34, 2:34])
            logits = 0.5 * logits + 0.5 * shifted
        out.append(logits.cpu())
    return torch.cat(out)


# =======================================================================================
# Training
# =======================================================================================
def run_key(cfg: dict, h: dict, seed: int, per_class, min_epoch_images: int, train_split, test_split) -> dict:
    return {"model": NAME, "version": STRONG_VERSION, "hyp": h, "seed": seed, "per_class": per_class,
            "min_epoch_images": min_epoch_images, "train_per_class": cfg["train_per_class"],
            "test_per_class": cfg["test_per_class"],
            "train_data": artifacts.hash_tensor(train_split.images) + artifacts.hash_tensor(train_split.labels),
            "test_data": artifacts.hash_tensor(test_split.images) + artifacts.hash_tensor(test_split.labels)}


def train_strong(profile: str = "full", *, seed: int = 0, per_class: int | None = None, min_epoch_images: int = 0,
                 data_dir=None, device: str = "auto", force: bool = False, progress: bool | None = None) -> dict:
    """Train (or reuse) the strong recipe; returns its metrics (test accuracy with and without TTA).

    ``per_class``: a stratified subset (data-efficiency points); small subsets are repeated so an epoch
    holds ``min_epoch_images`` images (the same number of optimiser steps as a bigger set)."""
    cfg = config.get_profile(profile)
    h = hyp_for(profile)
    train_split, test_split = data.load_profile_data(cfg, data_dir or None)
    idx = np.arange(len(train_split))
    if per_class is not None:
        idx = data.stratified_subset(train_split.labels, per_class, seed)
        if len(idx) == len(train_split):
            per_class = None
    if len(idx) >= min_epoch_images:
        min_epoch_images = 0
    key = run_key(cfg, h, seed, per_class, min_epoch_images, train_split, test_split)
    out_dir = artifacts.artifact_dir(profile, "strong", NAME, key)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    if (out_dir / "metrics.json").exists():
        return artifacts.read_json(out_dir / "metrics.json")

    dev = train.resolve_device(device)
    reps = max(1, math.ceil(min_epoch_images / len(idx)))
    fit_idx = torch.as_tensor(np.tile(idx, reps))
    x_all = train_split.images[fit_idx].to(dev)
    y_all = train_split.labels[fit_idx].to(dev)
    n = len(fit_idx)
    bs = min(h["batch_size"], n)
    steps_per_epoch = n // bs  # drop the last partial batch, as airbench
    total_steps = steps_per_epoch * h["epochs"]

    torch.manual_seed(seed)
    model = strong_cnn().to(dev).to(memory_format=torch.channels_last)
    whiten_src = train_split.images[torch.as_tensor(idx[:h["whiten_images"]])].to(dev)
    init_whitening(model[0], normalize(whiten_src), h["whiten_eps"])

    kilostep_scale = 1024 * (1 + 1 / (1 - h["momentum"]))
    lr = h["lr"] / kilostep_scale                              # per summed-loss example, for torch SGD
    wd = h["weight_decay"] * bs / kilostep_scale
    lr_biases = lr * h["bias_scaler"]
    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    other = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    opt = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                           dict(params=other, lr=lr, weight_decay=wd / lr)], momentum=h["momentum"], nesterov=True)

    def lr_factor(step: int) -> float:
        warm = int(total_steps * h["warmup_frac"])
        if step < warm:
            return 0.2 + 0.8 * step / warm
        return 1.0 - 0.93 * (step - warm) / max(total_steps - warm, 1)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    ema_decay = 0.95 ** h["ema_every"] * (torch.arange(total_steps + 1) / max(total_steps, 1)) ** 3
    loss_fn = nn.CrossEntropyLoss(label_smoothing=h["label_smoothing"], reduction="none")
    gen = torch.Generator().manual_seed(seed)
    flip_mask = torch.rand(n, generator=gen) < 0.5  # alternating flips: epoch e flips mask XOR (e odd)
    history, step = [], 0
    bar = sys.stderr.isatty() if progress is None else progress
    t_start = time.perf_counter()
    for epoch in range(h["epochs"]):
        t0 = time.perf_counter()
        model[0].bias.requires_grad_(epoch < h["whiten_bias_epochs"])
        model.train()
        order = torch.randperm(n, generator=gen)
        flips = (flip_mask ^ bool(epoch % 2)).to(dev)
        loss_sum = correct = seen = 0
        for s in tqdm(range(steps_per_epoch), desc=f"strong epoch {epoch + 1}", leave=False, disable=not bar):
            b = order[s * bs:(s + 1) * bs].to(dev)
            x = x_all[b]
            x = torch.where(flips[b][:, None, None, None], x.flip(-1), x)
            x = random_translate(normalize(x), h["translate"], gen).contiguous(memory_format=torch.channels_last)
            y = y_all[b]
            with train.autocast(dev, h["precision"]):
                out = model(x)
            loss = loss_fn(out.float(), y).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % h["ema_every"] == 0:
                _ema_update(model, ema, float(ema_decay[step]))
            loss_sum += loss.item()
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                        "seconds": time.perf_counter() - t0})
    _ema_update(model, ema, 1.0)  # final weights = the average
    train_seconds = time.perf_counter() - t_start
    t0 = time.perf_counter()
    logits_tta = predict_tta(model, test_split.images, dev, h["tta_level"], h["precision"])
    tta_seconds = time.perf_counter() - t0
    logits_plain = predict_tta(model, test_split.images, dev, 0, h["precision"])
    y_test = test_split.labels
    counts = models.count_params(model)
    metrics = {"model": NAME, "profile": profile, "key": key, "strategy": "from scratch, strong recipe (not the reference protocol)",
               "test_acc": (logits_tta.argmax(1) == y_test).float().mean().item(),
               "test_acc_no_tta": (logits_plain.argmax(1) == y_test).float().mean().item(),
               "test_n": len(y_test), "train_images": len(idx), "train_n": n, "repeats": reps,
               "epochs": h["epochs"], "steps": total_steps, "seed": seed, "train_seconds": train_seconds,
               "tta_seconds": tta_seconds, "images_per_s": steps_per_epoch * bs * h["epochs"] / train_seconds,
               "params_total": counts["total"], "device": str(dev), "precision": h["precision"],
               "environment": train.environment()}
    artifacts.torch_save(out_dir / "model.pt", {k: v.cpu() for k, v in model.state_dict().items()})
    artifacts.torch_save(out_dir / "test_logits.pt", logits_tta)
    artifacts.write_bytes(out_dir / "history.csv", pd.DataFrame(history).to_csv(index=False).encode())
    artifacts.write_json(out_dir / "metrics.json", metrics)  # last: marks the run finished
    print(f"{NAME} seed {seed} ({len(idx):,} images x{reps}): {100 * metrics['test_acc']:.2f}% with TTA, "
          f"{100 * metrics['test_acc_no_tta']:.2f}% without, {train_seconds:.1f} s on {dev}", flush=True)
    return metrics


@torch.no_grad()
def _ema_update(model: nn.Module, ema: dict, decay: float) -> None:
    """Lookahead (airbench): ema <- lerp(ema, weights, 1 - decay); weights <- ema (float tensors only)."""
    for (k, e), p in zip(ema.items(), model.state_dict().values()):
        if p.dtype.is_floating_point:
            e.lerp_(p, 1 - decay)
            p.copy_(e)


class Deployable(nn.Module):
    """The trained strong network behind its normalisation: uint8 32x32 images in, logits out (no TTA)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(normalize(x))


def load_deployable(profile: str, seed: int) -> tuple[Deployable, Path] | None:
    """The full-data strong run of ``seed`` (current version) as a deployable model, or None if absent."""
    runs = finished_runs(profile)
    if runs.empty:
        return None
    hit = runs[runs.per_class.isna() & (runs.seed == seed) & (runs.version == STRONG_VERSION)]
    for run in hit.run:
        folder = config.artifacts_dir() / profile / "strong" / run
        if (folder / "model.pt").exists():
            net = strong_cnn()
            net.load_state_dict(torch.load(folder / "model.pt", map_location="cpu"))
            return Deployable(net).eval(), folder
    return None


def finished_runs(profile: str) -> pd.DataFrame:
    """Every finished strong run of ``profile`` in the artifact store, one row each."""
    rows = []
    for marker in sorted((config.artifacts_dir() / profile / "strong").glob(f"{NAME}-*/metrics.json")):
        m = artifacts.read_json(marker)
        rows.append({"seed": m["seed"], "per_class": m["key"]["per_class"], "train_images": m["train_images"],
                     "test_acc": m["test_acc"], "test_acc_no_tta": m["test_acc_no_tta"], "steps": m["steps"],
                     "train_seconds": m["train_seconds"], "images_per_s": m["images_per_s"], "device": m["device"],
                     "gpu": m["environment"].get("gpu", ""), "version": m["key"]["version"], "run": marker.parent.name})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    """``python -m studylib.strong --profile full --device cuda --seeds 0 1 2 [--per-class 10 100]``"""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, nargs="*", default=[], help="data-efficiency points (images per class)")
    ap.add_argument("--min-epoch-images", type=int, default=50000)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    for seed in args.seeds:
        train_strong(args.profile, seed=seed, device=args.device, force=args.force)
        for pc in args.per_class:
            train_strong(args.profile, seed=seed, per_class=pc, min_epoch_images=args.min_epoch_images,
                         device=args.device, force=args.force)


if __name__ == "__main__":
    main()
