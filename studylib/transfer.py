"""Transfer models: a frozen ImageNet backbone + a trainable linear head, and their training.

    model = build_model("mobilenet_v2")       # genuine ImageNet weights or WeightsUnavailable
    model(images_uint8_32x32)                 # -> (N, 10) logits: resize + normalise are inside
    result = train_transfer("mobilenet_v2", profile="quick")

``TransferNet`` is the deployable model used by evaluation, latency, Grad-CAM and the demo:
``preprocess`` (32 -> 224 upscale and the backbone's own normalisation) -> ``backbone`` (the
ImageNet network with its 1000-class classifier removed, frozen, always in eval mode so
BatchNorm statistics stay fixed) -> ``head``. The head is trained on cached backbone
features (``studylib.features``): with a frozen backbone and no augmentation this is the same
computation as pushing the images through the backbone every epoch (tests/test_transfer.py).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from . import artifacts, config, data, features, models, train, weights

# Rows of the study, in report order. mobilenet_v2 and mobilenet_v2_float are the same
# architecture with two different genuine ImageNet weight files (shared/weights/README.md).
TRANSFER_MODELS = ("mobilenet_v2", "mobilenet_v2_float", "resnet18", "efficientnet_b0", "efficientnet_lite0")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights' transforms()
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # EfficientNet-Lite checkpoints expect [-1, 1] inputs

# Head training precision: the head is one 1280x10 layer on cached features (milliseconds per
# epoch), so it trains in exact fp32; bf16 matters only for the backbone (PROTOCOL feature_precision).
HEAD_PRECISION = "fp32"
# Bump when a change here alters a transfer result: part of every transfer run's key.
TRANSFER_VERSION = 1


# ---------------------------------------------------------------------------------------
# EfficientNet-Lite0 (torchvision has no Lite variants)
# ---------------------------------------------------------------------------------------
class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: ceil(in / stride) outputs, the odd pixel padded at
    the end. Differs from symmetric padding only for stride 2; the TF Lite checkpoints need it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)  # symmetric k // 2 padding is set in __init__ for stride 1
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _same_conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> SameConv2d:
    return SameConv2d(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0, groups=groups, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # TF defaults of the Lite checkpoints


class LiteBlock(nn.Module):
    """MBConv without squeeze-excitation, ReLU6 (EfficientNet-Lite). Attribute names follow the
    checkpoint's keys (``efficientnet_pytorch`` layout) so it loads with ``strict=True``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv, self._bn0 = _same_conv(cin, mid, 1), _bn(mid)
        self._depthwise_conv, self._bn1 = _same_conv(mid, mid, k, stride, groups=mid), _bn(mid)
        self._project_conv, self._bn2 = _same_conv(mid, cout, 1), _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y  # drop-connect is a training-time regulariser: absent in eval


