"""CPU cost of training MobileNetV2 end to end (the controlled grid's fine-tuning column) by input size.

Per input size:
  baseline   the frozen forward pass a linear probe pays once per image: features.time_extraction
             (bf16 autocast, eval mode, channels_last, batch 64);
  measured   one fine-tuning step as studylib.recipes.finetune trains: engine.train_one_epoch with
             crop + flip on the 32-px images, upscale, forward + backward + Adam over every layer,
             BatchNorm in training mode, bf16 autocast, channels_last, batch 128; at --fp32-size also
             without autocast.
Random uint8 images (speed does not depend on pixel values); ImageNet weights where available. Prints
images/s, how many times the frozen forward pass one training image costs, and what the finetune
recipe's epochs over the 50,000 training images come to (one run; the grid trains several).

    python -m benchmarks.bench_finetune                       # sizes 64 96 128, ~3-5 min on 2 cores
    python -m benchmarks.bench_finetune --sizes 64 --steps 2
    python -m benchmarks.bench_finetune --smoke               # seconds: 32 px, batch 8, 1 step
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_limits import random_images, train_images_per_s, transfer_model
from studylib import config, data, engine, features, runtime
from studylib.augment import CropFlip


def step_rate(model: torch.nn.Module, size_batch: int, steps: int, precision: str) -> float:
    """Training images/s of the finetune recipe's step (``size_batch`` images per step)."""
    r = config.recipe("finetune")
    crop_flip = CropFlip(r["augment"]["crop_padding"], r["augment"]["hflip_p"])
    x, y = random_images(size_batch * steps)
    return train_images_per_s(model, lambda e: engine.shuffled_batches(x, y, seed=0, epoch=e, batch_size=size_batch,
                                                                       augment=crop_flip),
                              steps, precision=precision, channels_last=True, lr=r["optimizer"]["lr"])


def main(argv: list[str] | None = None) -> None:
    g, r = config.grid("controlled"), config.recipe("finetune")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=g["backbone"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128], help="input sizes, px")
    ap.add_argument("--fp32-size", type=int, default=g["size"], help="size also timed without autocast (0: none)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement, after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="32 px, batch 8, 1 step: checks the script only")
    args = ap.parse_args(argv)
    batch = r["batch_size"]
    if args.smoke:
        args.sizes, args.fp32_size, args.steps, batch = [32], 32, 1, 8
    torch.set_num_threads(args.threads)
    runtime.check_machine_load("bench_finetune")
    n_train = data.NUM_CLASSES * data.FULL_PER_CLASS["train"]
    n_test = data.NUM_CLASSES * data.FULL_PER_CLASS["test"]
    budget = r["epochs"] * n_train  # training images of one fine-tuning run
    print(f"{args.model}, batch {batch}, {args.threads} threads, {runtime.environment()['cpu']}")
    for size in args.sizes:
        model, init = transfer_model(args.model, size=size, frozen=False)
        model.to(memory_format=torch.channels_last)  # as the finetune recipe
        base = features.time_extraction(model, random_images(min(batch, 64) * args.steps, seed=1)[0],
                                        precision="bf16", device="cpu")
        for precision in ("bf16", "fp32") if size == args.fp32_size else ("bf16",):
            ips = step_rate(model, batch, args.steps, precision)
            print(f"{size:>4} px ({init} weights)  frozen forward (baseline) {base:7.1f} img/s | fine-tune step "
                  f"{precision} {ips:6.1f} img/s = {base / ips:4.1f}x the forward's cost | {r['epochs']} epochs x "
                  f"{n_train:,} images: {budget / ips / 60:5.0f} min (probe features once: "
                  f"{(n_train + n_test) / base / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
