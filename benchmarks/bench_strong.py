#!/usr/bin/env python
"""CPU speed of the strong recipe (studylib.strong) against the reference Custom CNN, same process.

Baseline: the reference protocol's Custom CNN training step (Adam, bf16 autocast, channels_last,
batch 128, studylib's batched augmentation). Measured: the strong recipe's training step (its own
batch of 1024, bf16 autocast, channels_last, flips + translation, Nesterov SGD) and its TTA
inference. Both on random uint8 images (speed does not depend on pixel values). Prints images/s,
the ratio, and the wall time the full runs extrapolate to on this machine:
  strong: 10 epochs x 48 steps x 1024 images + 10,000 test images x 6 TTA passes (level 2)
  Custom CNN: 15 epochs x 50,000 images + 15 test passes of 10,000 images
and writes them to <artifacts>/bench/strong_cpu.json for notebook 08.

``--full-run`` measures the issue's target directly instead of extrapolating: one complete
full-profile run of the recipe on this CPU (data loading, whitening, 10 epochs, TTA evaluation),
timed end to end, in a throw-away artifact store (so it never stands in for the GPU runs that
notebook 08 reads). Its test accuracy and wall time go to
<artifacts>/bench/strong_cpu_run-<profile>.json (``--profile quick``: a seconds-long smoke run).

    python benchmarks/bench_strong.py --steps 20        # steps timed per model, after 2 warm-up steps
    python benchmarks/bench_strong.py --full-run        # ~15-20 min on 2 quiet cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from studylib import artifacts, config, models, strong, train


def time_steps(step, n_steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full-run", action="store_true", help="time one complete full-profile run instead")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --full-run")
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full", help="profile of the --full-run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.full_run:
        return full_run(args.profile, args.seed, args.threads)
    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    h = strong.HYP

    # Baseline: the reference Custom CNN step.
    cfg = config.get_profile("full")
    cnn = models.build_model("custom_cnn").to(memory_format=torch.channels_last)
    aug = train.scratch_augment(cfg)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3, weight_decay=1e-4)
    xb = torch.randint(0, 256, (cfg["batch_size"], 3, 32, 32), dtype=torch.uint8, generator=gen)
    yb = torch.randint(0, 10, (cfg["batch_size"],), generator=gen)

    def cnn_step():
        batch = aug(xb, yb, gen)
        with train.autocast(dev, "bf16"):
            out = cnn(batch.images.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(out.float(), batch.labels_a)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    cnn_s = time_steps(cnn_step, args.steps)
    cnn_ips = args.steps * cfg["batch_size"] / cnn_s

    # The strong recipe's step.
    net = strong.strong_cnn().to(memory_format=torch.channels_last)
    sopt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.85, nesterov=True)
    xs = torch.randint(0, 256, (h["batch_size"], 3, 32, 32), dtype=torch.uint8, generator=gen)
    ys = torch.randint(0, 10, (h["batch_size"],), generator=gen)

    def strong_step():
        x = strong.random_translate(strong.normalize(xs.flip(-1)), h["translate"], gen)
        with train.autocast(dev, h["precision"]):
            out = net(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(out.float(), ys, label_smoothing=h["label_smoothing"], reduction="sum")
        sopt.zero_grad(set_to_none=True)
        loss.backward()
        sopt.step()

    strong_steps = max(2, args.steps // 4)  # a 1024-image step is 8x a 128-image one
    strong_s = time_steps(strong_step, strong_steps, warmup=1)
    strong_ips = strong_steps * h["batch_size"] / strong_s
    t0 = time.perf_counter()
    strong.predict_tta(net, xs, dev, h["tta_level"], h["precision"], batch_size=512)
    tta_ips = len(xs) / (time.perf_counter() - t0)

    strong_train_images = h["epochs"] * (50_000 // h["batch_size"]) * h["batch_size"]
    strong_wall = strong_train_images / strong_ips + 10_000 / tta_ips
    cnn_wall = 15 * 50_000 / cnn_ips
    result = {"threads": args.threads, "cnn_steps": args.steps, "strong_steps": strong_steps,
              "custom_cnn_train_images_per_s": cnn_ips, "strong_train_images_per_s": strong_ips,
              "strong_tta_test_images_per_s": tta_ips, "strong_vs_cnn_speed_ratio": strong_ips / cnn_ips,
              "strong_full_run_s_extrapolated": strong_wall, "custom_cnn_full_train_s_extrapolated": cnn_wall,
              "environment": train.environment()}
    print(f"Custom CNN (baseline) train: {cnn_ips:7.1f} images/s -> 15 epochs x 50,000 = {cnn_wall / 60:.1f} min")
    print(f"strong recipe train:       {strong_ips:7.1f} images/s ({strong_ips / cnn_ips:.2f}x the baseline), "
          f"TTA test {tta_ips:.1f} images/s -> full run {strong_wall / 60:.1f} min on {args.threads} threads")
    path = artifacts.write_json(config.artifacts_dir() / "bench" / "strong_cpu.json", result)
    print(f"wrote {path}")


def full_run(profile: str, seed: int, threads: int) -> None:
    """One whole strong run of ``profile`` on the CPU, timed end to end (what the 20-min target means)."""
    out = config.artifacts_dir() / "bench" / f"strong_cpu_run-{profile}.json"
    previous = os.environ.get(config.ARTIFACTS_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="strong-cpu-run-") as store:
        os.environ[config.ARTIFACTS_DIR_ENV] = store  # a fresh store: nothing reused, nothing left behind
        try:
            t0 = time.perf_counter()
            m = strong.train_strong(profile, seed=seed, device="cpu", progress=False)
            wall = time.perf_counter() - t0
        finally:
            if previous is None:
                os.environ.pop(config.ARTIFACTS_DIR_ENV)
            else:
                os.environ[config.ARTIFACTS_DIR_ENV] = previous
    result = {"profile": profile, "seed": seed, "threads": threads, "wall_seconds": wall, "train_seconds": m["train_seconds"],
              "tta_seconds": m["tta_seconds"], "test_acc": m["test_acc"], "test_acc_no_tta": m["test_acc_no_tta"],
              "test_n": m["test_n"], "epochs": m["epochs"], "steps": m["steps"], "images_per_s": m["images_per_s"],
              "hyp": m["key"]["hyp"], "environment": m["environment"]}
    print(f"strong recipe, {profile} profile, seed {seed}, CPU {threads} threads: {100 * m['test_acc']:.2f}% with TTA "
          f"({100 * m['test_acc_no_tta']:.2f}% without) in {wall / 60:.1f} min wall "
          f"({m['train_seconds'] / 60:.1f} min training at {m['images_per_s']:.0f} images/s)")
    print(f"wrote {artifacts.write_json(out, result)}")


if __name__ == "__main__":
    main()