# (repeats, kernel, stride, expand, out channels) per stage, EfficientNet-B0 = Lite0 at width/depth 1.0.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem, self._bn0 = _same_conv(3, 32, 3, 2), _bn(32)
        blocks, cin = [], 32
        for repeats, k, stride, expand, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(LiteBlock(cin, cout, k, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = _same_conv(cin, 1280, 1), _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(F.adaptive_avg_pool2d(x, 1).flatten(1)))


# ---------------------------------------------------------------------------------------
# Architectures: the 1000-class ImageNet model, how to strip its classifier, its head
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arch:
    build: Callable[[], nn.Module]       # the 1000-class ImageNet model
    classifier: str                      # attribute holding the 1000-class classifier
    feature_dim: int
    head_dropout: float | None           # None: a bare Linear head (ResNet-18, as in the reference)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


ARCHS: dict[str, Arch] = {
    "resnet18": Arch(lambda: torchvision.models.resnet18(weights=None), "fc", 512, None, IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v2": Arch(lambda: torchvision.models.mobilenet_v2(weights=None), "classifier", 1280, 0.2,
                         IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b0": Arch(lambda: torchvision.models.efficientnet_b0(weights=None), "classifier", 1280, 0.2,
                            IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": Arch(EfficientNetLite0, "_fc", 1280, 0.2, LITE_MEAN, LITE_STD),
}


def arch_of(name: str) -> str:
    return weights.SPECS[name].arch


def imagenet_model(name: str, resolved: weights.ResolvedWeights | None = None) -> nn.Module:
    """The 1000-class ImageNet model of backbone ``name`` with ``resolved`` weights loaded, in eval mode."""
    model = ARCHS[arch_of(name)].build()
    if resolved is not None:
        weights.load_into(model, resolved)
    return model.eval()


class Preprocess(nn.Module):
    """uint8 [0, 255] (or float [0, 1]) RGB batch of any size -> the backbone's input.

    Upscale to ``size`` x ``size`` with PROTOCOL["upscale"] (bilinear, align_corners=False,
    antialias off: antialiasing only changes downscaling), then (x - mean) / std.
    """

    def __init__(self, size: int, mean, std, mode: str, antialias: bool):
        super().__init__()
        self.size, self.mode, self.antialias = size, mode, antialias
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode=self.mode, antialias=self.antialias,
                              align_corners=False if self.mode in ("bilinear", "bicubic") else None)
        return (x - self.mean) / self.std


class TransferNet(nn.Module):
    """preprocess -> frozen backbone (eval mode, always) -> trainable head: images in, logits out."""

    def __init__(self, name: str, preprocess: Preprocess, backbone: nn.Module, head: nn.Module,
                 provenance: dict | None):
        super().__init__()
        self.name, self.provenance = name, provenance  # provenance None: no pretrained weights (tests only)
        self.preprocess, self.backbone, self.head = preprocess, backbone, head
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "TransferNet":
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm keeps its ImageNet statistics (the int8 file needs eval)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (N, feature_dim) of an image batch."""
        return self.backbone(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_head(name: str, num_classes: int = 10) -> nn.Module:
    arch = ARCHS[arch_of(name)]
    linear = nn.Linear(arch.feature_dim, num_classes)
    return linear if arch.head_dropout is None else nn.Sequential(nn.Dropout(arch.head_dropout), linear)


def build_transfer(name: str, *, num_classes: int = 10, weights_spec: str | None = "imagenet",
                   weights_dir: str | os.PathLike | None = None) -> TransferNet:
    """Backbone ``name`` with genuine ImageNet weights (``weights_spec="imagenet"``; raises
    ``WeightsUnavailable`` when there are none) and a fresh ``num_classes`` head.

    ``weights_spec=None`` builds the bare architecture with untrained weights: for shape and
    parameter-count tests only; its ``provenance`` is None and the study never uses it.
    """
    if name not in weights.SPECS:
        raise KeyError(f"unknown transfer backbone {name!r}; known: {sorted(weights.SPECS)}")
    if weights_spec not in ("imagenet", None):
        raise ValueError(f"weights_spec must be 'imagenet' or None, got {weights_spec!r}")
    resolved = weights.resolve(name, weights_dir) if weights_spec == "imagenet" else None
    backbone = imagenet_model(name, resolved)
    arch = ARCHS[arch_of(name)]
    setattr(backbone, arch.classifier, nn.Identity())  # backbone now returns pooled features
    pre = Preprocess(config.PROTOCOL["input_size"][arch_of(name)], arch.mean, arch.std,
                     **config.PROTOCOL["upscale"])
    return TransferNet(name, pre, backbone, make_head(name, num_classes),
                       resolved.provenance() if resolved else None)


def _register(name: str) -> None:
    @models.register(name)
    def builder(*, num_classes: int = 10, weights_spec: str | None = "imagenet", weights_dir=None) -> TransferNet:
        return build_transfer(name, num_classes=num_classes, weights_spec=weights_spec, weights_dir=weights_dir)


for _name in TRANSFER_MODELS:
    _register(_name)


# ---------------------------------------------------------------------------------------
# Training a head on cached features (the reference protocol)
# ---------------------------------------------------------------------------------------
@dataclass
class TransferResult:
    name: str
    model: TransferNet           # the deployable model (backbone + trained head)
    fit: train.TrainResult
    features: dict               # per split: cache folder, extraction seconds, images/s, reused
    provenance: dict


def head_run_key(name: str, cfg: dict, provenance: dict, train_feats: features.Cached,
                 test_feats: features.Cached) -> dict:
    keys = ("seed", "epochs", "batch_size", "optimizer", "schedule", "train_per_class", "test_per_class")
    return {"model": name, "engine": train.ENGINE_VERSION, "transfer": TRANSFER_VERSION,
            "head_precision": HEAD_PRECISION, **{k: cfg[k] for k in keys}, "weights_sha256": provenance["sha256"],
            "train_features": train_feats.key_hash, "test_features": test_feats.key_hash}


def fit_head(name: str, cfg: dict, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
             test_y: torch.Tensor, out_dir, *, device: str = "auto", meta: dict | None = None,
             progress: bool | None = None) -> train.TrainResult:
    """Train a fresh head of ``name`` on feature tensors with the protocol's optimiser (train.fit)."""
    torch.manual_seed(cfg["seed"])  # head initialisation
    head = make_head(name)
    return train.fit(head, train_x, train_y, test_x, test_y, out_dir=out_dir, epochs=cfg["epochs"],
                     batch_size=cfg["batch_size"], lr=cfg["optimizer"]["lr"],
                     weight_decay=cfg["optimizer"]["weight_decay"], seed=cfg["seed"], prepare=_as_float,
                     device=device, precision=HEAD_PRECISION, meta=meta, progress=progress)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float()


def train_transfer(name: str, profile: str = "full", *, seed: int | None = None, data_dir=None,
                   device: str = "auto", force: bool = False, progress: bool | None = None,
                   weights_dir=None, **overrides) -> TransferResult:
    """Features (cached) + head (reused when finished) for backbone ``name`` under ``profile``.

    Raises ``weights.WeightsUnavailable`` when the backbone has no genuine weights: the caller
    reports the row as not run.
    """
    if seed is not None:
        overrides["seed"] = seed
    cfg = config.get_profile(profile, **overrides)
    model = build_transfer(name, weights_dir=weights_dir)
    train_split, test_split = data.load_profile_data(cfg, data_dir)
    feats = {}
    for split in (train_split, test_split):
        feats[split.split] = features.cached_features(model, split, profile, precision=cfg["feature_precision"],
                                                      device=device, force=force, progress=progress)
    key = head_run_key(name, cfg, model.provenance, feats["train"], feats["test"])
    out_dir = artifacts.artifact_dir(profile, "train", name, key)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    meta = {"model": name, "profile": profile, "key": key, "strategy": "frozen backbone + linear head",
            "weights": model.provenance, "feature_precision": cfg["feature_precision"],
            "features": {s: f.summary() for s, f in feats.items()}}
    result = fit_head(name, cfg, feats["train"].features, train_split.labels, feats["test"].features,
                      test_split.labels, out_dir, device=device, meta=meta, progress=progress)
    model.head.load_state_dict(result.model.state_dict())
    counts = models.count_params(model)  # measured on the assembled, deployable model
    if result.metrics.get("params_total") != counts["total"]:
        result.metrics.update(params_total=counts["total"], params_trainable=counts["trainable"])
        artifacts.write_json(out_dir / "metrics.json", result.metrics)
    return TransferResult(name, model, result, meta["features"], model.provenance)


def load_trained(name: str, profile: str = "full", weights_dir=None) -> TransferNet:
    """The deployable model of the latest finished run of ``name``: backbone weights resolved again
    (and checked to be the very file that run used) plus the trained head."""
    run = artifacts.latest(profile, "train", name)
    used = artifacts.read_json(run / "metrics.json")["weights"]["sha256"]
    model = build_transfer(name, weights_dir=weights_dir)
    if model.provenance["sha256"] != used:
        raise RuntimeError(f"{name}: the run in {run} used weights sha256 {used[:12]}, but the file found now "
                           f"({model.provenance['path']}) has {model.provenance['sha256'][:12]}; re-run notebook 03.")
    model.head.load_state_dict(torch.load(run / "model.pt", map_location="cpu"))
    return model.eval()


# ---------------------------------------------------------------------------------------
# fp32 vs bf16 features: does bf16 extraction move linear-probe accuracy?
# ---------------------------------------------------------------------------------------
def precision_check(name: str, profile: str = "full", *, seed: int | None = None, data_dir=None,
                    device: str = "auto", force: bool = False, progress: bool | None = None,
                    weights_dir=None) -> dict:
    """Linear-probe test accuracy on fp32 features vs bf16 features of the same stratified subset
    (PROTOCOL["precision_check"] images per class), heads trained identically (same seed, init
    and batch order). bf16 features come from the study's cache; fp32 ones are extracted here."""
    overrides = {} if seed is None else {"seed": seed}
    cfg = config.get_profile(profile, **overrides)
    model = build_transfer(name, weights_dir=weights_dir)
    train_split, test_split = data.load_profile_data(cfg, data_dir)
    sizes = cfg["precision_check"]
    subsets, feats = {}, {"bf16": {}, "fp32": {}}
    for split, per_class in ((train_split, sizes["train_per_class"]), (test_split, sizes["test_per_class"])):
        per_class = min(per_class, int(torch.bincount(split.labels).min()))
        idx = torch.as_tensor(data.stratified_subset(split.labels, per_class, cfg["seed"]))
        subsets[split.split] = split.subset(idx)
        full = features.cached_features(model, split, profile, precision=cfg["feature_precision"],
                                        device=device, progress=progress)
        feats["bf16"][split.split] = full.features[idx]
        feats["fp32"][split.split] = features.cached_features(model, subsets[split.split], profile, precision="fp32",
                                                              device=device, force=force,
                                                              progress=progress).features
    out = {"model": name, "train_n": len(subsets["train"]), "test_n": len(subsets["test"]),
           "feature_precision": cfg["feature_precision"]}
    logits = {}
    for prec in ("fp32", "bf16"):
        key = {"model": name, "features": prec, "transfer": TRANSFER_VERSION, "seed": cfg["seed"],
               "epochs": cfg["epochs"], "weights_sha256": model.provenance["sha256"],
               "train": artifacts.hash_tensor(feats[prec]["train"]), "test": artifacts.hash_tensor(feats[prec]["test"])}
        out_dir = artifacts.artifact_dir(profile, "precision_check", f"{name}-{prec}", key)
        if force and out_dir.exists():
            shutil.rmtree(out_dir)
        res = fit_head(name, cfg, feats[prec]["train"], subsets["train"].labels, feats[prec]["test"],
                       subsets["test"].labels, out_dir, device=device, progress=progress,
                       meta={"model": name, "features": prec, "key": key})
        out[f"test_acc_{prec}"] = res.metrics["test_acc"]
        logits[prec] = torch.load(out_dir / "test_logits.pt")
    f32, b16 = feats["fp32"]["test"].float(), feats["bf16"]["test"].float()
    out["diff_pts"] = 100 * (out["test_acc_bf16"] - out["test_acc_fp32"])
    out["prediction_agreement"] = (logits["fp32"].argmax(1) == logits["bf16"].argmax(1)).float().mean().item()
    out["feature_rel_error"] = ((b16 - f32).norm() / f32.norm()).item()
    return out
