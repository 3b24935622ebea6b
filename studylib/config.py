"""Paths, the study protocol and the named run profiles: the one place they are defined.

Every path hangs off the package (never off the working directory). Notebooks pick a
profile and a model; they never restate a hyper-parameter.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------
PROJ_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
REPORTS_DIR = PROJ_ROOT / "reports"
# Default place for the CIFAR-10 folder `cifar-10-batches-py` (torchvision's layout).
DEFAULT_DATA_DIR = PROJ_ROOT / "data"
# Everything a run produces that is not the report: checkpoints, feature caches, metrics.
DEFAULT_ARTIFACTS_DIR = PROJ_ROOT / "artifacts"

DATA_DIR_ENV = "CIFAR10_DIR"          # a cifar-10-batches-py folder, or the folder holding it
ARTIFACTS_DIR_ENV = "STUDY_ARTIFACTS"  # overrides DEFAULT_ARTIFACTS_DIR


def artifacts_dir() -> Path:
    """Root of the artifact store (``$STUDY_ARTIFACTS`` or ``<project>/artifacts``)."""
    return Path(os.environ.get(ARTIFACTS_DIR_ENV, DEFAULT_ARTIFACTS_DIR)).expanduser().resolve()


# CIFAR-10 training-set per-channel statistics on the 0-1 scale, used to normalise the
# scratch models' inputs. Recomputed from the pixels by notebook 01 and checked by the tests.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# ---------------------------------------------------------------------------------------
# The reference protocol (the published study's settings, re-run as they were)
# ---------------------------------------------------------------------------------------
PROTOCOL: dict[str, Any] = {
    "seed": 42,                  # the reference's single seed
    "epochs": 15,                # same budget for every model
    "batch_size": 128,           # images per optimiser step
    "optimizer": {
        "name": "adam",
        "lr": 1e-3,              # Adam default, as in the reference
        "weight_decay": 1e-4,    # L2 via Adam's weight_decay (coupled, not AdamW)
    },
    "schedule": "cosine",        # CosineAnnealingLR with T_max = epochs, stepped per epoch
    # Scratch models: augmentation on batched uint8 tensors (studylib.augment).
    "scratch_augment": {
        "crop_padding": 4,       # RandomCrop(32, padding=4), zero padding
        "hflip_p": 0.5,
        "cutout_size": 16,       # one 16x16 zeroed square per image, centre uniform in the image
        "mix_p": 0.5,            # MixUp or CutMix on half of the batches ...
        "mixup_alpha": 0.2,      # ... MixUp lambda ~ Beta(0.2, 0.2) (mixup paper's CIFAR value range)
        "cutmix_alpha": 1.0,     # ... CutMix lambda ~ Beta(1, 1) (CutMix paper's CIFAR value)
    },
    # Transfer models: images upscaled to the backbone's ImageNet resolution; no augmentation.
    "input_size": {
        "custom_cnn": 32,
        "vit_small": 32,
        "resnet18": 224,
        "mobilenet_v2": 224,
        "efficientnet_b0": 224,
        "efficientnet_lite0": 224,
    },
    # 32 -> 224 upscale: bilinear, antialias off (antialias only matters when downscaling).
    "upscale": {"mode": "bilinear", "antialias": False},
    # Frozen-backbone feature extraction runs under bf16 autocast (fp32 moves linear-probe
    # accuracy by less than the 0.2-point budget: notebook 03 measures it; "fp32" to disable).
    "feature_precision": "bf16",
    # fp32-vs-bf16 linear-probe check: fp32 features of a stratified subset (images per class),
    # heads trained the same way on both; the full fp32 extraction would double the CPU time.
    "precision_check": {"train_per_class": 300, "test_per_class": 200},
    "val_fraction": 0.0,         # the reference trains on all 50,000 and reports on test
    "precision": "bf16",         # autocast dtype for training/eval ("fp32" to disable); see benchmarks/
    "device": "auto",            # "auto" = CUDA when present, else CPU
    # Evaluation (notebook 05): how latency, throughput and INT8 are measured. Never trains.
    "evaluation": {
        "threads": 2,                   # torch threads for every timing: the 2-core target machine
        "latency_warmup": 10,           # untimed batch-1 calls first (allocator, oneDNN primitive caches)
        "latency_runs": 50,             # timed batch-1 calls; median and p90 are reported
        "throughput_batch": 64,         # images per call for images/s
        "throughput_runs": 3,           # timed batch-64 calls (after one warm-up call)
        "int8_calibration_images": 256,  # training images fed through the observers of static INT8
        # fp32 vs INT8 accuracy on a stratified test subset (images per class, 1,000 in all): an fp32 224-px
        # pass over all 10,000 test images costs ~4 min per backbone on 2 cores; None = all.
        "int8_test_per_class": 100,
        "gradcam_per_class": 1,         # fixed test images per class shown with Grad-CAM
    },
}

# ---------------------------------------------------------------------------------------
# Profiles: overrides on top of the protocol
# ---------------------------------------------------------------------------------------
PROFILES: dict[str, dict[str, Any]] = {
    # The reference protocol on all 60,000 images.
    "full": {
        "train_per_class": None,  # None = every training image (5,000 per class)
        "test_per_class": None,   # None = the whole 10,000-image test set
    },
    # Whole pipeline in minutes on 2 CPU cores: stratified subsets and a tiny budget.
    # Numbers from this profile show that the code runs, not how good the models are.
    "quick": {
        "train_per_class": 100,   # 1,000 training images
        "test_per_class": 50,     # 500 test images
        "epochs": 2,
        "precision_check": {"train_per_class": 10, "test_per_class": 10},
        # quick timings only show the harness runs: few calls (the full profile's 50 are the measurement)
        "evaluation": {**PROTOCOL["evaluation"], "latency_warmup": 1, "latency_runs": 5, "throughput_batch": 8,
                       "throughput_runs": 1, "int8_calibration_images": 16, "int8_test_per_class": 5},
    },
}


def get_profile(name: str, **overrides: Any) -> dict[str, Any]:
    """Return the protocol with profile ``name`` (and then ``overrides``) applied.

    Unknown profile names and unknown or mistyped override keys are errors: a typo must
    not silently run the default.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    cfg = copy.deepcopy(PROTOCOL)
    cfg.update(copy.deepcopy(PROFILES[name]))
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"unknown protocol key {key!r}; known keys: {sorted(cfg)}")
        current = cfg[key]
        if current is not None and value is not None and not isinstance(value, type(current)):
            raise TypeError(
                f"protocol key {key!r} expects {type(current).__name__}, got {type(value).__name__}"
            )
        cfg[key] = value
    cfg["profile"] = name
    return cfg
