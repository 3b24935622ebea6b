"""Paths, the study protocol, every recipe's hyper-parameters, the experiment grids and the
profiles: the one place they are defined.

    cfg = get_profile("full")                    # data sizes, subset seed, evaluation settings
    r = recipe("reference_code", "quick")        # a training recipe with the profile's overlay
    g = grid("controlled", "full")               # an experiment's grid

Every path hangs off the package (never off the working directory). Notebooks pick a profile,
a recipe and a model; they never restate a hyper-parameter. Unknown names, unknown override
keys and mistyped override values are errors: a typo must not silently run the default.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

# =======================================================================================
# Paths
# =======================================================================================
PROJ_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
REPORTS_DIR = PROJ_ROOT / "reports"
# Small outputs of finished full-profile runs, committed with the project (runs/README.md).
SHIPPED_RUNS_DIR = PROJ_ROOT / "runs"
# Default place for the CIFAR-10 folder `cifar-10-batches-py` (torchvision's layout).
DEFAULT_DATA_DIR = PROJ_ROOT / "data"
# Everything a run produces that is not shipped: checkpoints, feature caches, measurements.
DEFAULT_ARTIFACTS_DIR = PROJ_ROOT / "artifacts"

DATA_DIR_ENV = "CIFAR10_DIR"          # a cifar-10-batches-py folder, or the folder holding it
ARTIFACTS_DIR_ENV = "STUDY_ARTIFACTS"  # overrides DEFAULT_ARTIFACTS_DIR


def artifacts_dir() -> Path:
    """Root of the artifact store (``$STUDY_ARTIFACTS`` or ``<project>/artifacts``)."""
    return Path(os.environ.get(ARTIFACTS_DIR_ENV, DEFAULT_ARTIFACTS_DIR)).expanduser().resolve()


def display_path(path: str | os.PathLike) -> str:
    """A path as a report may print it: relative to the project, or named by the environment
    variable that points at it, never the rendering machine's absolute path."""
    p = Path(path).expanduser().resolve()
    anchors = [(Path(os.environ[env]).expanduser().resolve(), f"${env}")
               for env in (DATA_DIR_ENV, "STUDY_WEIGHTS_DIR") if os.environ.get(env)]
    anchors += [(artifacts_dir(), f"${ARTIFACTS_DIR_ENV}"), (PROJ_ROOT, "."), (PROJ_ROOT.parent, "..")]
    for root, name in anchors:
        if p == root or root in p.parents:
            rel = p.relative_to(root).as_posix()
            return name if rel == "." else (rel if name == "." else f"{name}/{rel}")
    return p.name  # outside every known root: the name only


# CIFAR-10 training-set per-channel statistics on the 0-1 scale (recomputed from the pixels by
# notebook 01 and checked by the tests).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The std the reference's code normalises with (its notebook cell 3): a widely copied value that is
# not CIFAR-10's per-channel std (it is close to the std of per-image means).
REFERENCE_CODE_STD = (0.2023, 0.1994, 0.2010)

