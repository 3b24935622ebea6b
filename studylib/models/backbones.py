"""ImageNet backbones (torchvision architectures and EfficientNet-Lite0) and the transfer model
built from them: ``TransferNet`` = input normalisation (upscale + the backbone's statistics) ->
backbone (its 1000-class classifier removed) -> head.

    model = build_model("mobilenet_v2")                      # genuine ImageNet weights or WeightsUnavailable
    model = build_transfer("mobilenet_v2_float", init="random", size=64)   # the controlled grid's random twin
    model(images_uint8_32x32)                                # -> (N, 10) logits

A frozen ``TransferNet`` keeps its backbone in eval mode always (BatchNorm statistics fixed; the
int8-dequantised MobileNetV2 file has BatchNorm folded and needs eval); ``frozen=False`` trains
the whole network (fine-tuning). ``init="random"`` builds the same architecture untrained, for
the experiments that compare initialisations: its provenance says so, and it is never reported
as pretrained.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .. import config, weights
from ..data.preprocess import Normalize
from . import register

# Rows of the study, in report order. mobilenet_v2 and mobilenet_v2_float are the same
# architecture with two different genuine ImageNet weight files (shared/weights/README.md).
TRANSFER_MODELS = ("mobilenet_v2", "mobilenet_v2_float", "resnet18", "efficientnet_b0", "efficientnet_lite0")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights' transforms()
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # EfficientNet-Lite checkpoints expect [-1, 1] inputs
INITS = ("imagenet", "random")


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
    gradcam_layer: str                   # attribute path (in the backbone) Grad-CAM looks at


ARCHS: dict[str, Arch] = {
    "resnet18": Arch(lambda: torchvision.models.resnet18(weights=None), "fc", 512, None, IMAGENET_MEAN, IMAGENET_STD,
                     "layer4"),
    "mobilenet_v2": Arch(lambda: torchvision.models.mobilenet_v2(weights=None), "classifier", 1280, 0.2,
                         IMAGENET_MEAN, IMAGENET_STD, "features.18"),
    "efficientnet_b0": Arch(lambda: torchvision.models.efficientnet_b0(weights=None), "classifier", 1280, 0.2,
                            IMAGENET_MEAN, IMAGENET_STD, "features.8"),
    "efficientnet_lite0": Arch(EfficientNetLite0, "_fc", 1280, 0.2, LITE_MEAN, LITE_STD, "_bn1"),
}


def arch_of(name: str) -> Arch:
    if name not in weights.SPECS:
        raise KeyError(f"unknown transfer backbone {name!r}; known: {sorted(weights.SPECS)}")
    return ARCHS[weights.SPECS[name].arch]


class TransferNet(nn.Module):
    """preprocess -> backbone -> head: uint8 images in, logits out.

    ``frozen``: the backbone's parameters take no gradient and it stays in eval mode whatever
    ``train()`` is called with; otherwise the whole network trains (BatchNorm in train mode)."""

    def __init__(self, name: str, preprocess: Normalize, backbone: nn.Module, head: nn.Module,
                 provenance: dict | None, frozen: bool = True):
        super().__init__()
        self.name, self.provenance, self.frozen = name, provenance, frozen
        self.preprocess, self.backbone, self.head = preprocess, backbone, head
        self.channels_last = False  # feed the backbone channels_last tensors (faster convolutions on CPU)
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.backbone.eval()

    def train(self, mode: bool = True) -> "TransferNet":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (N, feature_dim) of an image batch."""
        x = self.preprocess(x)
        return self.backbone(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def use_channels_last(self) -> "TransferNet":
        """Weights and backbone inputs in channels_last (how features are extracted; 1.5-2x faster on CPU)."""
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_head(name: str, num_classes: int = 10) -> nn.Module:
    arch = arch_of(name)
    linear = nn.Linear(arch.feature_dim, num_classes)
    return linear if arch.head_dropout is None else nn.Sequential(nn.Dropout(arch.head_dropout), linear)


def build_transfer(name: str, *, num_classes: int = 10, init: str | None = "imagenet", size: int | None = None,
                   frozen: bool = True, weights_dir: str | os.PathLike | None = None) -> TransferNet:
    """Backbone ``name`` with a fresh ``num_classes`` head at input ``size`` (default: the protocol's).

    ``init="imagenet"``: genuine ImageNet weights (``WeightsUnavailable`` when there are none);
    ``"random"``: the architecture's own random initialisation (seed it first), provenance saying so;
    ``None``: untrained, no provenance — for shape and parameter-count tests only.
    """
    arch = arch_of(name)
    if init not in (*INITS, None):
        raise ValueError(f"init must be one of {INITS} or None, got {init!r}")
    resolved = weights.resolve(name, weights_dir) if init == "imagenet" else None
    backbone = arch.build()
    if resolved is not None:
        weights.load_into(backbone, resolved)
    setattr(backbone, arch.classifier, nn.Identity())  # backbone now returns pooled features
    size = size or config.PROTOCOL["input_size"][weights.SPECS[name].arch]
    pre = Normalize(arch.mean, arch.std, size, **config.PROTOCOL["upscale"])
    provenance = resolved.provenance() if resolved else (
        {"backbone": name, "source": "random init", "file": None, "sha256": None,
         "note": "untrained: the architecture's default initialisation"} if init == "random" else None)
    return TransferNet(name, pre, backbone, make_head(name, num_classes), provenance, frozen=frozen)


def _register(name: str) -> None:
    @register(name)
    def builder(*, num_classes: int = 10, init: str | None = "imagenet", weights_dir=None, **kw) -> TransferNet:
        return build_transfer(name, num_classes=num_classes, init=init, weights_dir=weights_dir, **kw)


for _name in TRANSFER_MODELS:
    _register(_name)
