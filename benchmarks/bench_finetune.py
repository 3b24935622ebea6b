#!/usr/bin/env python
"""CPU cost of fine-tuning MobileNetV2 end to end (studylib.finetune) by input size, in one process.

Baseline at each size: the linear probe's expensive step, one frozen-backbone forward pass (bf16
autocast, eval mode) over a batch of 128, i.e. feature extraction, which the probe pays once.
Measured: one fine-tuning step at that size (forward + backward + Adam over every layer, bf16
autocast, channels_last, BatchNorm in training mode) on the same batch, and at ``--fp32-size`` the
same step without autocast. Random uint8 images (speed does not depend on pixel values). Prints
images/s, the ratio to the baseline and what the 15-epoch budget over 50,000 images comes to.

    python benchmarks/bench_finetune.py --sizes 64 96 128 --steps 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_strong import time_steps  # noqa: E402  (the sibling benchmark's warm-up + timing loop)

from studylib import config, finetune, probes, train, transfer  # noqa: E402


def images_per_s(step, n_steps: int, batch: int) -> float:
    return n_steps * batch / time_steps(step, n_steps, warmup=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v2_float")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    ap.add_argument("--fp32-size", type=int, default=96, help="size also timed without bf16 autocast (0: none)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement, after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.get_profile("full")
    dev, bs = torch.device("cpu"), cfg["batch_size"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (bs, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (bs,), generator=gen)
    budget = cfg["epochs"] * 50_000
    print(f"{args.model}, batch {bs}, {args.threads} threads, {train.environment()['cpu']}")
    for size in args.sizes:
        model = finetune.FineTuneNet(probes.with_input_size(transfer.build_transfer(args.model), size))
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=finetune.HYP["lr"])

        @torch.no_grad()
        def extract():
            model.eval()
            with train.autocast(dev, "bf16"):
                model.backbone(model.preprocess(x))

        def make_step(precision):
            def step():
                model.train()
                with train.autocast(dev, precision):
                    out = model(x)
                loss = F.cross_entropy(out.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return step

        base = images_per_s(extract, args.steps, bs)
        precisions = ("bf16", "fp32") if size == args.fp32_size else ("bf16",)
        for precision in precisions:
            ips = images_per_s(make_step(precision), args.steps, bs)
            print(f"{size:>4} px  frozen forward (baseline) {base:7.1f} img/s | fine-tune step {precision} {ips:6.1f} img/s "
                  f"= {ips / base:.3f}x | 15 epochs x 50,000 images: {budget / ips / 60:5.0f} min "
                  f"(probe features once: {60_000 / base / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
