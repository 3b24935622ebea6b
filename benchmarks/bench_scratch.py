#!/usr/bin/env python
"""Training throughput of the engine against plain PyTorch, measured in the same run.

Baseline: the way the reference trains: fp32 eager, a torchvision per-image PIL transform
pipeline (RandomCrop, flip, ToTensor, Normalize, CutOut) in a DataLoader, MixUp/CutMix on
the batch. Engine: studylib.train.fit with batched uint8 tensor augmentation, in fp32 and
in bf16 autocast (+ channels_last for the CNN). Prints images/s, the ratio to the baseline
and the full-protocol time it extrapolates to (15 epochs x 50,000 images + 15 test passes).

    python benchmarks/bench_scratch.py                     # both models, throughput only
    python benchmarks/bench_scratch.py --accuracy          # + a short fp32 vs bf16 accuracy check
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from studylib import config, data, models, train

FULL_TRAIN_IMAGES = 15 * 50_000
FULL_EVAL_IMAGES = 15 * 10_000


class PILCutout:
    """Per-image CutOut on a normalised tensor (the reference's per-image style)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(0, cy - self.size // 2), min(h, cy + self.size // 2)
        x0, x1 = max(0, cx - self.size // 2), min(w, cx + self.size // 2)
        img = img.clone()
        img[:, y0:y1, x0:x1] = 0
        return img


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, tf):
        self.images = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
        self.labels, self.tf = labels, tf

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.tf(self.images[i]), self.labels[i]


def baseline_images_per_s(name: str, train_set: data.CifarSplit, cfg: dict) -> float:
    """fp32 eager, per-image PIL transforms, batch-level MixUp/CutMix: the plain approach."""
    a = cfg["scratch_augment"]
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=a["crop_padding"]), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(config.CIFAR10_MEAN, config.CIFAR10_STD),
        PILCutout(a["cutout_size"]),
    ])
    loader = torch.utils.data.DataLoader(PILDataset(train_set.images, train_set.labels, tf),
                                         batch_size=cfg["batch_size"], shuffle=True, num_workers=0)
    torch.manual_seed(0)
    model = models.build_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    t0, n = time.perf_counter(), 0
    for x, y in loader:
        lam, perm = 1.0, torch.randperm(len(x))
        if np.random.rand() < a["mix_p"]:
            lam = float(np.random.beta(a["mixup_alpha"], a["mixup_alpha"]))
            x = lam * x + (1 - lam) * x[perm]
        logits = model(x)
        loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(x)
    return n / (time.perf_counter() - t0)


def engine_images_per_s(name: str, train_set: data.CifarSplit, test_set: data.CifarSplit, cfg: dict,
                        precision: str) -> tuple[float, float]:
    """(train images/s, eval images/s) of studylib's fit() for one epoch on the subset."""
    aug = train.scratch_augment(cfg)
    torch.manual_seed(0)
    model = models.build_model(name)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        logits = train.predict_logits(model, test_set.images, aug.normalize, torch.device("cpu"), precision,
                                      train.use_channels_last(name, precision))
        eval_s = time.perf_counter() - t0
        res = train.fit(model, train_set.images, train_set.labels, test_set.images[:1], test_set.labels[:1],
                        out_dir=Path(tmp), epochs=1, batch_size=cfg["batch_size"], lr=1e-3, weight_decay=1e-4,
                        seed=0, prepare=aug.normalize, augment=aug, device="cpu", precision=precision,
                        channels_last=train.use_channels_last(name, precision), progress=False)
    assert len(logits) == len(test_set)
    return len(train_set) / res.history.seconds.iloc[0], len(test_set) / eval_s


def accuracy_check(name: str, per_class: int, epochs: int) -> None:
    """Same short run in fp32 and bf16 autocast: does bf16 cost accuracy?"""
    accs = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[config.ARTIFACTS_DIR_ENV] = tmp
        for precision in ("fp32", "bf16"):
            r = train.train_from_scratch(name, "quick", epochs=epochs, train_per_class=per_class,
                                         test_per_class=200, precision=precision, progress=False)
            accs[precision] = r.metrics["test_acc"]
    print(f"  accuracy after {epochs} epochs on {10 * per_class:,} images (2,000 test): fp32 {100 * accs['fp32']:.2f}%"
          f"  bf16 {100 * accs['bf16']:.2f}%  difference {100 * (accs['bf16'] - accs['fp32']):+.2f} points")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(train.SCRATCH_MODELS), choices=train.SCRATCH_MODELS)
    ap.add_argument("--images", type=int, default=2560, help="training images per measurement")
    ap.add_argument("--accuracy", action="store_true", help="also compare fp32 and bf16 accuracy on a short run")
    args = ap.parse_args()

    cfg = config.get_profile("full")
    full_train = data.load_cifar10("train")
    train_set = full_train.subset(data.stratified_subset(full_train.labels, args.images // 10, 0))
    test = data.load_cifar10("test")
    test_set = test.subset(data.stratified_subset(test.labels, 100, 0))
    env = train.environment()
    print(f"{env['cpu']}, {env['threads']} threads, torch {env['torch']}; {len(train_set)} training images per run")
    for name in args.models:
        base = baseline_images_per_s(name, train_set, cfg)
        print(f"\n{name}")
        print(f"  {'variant':<44}{'img/s':>8}{'x baseline':>12}{'full protocol':>16}")
        rows = [("baseline: fp32 eager, per-image PIL pipeline", base, None)]
        for precision in ("fp32", "bf16"):
            tr, ev = engine_images_per_s(name, train_set, test_set, cfg, precision)
            label = f"engine: batched aug, {precision}" + (", channels_last" if train.use_channels_last(name, precision) else "")
            rows.append((label, tr, ev))
        for label, tr, ev in rows:
            # Baseline evaluation is assumed as fast as the engine's fp32 evaluation (generous to it).
            ev = ev or rows[1][2]
            minutes = (FULL_TRAIN_IMAGES / tr + FULL_EVAL_IMAGES / ev) / 60
            print(f"  {label:<44}{tr:>8.0f}{tr / base:>11.2f}x{minutes:>13.1f} min")
        if args.accuracy:
            accuracy_check(name, per_class=300, epochs=3)


if __name__ == "__main__":
    main()
