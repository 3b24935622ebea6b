"""Grids of the experiments beyond the reference protocol (notebooks 08-12): the one place they live.

Each entry has a ``full`` and a ``quick`` grid. ``quick`` only proves the code runs end to end
in CI (its numbers mean nothing); ``full`` is what the report's findings are computed from.
The reference protocol itself (optimiser, epochs, batch size, augmentation) stays in
``config.PROTOCOL``; what is here is only what these experiments add to it.
"""

from __future__ import annotations

import copy
from typing import Any

# Linear probes that can run offline (genuine weights available): the data-efficiency,
# seed, calibration and resolution experiments iterate over these.
PROBES = ("mobilenet_v2", "mobilenet_v2_float", "efficientnet_lite0")

EXPERIMENTS: dict[str, dict[str, Any]] = {
    # 1. Test accuracy against labelled training-set size (stratified, nested across sizes for one seed).
    "data_efficiency": {
        "full": {
            "train_per_class": (10, 50, 100, 500, 1000, 5000),  # 100 ... 50,000 images
            "seeds": (0, 1, 2),                                  # subset choice + init + batch order
            # A 15-epoch budget over 100 images is 15 optimiser steps: the point would measure an
            # unfinished optimisation, not the data. Small subsets are repeated so that every epoch
            # holds at least this many images (>= 585 steps at batch 128); 5,000+ images are untouched.
            "min_epoch_images": 5000,
            "scratch_seeds": (0, 1, 2),  # Custom CNN points (GPU: python -m studylib.efficiency --device cuda)
        },
        # quick: the Custom CNN costs ~15 s per point on 2 CPU cores, so one seed.
        "quick": {"train_per_class": (10, 50, 100), "seeds": (0, 1), "min_epoch_images": 200, "scratch_seeds": (0,)},
    },
    # 2. The strong from-scratch recipe (studylib.strong): headline seeds, and its data-efficiency points.
    "strong": {
        # ~2.5 s per run on an H200, so the seeds and data-efficiency points (48 runs) are made on a GPU and
        # read from the artifact store; one run on the 2-core CPU is timed end to end by
        # benchmarks/bench_strong.py --full-run against the target (cpu_target_*: accuracy, wall minutes).
        "full": {"seeds": (0, 1, 2),
                 # data-efficiency points repeat small subsets up to 50,000 images per epoch: every point
                 # gets the full run's 480 optimiser steps (its 1024-image batches need that many).
                 "min_epoch_images": 50000, "cpu_target_acc": 0.93, "cpu_target_minutes": 20},
        "quick": {"seeds": (0,), "min_epoch_images": 1000, "cpu_target_acc": 0.93, "cpu_target_minutes": 20},
    },
    # 6. Headline rows over seeds: linear heads on the cached features (cheap: seconds per head).
    "seeds": {
        "full": {"seeds": (0, 1, 2, 3, 4)},
        "quick": {"seeds": (0, 1)},
    },
    # 4. Calibration: heads trained on the training split minus a stratified validation split; the
    # temperature is fitted on that validation split (never the test set).
    "calibration": {
        "full": {"val_fraction": 0.1, "seeds": (0, 1, 2, 3, 4), "n_bins": 15},  # 5,000 validation images
        "quick": {"val_fraction": 0.2, "seeds": (0, 1), "n_bins": 15},         # 200 of the 1,000
    },
    # 5. CIFAR-10-C-style corruptions (studylib.corruptions) on a stratified test subset.
    "robustness": {
        # 50 per class = 500 test images x 26 conditions through each 224-px transfer model at ~100
        # images/s on 2 cores: ~2.2 min per transfer model. Wilson 95% interval at 80%: +-3.5 points.
        "full": {"test_per_class": 50, "corruptions": ("gaussian_noise", "gaussian_blur", "jpeg_compression",
                                                       "contrast", "brightness"), "severities": (1, 2, 3, 4, 5),
                 "seed": 0},
        "quick": {"test_per_class": 2, "corruptions": ("gaussian_noise", "gaussian_blur", "jpeg_compression",
                                                      "contrast", "brightness"), "severities": (1, 5), "seed": 0},
    },
    # 3. Linear-probe accuracy and feature-extraction cost at several input sizes (32 px = no upscale).
    "resolution": {
        # One head seed per point: over 5 seeds the 224-px heads vary by ~0.1 point (notebook 09), far
        # below the resolution effect. Heads train on 1,000 images per class (10,000; the 224-px features
        # are sliced from the full cache) and are tested on all 10,000 test images: extracting the
        # 50,000 training images again at four more sizes and two backbones would cost ~1 h on the
        # shared 2-core CPU. Speed is also timed on 512 test images per size in one process.
        "full": {"sizes": (32, 64, 96, 128, 224), "backbones": ("mobilenet_v2_float", "efficientnet_lite0"), "seeds": (0,),
                 "train_per_class": 1000, "timing_images": 512},
        "quick": {"sizes": (32, 64, 224), "backbones": ("mobilenet_v2_float",), "seeds": (0,),
                  "train_per_class": None, "timing_images": 64},
    },
    # 7. MobileNetV2 (float weights: genuine BatchNorm, which fine-tuning updates) fine-tuned end to end
    # at a size the 2-core CPU can afford (python -m studylib.finetune), compared with a linear probe
    # at the same size on the same 50,000 images. Measured training speed on the 2-core CPU (bf16,
    # batch 128, benchmarks/bench_finetune.py): 64 px ~250, 96 px ~140, 128 px ~80 images/s, i.e. the
    # 15-epoch budget costs ~50 / ~90 / ~155 min (the 96-px run took 115 min, test passes included);
    # 96 px is the largest that fits a session.
    "finetune": {
        "full": {"backbone": "mobilenet_v2_float", "size": 96, "seed": 0},
        "quick": {"backbone": "mobilenet_v2_float", "size": 32, "seed": 0},  # 32 px: seconds on CPU
    },
}


def grid(experiment: str, profile: str) -> dict[str, Any]:
    """The grid of ``experiment`` for ``profile`` (a copy; unknown names are errors)."""
    if experiment not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {experiment!r}; known: {sorted(EXPERIMENTS)}")
    if profile not in EXPERIMENTS[experiment]:
        raise KeyError(f"experiment {experiment!r} has no grid for profile {profile!r}; "
                       f"known: {sorted(EXPERIMENTS[experiment])}")
    return copy.deepcopy(EXPERIMENTS[experiment][profile])


def save_results(profile: str, name: str, obj: dict):
    """Write an experiment's summary (numbers the findings notebook reads) atomically."""
    from . import artifacts, config

    return artifacts.write_json(config.artifacts_dir() / profile / "experiments" / f"{name}.json", obj)


def load_results(profile: str, name: str) -> dict | None:
    """An experiment's summary, or None when its notebook has not run."""
    from . import artifacts, config

    path = config.artifacts_dir() / profile / "experiments" / f"{name}.json"
    return artifacts.read_json(path) if path.exists() else None
