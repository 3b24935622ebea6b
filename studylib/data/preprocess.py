"""The one input normalisation of the study: uint8 images in, a network's input out.

    norm = Normalize(mean, std)                  # scratch models: (x / 255 - mean) / std
    norm = Normalize(mean, std, size=224)        # transfer models: upscale first, then normalise

Every model that is trained, evaluated or deployed gets its input through this module, so
training, evaluation and the shipped model compute the same numbers.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """uint8 [0, 255] (or float [0, 1]) RGB batch -> ((resize(x / 255) - mean) / std).

    ``size``: bilinear (by default) upscale to ``size`` x ``size`` first, align_corners=False, antialias
    off (antialiasing only changes downscaling). None keeps the image size.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int | None = None, mode: str = "bilinear",
                 antialias: bool = False):
        super().__init__()
        self.size, self.mode, self.antialias = size, mode, antialias
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode=self.mode, antialias=self.antialias,
                              align_corners=False if self.mode in ("bilinear", "bicubic") else None)
        return (x - self.mean) / self.std

    def resized(self, size: int | None) -> "Normalize":
        """The same normalisation at another input size."""
        return Normalize(self.mean.flatten().tolist(), self.std.flatten().tolist(), size, self.mode, self.antialias)

    def describe(self) -> dict:
        """What the output depends on (part of feature-cache keys)."""
        return {"size": self.size, "upscale": {"mode": self.mode, "antialias": self.antialias},
                "mean": [round(v, 6) for v in self.mean.flatten().tolist()],
                "std": [round(v, 6) for v in self.std.flatten().tolist()]}

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode!r}"
