"""CIFAR-10-C-style corruptions, generated here on uint8 batches (not the released CIFAR-10-C files).

Definitions and severity parameters follow Hendrycks & Dietterich (ICLR 2019), "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", CIFAR variant (``make_cifar_c.py``
in github.com/hendrycks/robustness), re-implemented as batched tensor operations:

| corruption | severity 1..5 parameter | operation on x in [0, 1] |
|---|---|---|
| gaussian_noise | std 0.04, 0.06, 0.08, 0.09, 0.10 | x + N(0, std^2), clipped |
| gaussian_blur | sigma 0.4, 0.6, 0.7, 0.8, 1.0 px | Gaussian filter, kernel radius ceil(4 sigma), edge pixels replicated (skimage's defaults) |
| jpeg_compression | quality 80, 65, 58, 50, 40 | JPEG encode + decode with PIL (libjpeg) |
| contrast | factor 0.75, 0.5, 0.4, 0.3, 0.15 | (x - per-image channel mean) * factor + mean, clipped |
| brightness | +0.05, 0.1, 0.15, 0.2, 0.3 | HSV value channel + delta, clipped (hue and saturation kept) |

Differences from the released set: the output is rounded to uint8 (the release truncates) and the
noise comes from a torch generator seeded per (seed, corruption, severity) instead of NumPy's global
state. JPEG is the one per-image loop (a PIL codec call); the rest are batched tensor operations.
Every function maps uint8 (N, 3, H, W) to uint8 of the same shape, is deterministic for a given
seed, and gets monotonically stronger with severity.
"""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SEVERITIES = (1, 2, 3, 4, 5)
PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),   # noise std on the [0, 1] scale
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),         # Gaussian sigma in pixels
    "jpeg_compression": (80, 65, 58, 50, 40),           # JPEG quality (lower = stronger)
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),            # contrast factor (lower = stronger)
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),          # added to the HSV value channel
}
CORRUPTIONS = tuple(PARAMS)


def _check(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"corruptions take uint8 RGB batches (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def gaussian_noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    f = x.float() / 255
    return _to_uint8(f + std * torch.randn(f.shape, generator=gen))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = math.ceil(4 * sigma)  # skimage.filters.gaussian truncates at 4 sigma
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    f = x.float() / 255
    c = f.shape[1]
    f = F.pad(f, (radius, radius, 0, 0), mode="replicate")
    f = F.conv2d(f, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    f = F.pad(f, (0, 0, radius, radius), mode="replicate")
    f = F.conv2d(f, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return _to_uint8(f)


def jpeg_compression(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip with PIL, as the published definition (a per-image codec call: 32x32 images
    take microseconds each, so the loop is not the cost)."""
    arr = x.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=int(quality))
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    f = x.float() / 255
    mean = f.mean(dim=(2, 3), keepdim=True)
    return _to_uint8((f - mean) * factor + mean)


def brightness(x: torch.Tensor, delta: float) -> torch.Tensor:
    """HSV value + delta with hue and saturation kept: with H and S fixed, RGB scales linearly with
    V = max(R, G, B), so RGB' = RGB * V' / V (and V' grey for black pixels, whose saturation is 0)."""
    f = x.float() / 255
    v = f.amax(dim=1, keepdim=True)
    v_new = (v + delta).clamp(0, 1)
    scaled = torch.where(v > 0, f * (v_new / v.clamp_min(1e-12)), v_new.expand_as(f))
    return _to_uint8(scaled)


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``x`` (uint8 N,3,H,W) under corruption ``name`` at ``severity`` (1..5), deterministic in ``seed``."""
    _check(x)
    if name not in PARAMS:
        raise KeyError(f"unknown corruption {name!r}; choose one of {CORRUPTIONS}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    p = PARAMS[name][severity - 1]
    if name == "gaussian_noise":
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{severity}".encode()))
        return gaussian_noise(x, p, gen)
    return {"gaussian_blur": gaussian_blur, "jpeg_compression": jpeg_compression, "contrast": contrast,
            "brightness": brightness}[name](x, p)
