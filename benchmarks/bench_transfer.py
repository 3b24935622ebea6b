#!/usr/bin/env python
"""Cached-feature head training against the reference's way, measured in one run.

Baseline (the reference's way): every epoch, every training image goes through the frozen
backbone in fp32 eager (NCHW, batch 128) before the head's step, and every test image is
pushed through again for the per-epoch evaluation: train.fit on the deployable model with
``params=head``. Ours: the backbone runs once per image (studylib.features settings: bf16
autocast, channels_last, batch 64, inference_mode), then train.fit trains the head on the
cached features. Both are timed on a subset and extrapolated to the full protocol:
15 epochs x (50,000 train + 10,000 test) images for the baseline; 60,000 extractions + 15
head epochs on 50,000 cached features for ours. Prints the ratio.

Also prints an extraction sweep (precision, memory format, batch size) in images/s and the
projected time to extract the 60,000 images for every backbone available offline.

    python benchmarks/bench_transfer.py                    # mobilenet_v2, 256-image subset
    python benchmarks/bench_transfer.py --sweep            # + extraction settings sweep
    python benchmarks/bench_transfer.py --compile          # + torch.compile in the sweep (slow to compile)
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from studylib import config, data, features, models, train, transfer, weights

FULL_TRAIN, FULL_TEST, EPOCHS = 50_000, 10_000, config.PROTOCOL["epochs"]


def load_images(n: int) -> torch.Tensor:
    """Real CIFAR-10 training images when available (speed does not depend on content)."""
    try:
        return data.load_cifar10("train").images[:n]
    except data.DataError:
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def build(name: str) -> transfer.TransferNet:
    try:
        return models.build_model(name)
    except weights.WeightsUnavailable:
        print(f"  ({name}: no pretrained weights here; timing the architecture with untrained weights)")
        return models.build_model(name, weights_spec=None)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def reference_way(name: str, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Seconds per image-epoch (train step + its share of the per-epoch test pass) of the baseline."""
    model = build(name)
    n_test = max(1, len(images) * FULL_TEST // FULL_TRAIN)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = timed(lambda: train.fit(
            model, images, labels, images[:n_test], labels[:n_test], out_dir=Path(tmp), epochs=1, batch_size=128,
            lr=1e-3, weight_decay=1e-4, seed=0, prepare=lambda x: x, device="cpu", precision="fp32",
            params=model.head, progress=False))
    return seconds / len(images)


def extraction_rate(model: transfer.TransferNet, images: torch.Tensor, **kw) -> float:
    """Images/s of features.extract after one warm-up batch."""
    features.extract(model, images[:kw.get("batch_size", features.BATCH)], progress=False, **kw)
    return len(images) / timed(lambda: features.extract(model, images, progress=False, **kw))