# =======================================================================================
# The protocol: what every recipe shares (data, subsets, devices, evaluation)
# =======================================================================================
PROTOCOL: dict[str, Any] = {
    "train_per_class": None,     # None = every training image (5,000 per class)
    "test_per_class": None,      # None = the whole 10,000-image test set
    "subset_seed": 42,           # picks every stratified data subset; never the training randomness
    "device": "auto",            # "auto" = CUDA when present, else CPU (recorded with every run, not keyed)
    # Transfer models: images upscaled to the backbone's ImageNet resolution.
    "input_size": {"resnet18": 224, "mobilenet_v2": 224, "efficientnet_b0": 224, "efficientnet_lite0": 224},
    # 32 -> N upscale: bilinear, antialias off (antialias only matters when downscaling).
    "upscale": {"mode": "bilinear", "antialias": False},
    # Frozen-backbone features: the 50,000 training images under bf16 autocast (2x faster on the CPU);
    # the test images in fp32, exactly as the deployed (fp32) model computes them, so a recorded test
    # accuracy is what the shipped model gives on re-evaluation.
    "feature_precision": {"train": "bf16", "test": "fp32"},
    # fp32-vs-bf16 linear-probe check on a stratified subset (images per class).
    "precision_check": {"train_per_class": 300, "test_per_class": 200},
    # Evaluation (notebook 05): how latency, throughput and INT8 are measured. Never trains.
    "evaluation": {
        "threads": 2,                   # torch threads for every timing: the 2-core target machine
        "latency_warmup": 10,           # untimed batch-1 calls first (allocator, oneDNN primitive caches)
        "latency_runs": 50,             # timed batch-1 calls; median and p90 are reported
        "throughput_batch": 64,         # images per call for images/s
        "throughput_runs": 3,           # timed calls (after one warm-up call)
        "int8_calibration_images": 1024,  # training images fed through the observers of static INT8
        "int8_test_per_class": None,    # None: INT8 accuracy on the whole test split
        # rows whose PT2E INT8 is also measured under torch.compile (None: every row with PT2E); a compile takes about
        # a minute per batch size at 224 px on 2 cores, so a fresh machine of another kind spends ~20 min here once
        "int8_compiled_rows": None,
        "gradcam_per_class": 1,         # fixed test images per class shown with Grad-CAM
        "reevaluate_tolerance_pts": 0.05,  # --full-check: shipped model vs its recorded accuracy; larger is an error
        # default re-evaluation: a fixed stratified sample of this many test images per class (1,000 images), every
        # prediction identical to the recorded one (measure.reevaluate); run_all.py --full-check: the whole test set
        "reevaluate_check_per_class": 100,
    },
}

# =======================================================================================
# Recipes: how a model is trained. Each is one flat-ish dict; a run's key holds its recipe.
# =======================================================================================
_STUDY_SCRATCH: dict[str, Any] = {
    "kind": "scratch",
    "seed": 42,                  # initialisation, batch order, augmentation and dropout
    "epochs": 15,                # the reference's budget
    "batch_size": 128,           # images per optimiser step
    "drop_last": False,          # the last partial batch is trained on
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},  # coupled L2 (Adam, not AdamW)
    "schedule": "cosine",        # CosineAnnealingLR(T_max = epochs), stepped once per epoch
    "normalize": {"mean": CIFAR10_MEAN, "std": CIFAR10_STD},
    "augment": {
        "crop_padding": 4,       # RandomCrop(32, padding=4), zero padding
        "hflip_p": 0.5,
        "cutout_size": 16,       # one 16x16 square per image, centre uniform in the image, clipped
        "cutout_after_normalize": False,  # False: on the uint8 image (masked pixels black)
        "mix_p": 0.5,            # MixUp or CutMix (even odds) on this share of the batches
        "mixup_alpha": 0.2,      # lambda ~ Beta(0.2, 0.2) (the mixup paper's CIFAR range)
        "cutmix_alpha": 1.0,     # lambda ~ Beta(1, 1) (the CutMix paper's CIFAR value)
    },
    "custom_cnn": {"linear_init": "kaiming"},   # classifier Linear layers: Kaiming normal, bias 0
    # ViT encoder layers: pre-norm (x + f(LN(x))); dropout 0 (CutOut/MixUp/CutMix regularise; dropout
    # sampling cost ~30% of a CPU step); each layer initialised independently.
    "vit_small": {"norm_first": True, "dropout": 0.0, "layer_init": "independent"},
    "precision": "bf16",         # autocast dtype for training and evaluation ("fp32" to disable)
}

# "Linear head" = the architecture's head: Dropout(0.2) + Linear (MobileNetV2, EfficientNets) or Linear
# (ResNet-18), as the reference; trained on cached frozen-backbone features.
_HEAD: dict[str, Any] = {
    "kind": "head",
    "seed": 42, "epochs": 15, "batch_size": 128, "drop_last": False,
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
    "schedule": "cosine",
    "hflip": False,          # train on the features of the images as they are
    "precision": "fp32",     # one 1280x10 layer on cached features: exact fp32 costs milliseconds
}

