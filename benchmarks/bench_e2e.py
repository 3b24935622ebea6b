#!/usr/bin/env python
"""The whole study, stage by stage: studylib's way against the plain way, on the same subset, in
one process (machines are noisy: only ratios measured side by side mean anything).

Per stage it prints wall time on the subset, images/s, the ratio to the plain approach, and the
full-protocol time both extrapolate to. Stages and their plain baselines:

  data       load + validate CIFAR-10 into uint8 tensors  | torchvision.datasets.CIFAR10 + per-image ToTensor
  scratch    Custom CNN / ViT training (fit: batched uint8  | fp32 eager, per-image PIL transforms in a DataLoader
             augmentation, bf16 autocast, channels_last)    |   (benchmarks/bench_scratch.py)
  features   frozen-backbone extraction (bf16, channels_last,| fp32 eager NCHW batch 128
             inference_mode), once per image               |
  heads      15 epochs on cached features                  | the backbone re-run every epoch (bench_transfer.py)
  evaluate   test-set logits, batch 500, bf16              | fp32, batch 128

    python benchmarks/bench_e2e.py                 # ~5-10 min on 2 cores
    python benchmarks/bench_e2e.py --images 1280   # smaller subsets, faster, noisier
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scratch  # noqa: E402  (sibling benchmark scripts: their baselines are reused, not rewritten)
import bench_transfer  # noqa: E402

from studylib import config, data, features, train  # noqa: E402

FULL = {"train": 50_000, "test": 10_000, "epochs": config.PROTOCOL["epochs"]}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def stage_data(n_plain: int) -> tuple[float, float]:
    """(ours img/s, plain img/s) turning the CIFAR-10 files into training tensors. The plain way is
    torchvision's CIFAR10 dataset (pickle -> HWC array -> one PIL image + ToTensor per item); it is
    re-enacted here because torchvision's class refuses this machine's copy (other md5s, same pixels)."""
    import pickle

    import numpy as np
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    folder, _ = data.resolve_data_dir()
    seconds, split = timed(lambda: data.load_cifar10("train"))
    ours = len(split) / seconds

    def plain():
        with open(folder / data.TRAIN_FILES[0], "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        hwc = np.asarray(batch["data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return torch.stack([to_tensor(Image.fromarray(hwc[i])) for i in range(n_plain)])

    seconds, _ = timed(plain)
    return ours, n_plain / seconds


def stage_features(name: str, images: torch.Tensor) -> tuple[float, float]:
    """(ours img/s, plain img/s) of frozen-backbone extraction."""
    model = bench_transfer.build(name)
    ours = bench_transfer.extraction_rate(model, images, precision="bf16", channels_last=True,
                                          batch_size=features.BATCH)
    plain = bench_transfer.extraction_rate(model, images, precision="fp32", channels_last=False, batch_size=128)
    return ours, plain


def stage_evaluate(name: str, images: torch.Tensor) -> tuple[float, float]:
    cfg = config.get_profile("full")
    aug = train.scratch_augment(cfg)
    torch.manual_seed(0)
    model = bench_scratch.models.build_model(name)
    cpu = torch.device("cpu")
    ours, _ = timed(lambda: train.predict_logits(model, images, aug.normalize, cpu, "bf16",
                                                 train.use_channels_last(name, "bf16")))
    plain, _ = timed(lambda: train.predict_logits(model, images, aug.normalize, cpu, "fp32", batch_size=128))
    return len(images) / ours, len(images) / plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2560, help="training images per scratch measurement")
    ap.add_argument("--feature-images", type=int, default=256, help="images per extraction measurement")
    ap.add_argument("--backbone", default="mobilenet_v2")
    args = ap.parse_args()
    env = train.environment()
    print(f"{env['cpu']}, {env['threads']} threads, torch {env['torch']}\n")
    cfg = config.get_profile("full")
    full_train, test = data.load_cifar10("train"), data.load_cifar10("test")
    train_set = full_train.subset(data.stratified_subset(full_train.labels, args.images // 10, 0))
    feat_images = full_train.images[:args.feature_images]
    rows = []  # (stage, ours img/s, plain img/s, images the full protocol pushes through this stage)

    ours, plain = stage_data(n_plain=5000)
    rows.append(("data: CIFAR-10 -> tensors", ours, plain, FULL["train"]))
    for name in train.SCRATCH_MODELS:
        base = bench_scratch.baseline_images_per_s(name, train_set, cfg)
        tr, _ = bench_scratch.engine_images_per_s(name, train_set, test.subset(torch.arange(10)), cfg, "bf16")
        rows.append((f"train {name} (per epoch image)", tr, base, FULL["epochs"] * FULL["train"]))
        ours, plain = stage_evaluate(name, test.images[:2000])
        rows.append((f"evaluate {name} (test image)", ours, plain, FULL["epochs"] * FULL["test"]))
    ours, plain = stage_features(args.backbone, feat_images)
    rows.append((f"features {args.backbone} (once per image)", ours, plain, FULL["train"] + FULL["test"]))
    # Heads: ours = extraction once + 15 cheap epochs; plain = the backbone in every epoch (train + test).
    head_s = bench_transfer.head_epoch_seconds(args.backbone) * FULL["epochs"]
    plain_per_image = bench_transfer.reference_way(args.backbone, feat_images, torch.arange(len(feat_images)) % 10)
    ours_total = (FULL["train"] + FULL["test"]) / rows[-1][1] + head_s
    plain_total = plain_per_image * FULL["epochs"] * FULL["train"]
    per_epoch_images = FULL["epochs"] * FULL["train"]
    rows.append((f"transfer row {args.backbone} (features + head)", per_epoch_images / ours_total,
                 per_epoch_images / plain_total, per_epoch_images))

    print(f"{'stage':<44}{'ours img/s':>11}{'plain img/s':>12}{'ratio':>8}{'full: ours':>12}{'plain':>10}")
    tot_ours = tot_plain = 0.0
    for stage, ours, plain, n in rows:
        t_ours, t_plain = n / ours / 60, n / plain / 60
        tot_ours += t_ours
        tot_plain += t_plain
        print(f"{stage:<44}{ours:>11.1f}{plain:>12.1f}{ours / plain:>7.1f}x{t_ours:>9.1f} min{t_plain:>7.0f} min")
    print(f"\nExtrapolated full protocol for the stages above (one transfer row): ours {tot_ours:.0f} min, "
          f"plain {tot_plain:.0f} min ({tot_plain / tot_ours:.1f}x). Each additional transfer row adds its "
          f"features + head time.")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:  # nothing this benchmark trains lands in the artifact store
        os.environ[config.ARTIFACTS_DIR_ENV] = tmp
        main()
