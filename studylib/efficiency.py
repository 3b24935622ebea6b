"""Data-efficiency points of the scratch models: the reference protocol (train.fit, the Custom CNN's
augmentation, Adam + cosine, 15 epochs, batch 128) on stratified training subsets.

A 15-epoch budget over 100 images would be 15 optimiser steps, so subsets smaller than the grid's
``min_epoch_images`` are repeated whole until an epoch holds that many images (the linear probes of
``studylib.probes`` follow the same rule). Runs live in ``<artifacts>/<profile>/efficiency/``.

    python -m studylib.efficiency --profile full --device cuda      # the whole grid of experiments.py
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import torch

from . import artifacts, config, data, experiments, models, train

EFFICIENCY_VERSION = 1


def scratch_point(name: str, profile: str, *, per_class: int | None, seed: int, min_epoch_images: int = 0,
                  data_dir=None, device: str = "auto", force: bool = False, progress: bool | None = None) -> dict:
    """Train (or reuse) scratch model ``name`` on ``per_class`` stratified images per class; its metrics."""
    if name not in train.SCRATCH_MODELS:
        raise KeyError(f"{name!r} is not a scratch model; choose one of {train.SCRATCH_MODELS}")
    cfg = config.get_profile(profile, seed=seed)
    train_split, test_split = data.load_profile_data(cfg, data_dir or None)
    idx = np.arange(len(train_split))
    if per_class is not None:
        idx = data.stratified_subset(train_split.labels, per_class, seed)
    if len(idx) >= min_epoch_images:
        min_epoch_images = 0
    reps = max(1, math.ceil(min_epoch_images / len(idx)))
    fit_idx = torch.as_tensor(np.tile(idx, reps))
    key = {**train.run_key(name, cfg, train_split, test_split), "per_class": per_class if len(idx) < len(train_split) else None,
           "min_epoch_images": min_epoch_images, "efficiency": EFFICIENCY_VERSION}
    out_dir = artifacts.artifact_dir(profile, "efficiency", name, key)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    torch.manual_seed(seed)  # model initialisation
    model = models.build_model(name)
    aug = train.scratch_augment(cfg)
    res = train.fit(model, train_split.images[fit_idx], train_split.labels[fit_idx], test_split.images,
                    test_split.labels, out_dir=out_dir, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                    lr=cfg["optimizer"]["lr"], weight_decay=cfg["optimizer"]["weight_decay"], seed=seed,
                    prepare=aug.normalize, augment=aug, device=device, precision=cfg["precision"],
                    channels_last=train.use_channels_last(name, cfg["precision"]),
                    meta={"model": name, "profile": profile, "key": key, "strategy": "from scratch (data efficiency)",
                          "train_images": len(idx), "repeats": reps, "seed": seed},
                    progress=progress)
    return res.metrics


def finished(profile: str, name: str = "custom_cnn") -> pd.DataFrame:
    """Every finished data-efficiency run of ``name`` under ``profile`` (one row each)."""
    rows = []
    for marker in sorted((config.artifacts_dir() / profile / "efficiency").glob(f"{name}-*/metrics.json")):
        m = artifacts.read_json(marker)
        rows.append({"model": name, "per_class": m["key"]["per_class"], "train_images": m["train_images"],
                     "seed": m["seed"], "test_acc": m["test_acc"], "repeats": m["repeats"],
                     "train_seconds": m["train_seconds"], "device": m["device"],
                     "gpu": m["environment"].get("gpu", ""), "run": marker.parent.name})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Scratch-model data-efficiency grid (experiments.py)")
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="custom_cnn", choices=train.SCRATCH_MODELS)
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="default: the grid's seeds")
    ap.add_argument("--per-class", type=int, nargs="*", default=None, help="default: the grid's sizes")
    ap.add_argument("--min-epoch-images", type=int, default=None,
                    help="repeat small subsets up to this many images per epoch (default: the grid's)")
    args = ap.parse_args(argv)
    g = experiments.grid("data_efficiency", args.profile)
    if args.min_epoch_images is not None:
        g["min_epoch_images"] = args.min_epoch_images
    for seed in args.seeds if args.seeds is not None else g["seeds"]:
        for pc in args.per_class if args.per_class is not None else g["train_per_class"]:
            m = scratch_point(args.model, args.profile, per_class=pc, seed=seed,
                              min_epoch_images=g["min_epoch_images"], device=args.device)
            print(f"{args.model} seed {seed} {m['train_images']:,} images: {100 * m['test_acc']:.2f}% "
                  f"({m['train_seconds']:.0f} s on {m['device']})", flush=True)


if __name__ == "__main__":
    main()