RECIPES: dict[str, dict[str, Any]] = {
    # The recipe this study trained its scratch rows with: the reference's architecture and budget,
    # settings as the reference's text describes them; where its code differs, see reference_code.
    "study": {**copy.deepcopy(_STUDY_SCRATCH), "label": "study recipe (reference architecture; deviations listed)"},
    # The reference's own code (mrpouyaalavi/CIFAR-10-Image-Classification, notebook cells 3, 5, 8,
    # 10, 12, 15), setting by setting. Its fp16 autocast on Apple MPS without a gradient scaler cannot
    # be reproduced here: bf16 autocast instead (same exponent range as fp32, so no scaler is needed).
    "reference_code": {
        **copy.deepcopy(_STUDY_SCRATCH),  # no nested dict shared with "study"
        "label": "reference recipe, as published code",
        "drop_last": True,                                   # cell 6: DataLoader(drop_last=True)
        "normalize": {"mean": CIFAR10_MEAN, "std": REFERENCE_CODE_STD},  # cell 3
        "augment": {**_STUDY_SCRATCH["augment"],
                    "cutout_after_normalize": True,          # cell 5: CutOut after Normalize -> mean colour
                    "mixup_alpha": 1.0},                     # cell 15: MixUp alpha 1.0
        "custom_cnn": {"linear_init": "normal_0.01"},        # cell 10: N(0, 0.01), bias 0
        # cell 12: nn.TransformerEncoderLayer(dropout=0.1, activation="gelu", batch_first=True) in an
        # nn.TransformerEncoder: post-norm, dropout 0.1 (attention weights too), MultiheadAttention's
        # init, and one initialised layer deep-copied six times.
        "vit_small": {"norm_first": False, "dropout": 0.1, "layer_init": "cloned"},
    },
    # Frozen-backbone linear heads on cached features (notebook 03).
    "head": {**copy.deepcopy(_HEAD), "label": "linear head on frozen features, no augmentation (the reference's "
                                              "published text)"},
    # The head as the reference's code trained it (cell 5 + 15): horizontal flips (each image's view
    # drawn per epoch from cached features of the image and its mirror) and drop_last. Its MixUp/CutMix
    # mixes pixels before the backbone; a cached-feature head cannot do that (mixing features is a
    # different regulariser), so it is left out and said so.
    "head_reference_code": {**copy.deepcopy(_HEAD), "drop_last": True, "hflip": True,
                            "label": "linear head with flips (the reference's code, without pixel MixUp/CutMix)"},
    # The controlled grid's frozen column, by the field's linear-probe protocol (Kornblith, Shlens & Le 2019):
    # fp32 features, standardised; multinomial logistic regression by full-batch L-BFGS to convergence; L2
    # chosen on a validation split held out of the training images (recipes/linear_probe.py).
    "lbfgs_probe": {
        "kind": "lbfgs_probe",
        "label": "linear probe: logistic regression by L-BFGS on standardised fp32 features, L2 chosen on validation",
        "features": "fp32",         # extraction precision of train and test features alike
        "l2_start": (1e-4, 1e-3, 1e-2, 1e-1),  # L2 strength (on mean cross-entropy), grown by half-decades
        "max_extensions": 4,        # ... until the best is interior (tuning.extend_until_interior)
        "val_fraction": 0.1,        # of the run's training images, stratified, for choosing L2
        "max_iter": 1000,           # L-BFGS iterations per fit (a fit stops earlier once converged)
        "tolerance": 1e-4,          # converged: every gradient entry below this (mean loss, standardised inputs)
    },
    # A strong from-scratch recipe in the spirit of airbench94 (Keller Jordan 2024): NOT the reference's.
    "strong": {
        "kind": "strong",
        "label": "strong from-scratch recipe (airbench94-style)",
        "seed": 0,
        "epochs": 10,               # <= the study's 15-epoch budget (airbench94: 9.9)
        "batch_size": 1024,         # images per step; the last partial batch is dropped, as airbench
        "lr": 11.5,                 # learning rate per 1024 examples (summed loss)
        "momentum": 0.85,           # Nesterov momentum
        "weight_decay": 0.0153,     # per 1024 examples, decoupled from the learning rate
        "bias_scaler": 64.0,        # BatchNorm biases get 64x the learning rate (not the decay)
        "label_smoothing": 0.2,
        "whiten_bias_epochs": 3,    # the whitening layer's bias trains for the first 3 epochs, then freezes
        "whiten_images": 5000,      # training images whose 2x2 patches define the whitening
        "whiten_eps": 5e-4,         # added to the patch-covariance eigenvalues
        "widths": (64, 256, 256),   # channels of the three blocks
        "bn_momentum": 0.6,         # airbench's convention: running = 0.6 * running + 0.4 * batch
        "scaling_factor": 1 / 9,    # output logit scale
        "translate": 2,             # random translation (reflect padding), pixels
        "tta_level": 2,             # 0 none, 1 flip, 2 flip + 1-pixel translations (a variant; never the primary number)
        "warmup_frac": 0.23,        # linear warm-up over 23% of steps (0.2 -> 1.0 x lr), then down to 0.07 x
        "ema_every": 5,             # Lookahead: average every 5 steps, decay 0.95^5 * (progress)^3
        "precision": "bf16",        # autocast on CPU and GPU alike (BatchNorm stays fp32)
    },
    # End-to-end training of a torchvision architecture at a reduced input size: the fine-tuning column
    # of the controlled grid (ImageNet init) and its random-init twin. Only "init" may differ between
    # the two rows of the grid (tests/test_report.py).
    "finetune": {
        "kind": "finetune",
        "label": "end-to-end training at a reduced input size",
        # batch 64: 1.2-1.5x the images/s of 128 on these CPUs (activations stay in cache; benchmarks/results/
        # finetune-*.json); the grid's first runs (shipped, no longer in the grid) used 128
        "seed": 0, "epochs": 15, "batch_size": 64, "drop_last": False,
        "optimizer": {"name": "adam", "lr": 1e-4, "weight_decay": 1e-4},  # lr: chosen per row on validation (grid)
        "schedule": "cosine",
        "augment": {"crop_padding": 4, "hflip_p": 0.5},   # on the 32-px images, before the upscale
        "batchnorm": "train",       # BatchNorm updates its statistics and affine parameters
        # fp32, not bf16 autocast: on the CPUs without AMX that train this study, the fp32 step is ~1.3x faster
        # (benchmarks/results/finetune-*.json). The grid's first runs (shipped, no longer in the grid) were bf16.
        "precision": "fp32",
    },
}

