"""A linear head on cached features against the reference's way (the frozen backbone re-run every epoch).

Per epoch of the head recipe, each way, timed on a small subset and scaled to 50,000 training and 10,000
test images:
  reference's way  every training image through the frozen backbone (fp32, eager, NCHW, batch 128) and
                   the head's Adam step (engine.train_one_epoch, head parameters only), then every test
                   image through the whole model again for the epoch's test accuracy (batched_logits, fp32);
  cached (study)   the head's steps on cached features (fp32, 1 thread, batch 128) and a test pass on the
                   cached test features; the backbone ran once per image before the first epoch
                   (studylib.recipes.features: train bf16 / test fp32, channels_last, batch 64).
Prints both per-epoch costs and their ratio, then the whole recipe (its epochs; the cached way pays the
one-time extraction too). Random uint8 images; ImageNet weights where available.

    python -m benchmarks.bench_transfer                                  # mobilenet_v2_float, 256 images, ~1-2 min
    python -m benchmarks.bench_transfer --backbone efficientnet_lite0 --n 512
    python -m benchmarks.bench_transfer --smoke                          # seconds: 8 images, checks the script only
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_limits import calls_per_s, head_images_per_s, random_images, train_images_per_s, transfer_model
from studylib import config, data, runtime
from studylib.models import backbones
from studylib.recipes import engine, features, heads

N_TRAIN = data.NUM_CLASSES * data.FULL_PER_CLASS["train"]  # 50,000
N_TEST = data.NUM_CLASSES * data.FULL_PER_CLASS["test"]    # 10,000
CPU = torch.device("cpu")


def reference_epoch_s(name: str, n: int, batch: int) -> float:
    """Seconds of one full-size epoch the reference's way, from ``n`` training and n/5 test images."""
    model, _ = transfer_model(name)  # frozen: only the head takes gradients; backbone in eval mode
    x, y = random_images(n)
    x_test = x[:max(1, n * N_TEST // N_TRAIN)]
    train_ips = train_images_per_s(model, lambda e: engine.shuffled_batches(x, y, seed=0, epoch=e, batch_size=batch),
                                   max(1, n // batch), precision="fp32", channels_last=False)
    test_ips = len(x_test) * calls_per_s(lambda: engine.batched_logits(model, x_test, device=CPU, precision="fp32",
                                                                       batch_size=batch), 1)
    return N_TRAIN / train_ips + N_TEST / test_ips


def cached_epoch_s(name: str, batch: int, head_steps: int) -> float:
    """Seconds of one full-size head epoch on cached features: the head's steps and the test pass."""
    head_ips, _ = head_images_per_s(name, batch, head_steps)
    head = backbones.make_head(name)
    test_feats = torch.randn(N_TEST, backbones.arch_of(name).feature_dim)  # the cached test features' shape
    with runtime.num_threads(heads.HEAD_THREADS):
        test_s = 1 / calls_per_s(lambda: engine.batched_logits(head, test_feats, device=CPU, precision="fp32"), 3)
    return N_TRAIN / head_ips + test_s


def extraction_s(name: str, n: int) -> float:
    """Seconds to extract every image's features once (training images bf16, test images fp32, as the study)."""
    model, _ = transfer_model(name)
    x, _ = random_images(n, seed=1)
    prec = config.PROTOCOL["feature_precision"]
    return (N_TRAIN / features.time_extraction(model, x, precision=prec["train"], device="cpu")
            + N_TEST / features.time_extraction(model, x, precision=prec["test"], device="cpu"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="mobilenet_v2_float", choices=backbones.TRANSFER_MODELS)
    ap.add_argument("--n", type=int, default=256, help="training images timed the reference's way (test: n/5)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="8 images, batch 8: checks the script only")
    args = ap.parse_args(argv)
    r = config.recipe("head")
    batch, head_steps = (8, 2) if args.smoke else (r["batch_size"], 200)
    n = 8 if args.smoke else args.n
    torch.set_num_threads(args.threads)
    runtime.check_machine_load("bench_transfer")
    print(f"{args.backbone}, {args.threads} threads ({heads.HEAD_THREADS} for the head), "
          f"{runtime.environment()['cpu']}; per epoch = {N_TRAIN:,} training + {N_TEST:,} test images")
    ref = reference_epoch_s(args.backbone, n, batch)
    cached = cached_epoch_s(args.backbone, batch, head_steps)
    once = extraction_s(args.backbone, n)
    epochs = r["epochs"]
    print(f"  reference's way: {ref / 60:8.1f} min per epoch (backbone fp32 on every image, timed on {n} images)")
    print(f"  cached features: {cached:8.2f} s per epoch (head on cached features) + {once / 60:.1f} min once "
          f"(extraction)")
    print(f"  per epoch: the reference's way costs {ref / cached:,.0f}x the cached epoch")
    print(f"  the head recipe's {epochs} epochs: reference's way {epochs * ref / 3600:.1f} h, cached "
          f"{(once + epochs * cached) / 60:.1f} min ({epochs * ref / (once + epochs * cached):.1f}x)")


if __name__ == "__main__":
    main()