def head_epoch_seconds(name: str, n: int = FULL_TRAIN) -> float:
    """One head epoch on n cached (bf16) features + the 10,000-feature test pass."""
    dim = transfer.ARCHS[transfer.arch_of(name)].feature_dim
    g = torch.Generator().manual_seed(0)
    ftr = torch.rand(n, dim, generator=g).to(torch.bfloat16)
    fte = torch.rand(FULL_TEST, dim, generator=g).to(torch.bfloat16)
    ytr, yte = torch.randint(0, 10, (n,), generator=g), torch.randint(0, 10, (FULL_TEST,), generator=g)
    cfg = config.get_profile("full", epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        return timed(lambda: transfer.fit_head(name, cfg, ftr, ytr, fte, yte, Path(tmp), device="cpu",
                                               progress=False))


def sweep(name: str, images: torch.Tensor, with_compile: bool) -> None:
    model = build(name)
    print(f"\nextraction sweep, {name}, {len(images)} images (images/s; higher is better)")
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            for bs in ((32, 64, 128) if precision == "bf16" and cl else (64,)):
                rate = extraction_rate(model, images, precision=precision, channels_last=cl, batch_size=bs)
                print(f"  {precision:4s} autocast={'yes' if precision == 'bf16' else 'no ':3s} "
                      f"{'channels_last' if cl else 'NCHW         '} batch {bs:3d}: {rate:6.1f}", flush=True)
    bf16w = copy.deepcopy(model).to(torch.bfloat16)  # bf16 weights and activations, no autocast
    bf16w.preprocess.float()
    orig = bf16w.backbone
    bf16w.backbone = torch.nn.Sequential(_ToBF16(), orig)
    rate = extraction_rate(bf16w, images, precision="fp32", channels_last=True, batch_size=64)
    print(f"  bf16 weights (no autocast)   channels_last batch  64: {rate:6.1f}", flush=True)
    if with_compile:
        compiled = copy.deepcopy(model)
        compiled.backbone = torch.compile(compiled.backbone)
        t0 = time.perf_counter()
        rate = extraction_rate(compiled, images, precision="bf16", channels_last=True, batch_size=64)
        print(f"  bf16 autocast + torch.compile channels_last batch 64: {rate:6.1f} "
              f"(compile + warm-up {time.perf_counter() - t0 - len(images) / rate:.0f} s)", flush=True)


class _ToBF16(torch.nn.Module):
    def forward(self, x):
        return x.to(torch.bfloat16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mobilenet_v2", choices=transfer.TRANSFER_MODELS)
    ap.add_argument("--n", type=int, default=256, help="subset size (images) for both timings")
    ap.add_argument("--sweep", action="store_true", help="also sweep extraction settings")
    ap.add_argument("--compile", action="store_true", help="include torch.compile in the sweep")
    args = ap.parse_args()
    print(f"environment: {train.environment()}")
    images = load_images(args.n)
    labels = torch.arange(len(images)) % 10

    print(f"\n[1] reference way: {args.backbone} fp32 eager NCHW every epoch, {len(images)} train images + "
          f"{len(images) * FULL_TEST // FULL_TRAIN} test images per epoch", flush=True)
    ref_per_image = reference_way(args.backbone, images, labels)
    ref_full = ref_per_image * EPOCHS * FULL_TRAIN
    print(f"    {1 / ref_per_image:.1f} train images/s (test pass included) -> full protocol "
          f"{ref_full / 3600:.2f} h", flush=True)

    print(f"\n[2] cached features: extraction once ({features.BATCH}/batch, "
          f"{config.PROTOCOL['feature_precision']} autocast, channels_last) + head on cached features", flush=True)
    model = build(args.backbone)
    rate = extraction_rate(model, images, precision=config.PROTOCOL["feature_precision"])
    head_epoch = head_epoch_seconds(args.backbone)
    ours_full = (FULL_TRAIN + FULL_TEST) / rate + EPOCHS * head_epoch
    print(f"    extraction {rate:.1f} images/s -> 60,000 images {60_000 / rate / 60:.1f} min; head {head_epoch:.2f} s "
          f"per epoch on 50,000 features -> full protocol {ours_full / 60:.1f} min", flush=True)
    print(f"\nRATIO (reference way / cached features, full protocol extrapolated): {ref_full / ours_full:.1f}x")

    print("\n[3] projected extraction of 60,000 images for every backbone available offline:")
    total = 0.0
    for name in transfer.TRANSFER_MODELS:
        try:
            m = models.build_model(name)
        except weights.WeightsUnavailable:
            print(f"    {name:20s} not available (no pretrained weights)")
            continue
        r = rate if transfer.arch_of(name) == transfer.arch_of(args.backbone) else extraction_rate(
            m, images, precision=config.PROTOCOL["feature_precision"])
        total += 60_000 / r
        print(f"    {name:20s} {r:6.1f} images/s -> {60_000 / r / 60:5.1f} min", flush=True)
    print(f"    together: {total / 60:.1f} min (target: 10 min)")

    if args.sweep:
        sweep(args.backbone, images, args.compile)


if __name__ == "__main__":
    main()