# =======================================================================================
# Experiment grids (notebooks 03, 08-12)
# =======================================================================================
PROBES = ("mobilenet_v2", "mobilenet_v2_float", "efficientnet_lite0")  # backbones with genuine weights offline

EXPERIMENTS: dict[str, dict[str, Any]] = {
    # The controlled answer (notebook 12): one network, one size, one recipe per column; only the
    # initialisation differs between rows. Kornblith, Shlens & Le (CVPR 2019) design.
    "controlled": {
        "backbone": "mobilenet_v2_float",   # genuine float weights incl. BatchNorm (fine-tuning updates it)
        "size": 64,                         # px; a 15-epoch fine-tune ~35-40 min on 2 AMD cores (bench_finetune)
        "seeds": (0, 1),                    # >= 2 per cell (a cell costs > 15 min on the CPU)
        "probe_seeds": (0, 1, 2, 3, 4),     # probe cells cost seconds per head
        # Learning rate per fine-tuning row, chosen alike for both inits on a stratified validation split held
        # out of the cell's own training images (never the test set): 3-epoch runs on the other 90% (all 50,000
        # images: 45,000 train / 5,000 validation, 2,112 steps of 64 per rate), best validation accuracy wins. The
        # log grid starts here and grows by half-decades (1, 3, 10, ...) past the edge holding the best rate until the
        # best is interior (finetune.lr_search; a test fails on a shipped search whose choice is at an edge).
        "lr_candidates": (3e-4, 1e-3, 3e-3),
        "lr_max_extensions": 3,
        "lr_search": {"val_fraction": 0.1, "epochs": 3, "seed": 0},
        # Random-init frozen probe: BatchNorm statistics re-estimated on these training images (an
        # untrained network has none; without them activations vanish or explode with depth).
        "bn_recalibration_images": 5000,
        # What the random-features baseline sees at an earlier depth: probes on the pooled output of the first 14
        # of MobileNetV2's 19 feature blocks (96 channels, a 4x4 map at 64 px), both inits, the probe seeds.
        "probe_block": 14,
        # The gap against the training budget (He, Girshick & Dollar 2019's question: does training from scratch
        # catch up?): the end-to-end column at these epochs, each run its own cosine schedule over its own
        # length, at the learning rate each init's search chose; seeds per budget (the 15-epoch runs are the
        # grid's cells). A 60-epoch run is ~2.5 h on 2 AMD cores: longer than a session, resumed from its checkpoint.
        # The 3-epoch point is the equal-step data-efficiency curve's 50,000-image point (below).
        "budget_epochs": (3, 5, 15, 30, 60),
        "budget_seed_counts": (3, 2, 2, 2, 1),  # seeds 0..n-1 at each budget above
        # Data efficiency of the end-to-end pair (notebook 09) at equal steps for every size and init: each point
        # trains efficiency_epochs epochs of efficiency_epoch_images images (its subset repeated whole), i.e. the
        # optimiser steps of a full-data run of that many epochs (3 x 50,000 / 64 = 2,344 steps of 64 images; the
        # 50,000-image point is the 3-epoch training-budget point), at the rate searched on that size with the
        # same schedule. The grid's first small-data runs (shipped, no longer in the grid) ran 15 passes over
        # their subset: 120 and 600 steps of 128.
        "efficiency_per_class": (100, 500),
        "efficiency_seeds": (0, 1, 2),
        "efficiency_epochs": 3,
        "efficiency_epoch_images": 50000,
    },
    # Test accuracy against labelled training-set size (stratified, nested across sizes).
    "data_efficiency": {
        "train_per_class": (10, 50, 100, 500, 1000, 5000),  # 100 ... 50,000 images
        "seeds": (0, 1, 2),                                  # training randomness; subsets: the protocol's subset_seed
        # A 15-epoch budget over 100 images is 15 optimiser steps: small subsets are repeated so that every
        # epoch holds at least this many images (>= 585 steps at batch 128); 5,000+ images are untouched.
        "min_epoch_images": 5000,
        "scratch_seeds": (0, 1, 2),
    },
    "strong": {
        "seeds": (0, 1, 2),
        # data-efficiency points repeat small subsets up to this many images per epoch (the full run's steps)
        "min_epoch_images": 50000,
        "cpu_target_acc": 0.93, "cpu_target_minutes": 20,
    },
    "seeds": {"seeds": (0, 1, 2, 3, 4)},                                  # headline probes over head seeds
    "calibration": {"val_fraction": 0.1, "seeds": (0, 1, 2, 3, 4), "n_bins": 15},
    "robustness": {"test_per_class": 50, "corruptions": ("gaussian_noise", "gaussian_blur", "jpeg_compression",
                                                         "contrast", "brightness"),
                   "severities": (1, 2, 3, 4, 5), "seed": 0},
    # Linear-probe accuracy and extraction cost at several input sizes (32 px = no upscale); heads on
    # 1,000 images per class, tested on all test images.
    "resolution": {"sizes": (32, 64, 96, 128, 224), "backbones": ("mobilenet_v2_float", "efficientnet_lite0"),
                   "seeds": (0,), "train_per_class": 1000, "timing_images": 512},
}

