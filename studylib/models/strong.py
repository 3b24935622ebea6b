"""The strong from-scratch recipe's network (airbench94-style, Keller Jordan 2024,
github.com/KellerJordan/cifar10-airbench), re-written for this study: a frozen 2x2 patch-whitening
first layer, three conv-pool-BN-GELU-conv-BN-GELU blocks, BatchNorm with fixed unit scale and a
1/9-scaled bias-free linear head. Its training recipe is ``recipes/strong.py``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from . import register


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int, momentum: float, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad_(False)  # unit scale, trainable bias


class Conv(nn.Conv2d):
    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[:w.size(1)])  # the first cin filters start as the identity


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bn_momentum: float):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(cin, cout), nn.MaxPool2d(2), BatchNorm(cout, bn_momentum)
        self.conv2, self.norm2, self.activ = Conv(cout, cout), BatchNorm(cout, bn_momentum), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class StrongCNN(nn.Sequential):
    """whiten (2x2, 24 ch) -> GELU -> 3 ConvGroups -> MaxPool(3) -> Linear (no bias) -> x 1/9."""

    def __init__(self, *, num_classes: int = 10, widths=(64, 256, 256), bn_momentum: float = 0.6,
                 scaling_factor: float = 1 / 9):
        whiten_width = 2 * 3 * 2 ** 2  # +/- the 12 eigen-directions of 2x2x3 patches
        super().__init__(
            nn.Conv2d(3, whiten_width, 2, padding=0, bias=True), nn.GELU(),
            ConvGroup(whiten_width, widths[0], bn_momentum), ConvGroup(widths[0], widths[1], bn_momentum),
            ConvGroup(widths[1], widths[2], bn_momentum), nn.MaxPool2d(3), nn.Flatten(),
            nn.Linear(widths[2], num_classes, bias=False), Mul(scaling_factor))
        self[0].weight.requires_grad_(False)


@register("strong_cnn")
def strong_cnn(*, num_classes: int = 10, widths=None, bn_momentum: float | None = None,
               scaling_factor: float | None = None) -> StrongCNN:
    h = config.RECIPES["strong"]
    return StrongCNN(num_classes=num_classes, widths=widths or h["widths"],
                     bn_momentum=h["bn_momentum"] if bn_momentum is None else bn_momentum,
                     scaling_factor=h["scaling_factor"] if scaling_factor is None else scaling_factor)


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float) -> None:
    """Set the first layer to +/- the eigenvectors of the 2x2 patch covariance of ``images``
    (normalised float), scaled by 1/sqrt(eigenvalue + eps): whitened patches."""
    c, (h, w) = images.shape[1], conv.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
    flat = patches.view(len(patches), -1)
    cov = (flat.T @ flat) / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov, UPLO="U")
    eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
    eigenvectors = eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    conv.weight.data[:] = torch.cat((scaled, -scaled)).to(conv.weight.dtype)


class TTA(nn.Module):
    """airbench's test-time augmentation around a deployable network (``models.Normalized``: uint8 in, logits out):
    level 0 plain; 1 averages the image and its mirror; 2 also the two 1-pixel diagonal translations (reflect),
    weights 1/2 : 1/4 : 1/4. Returns float32 logits. ``context``: entered around each forward pass of the network
    only (the training recipe's autocast), so normalisation, flips and padding stay in float32."""

    def __init__(self, model: nn.Module, level: int, context: Callable[[], ContextManager] = contextlib.nullcontext):
        super().__init__()
        if level not in (0, 1, 2):
            raise ValueError(f"TTA level must be 0, 1 or 2, got {level!r}")
        self.model, self.level, self.context = model, level, context

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with self.context():
            return self.model.net(x).float()

    def _mirror(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self._run(x) + 0.5 * self._run(x.flip(-1)) if self.level >= 1 else self._run(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.preprocess(images).contiguous(memory_format=torch.channels_last)
        logits = self._mirror(x)
        if self.level >= 2:
            h, w = x.shape[-2:]
            padded = F.pad(x, (1,) * 4, mode="reflect")
            shifted = 0.5 * self._mirror(padded[:, :, 0:h, 0:w]) + 0.5 * self._mirror(padded[:, :, 2:h + 2, 2:w + 2])
            logits = 0.5 * logits + 0.5 * shifted
        return logits