# =======================================================================================
# Profiles: overlays on the protocol, the recipes and the grids
# =======================================================================================
PROFILES: dict[str, dict[str, Any]] = {
    # The study on all 60,000 images.
    "full": {
        "comparable": True,   # its numbers are compared with the reference's (verdicts drawn, full timing steps)
        "shipped": True,      # runs/ holds its finished runs: run_all.py checks them and trains nothing by default
        "protocol": {}, "recipes": {}, "experiments": {}},
    # The whole pipeline in minutes on 2 CPU cores: stratified subsets and a tiny budget. Its numbers
    # show that the code runs, not how good the models are.
    "quick": {
        "comparable": False,  # no verdicts on the reference's figures; machine rates timed in fewer steps
        "shipped": False,     # nothing shipped: run_all.py trains what is missing
        "protocol": {
            "train_per_class": 100, "test_per_class": 50,     # 1,000 / 500 images
            "precision_check": {"train_per_class": 10, "test_per_class": 10},
            "evaluation": {"latency_warmup": 1, "latency_runs": 5, "throughput_batch": 8, "throughput_runs": 1,
                           "int8_calibration_images": 16, "int8_test_per_class": 5,
                           "int8_compiled_rows": ("custom_cnn",)},  # one row: the compiled path runs in CI
        },
        "recipes": {
            "study": {"epochs": 2}, "reference_code": {"epochs": 2},
            "head": {"epochs": 2}, "head_reference_code": {"epochs": 2}, "lbfgs_probe": {"max_iter": 100},
            # 1,000 training images: a 1024 batch would be one step per epoch
            "strong": {"epochs": 2, "batch_size": 100, "whiten_images": 500},
            "finetune": {"epochs": 2},
        },
        "experiments": {
            "controlled": {"size": 32, "seeds": (0,), "probe_seeds": (0, 1), "lr_candidates": (1e-4, 1e-3, 1e-2),
                           "lr_max_extensions": 1, "lr_search": {"val_fraction": 0.2, "epochs": 1, "seed": 0},
                           "bn_recalibration_images": 200, "efficiency_per_class": (20,), "efficiency_seeds": (0,),
                           "efficiency_epochs": 1, "efficiency_epoch_images": 1000,
                           "budget_epochs": (1, 2), "budget_seed_counts": (1, 1)},
            "data_efficiency": {"train_per_class": (10, 50, 100), "seeds": (0, 1), "min_epoch_images": 200,
                                "scratch_seeds": (0,)},
            "strong": {"seeds": (0,), "min_epoch_images": 1000},
            "seeds": {"seeds": (0, 1)},
            "calibration": {"val_fraction": 0.2, "seeds": (0, 1)},
            "robustness": {"test_per_class": 2, "severities": (1, 5)},
            "resolution": {"sizes": (32, 64, 224), "backbones": ("mobilenet_v2_float",), "train_per_class": None,
                           "timing_images": 64},
        },
    },
}


# =======================================================================================
# Access: strict overlays
# =======================================================================================
def _check_profile(profile: str) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[profile]


def overlay(base: dict, changes: dict, where: str) -> dict:
    """``base`` with ``changes`` applied recursively (nested dicts merge). A key ``base`` lacks, or a
    value of another type than ``base``'s, is an error naming ``where`` and the known keys."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if key not in out:
            raise KeyError(f"unknown key {key!r} for {where}; known keys: {sorted(out)}")
        current = out[key]
        if isinstance(current, dict) and isinstance(value, dict):
            out[key] = overlay(current, value, f"{where}.{key}")
            continue
        if current is not None and value is not None and not isinstance(value, type(current)) \
                and not (isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool)):
            raise TypeError(f"{where}.{key} expects {type(current).__name__}, got {type(value).__name__} ({value!r})")
        out[key] = copy.deepcopy(value)
    return out


def comparable(profile: str) -> bool:
    """Whether ``profile``'s numbers are meant to be compared with the reference's (not a smoke test)."""
    return bool(_check_profile(profile)["comparable"])


def shipped(profile: str) -> bool:
    """Whether ``runs/`` ships ``profile``'s finished runs (run_all.py then trains nothing unless asked)."""
    return bool(_check_profile(profile)["shipped"])


def get_profile(name: str, **overrides: Any) -> dict[str, Any]:
    """The protocol with profile ``name`` (and then ``overrides``) applied; ``cfg["profile"]`` names it."""
    cfg = overlay(overlay(PROTOCOL, _check_profile(name)["protocol"], f"profile {name!r}"), overrides, "protocol")
    cfg["profile"] = name
    return cfg


def recipe(name: str, profile: str = "full", **overrides: Any) -> dict[str, Any]:
    """Recipe ``name`` with profile ``profile``'s overlay and then ``overrides`` (e.g. ``seed=1``)."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    r = overlay(RECIPES[name], _check_profile(profile)["recipes"].get(name, {}), f"recipe {name!r} ({profile})")
    r = overlay(r, overrides, f"recipe {name!r}")
    r["name"] = name
    return r


def grid(experiment: str, profile: str = "full") -> dict[str, Any]:
    """The grid of ``experiment`` under ``profile`` (a copy)."""
    if experiment not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {experiment!r}; known: {sorted(EXPERIMENTS)}")
    return overlay(EXPERIMENTS[experiment], _check_profile(profile)["experiments"].get(experiment, {}),
                   f"experiment {experiment!r} ({profile})")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (tuples and lists are leaves)."""
    out = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out
