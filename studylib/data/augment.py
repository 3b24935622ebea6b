"""Batched tensor augmentation: crop, flip, cutout, MixUp, CutMix.

Everything works on a whole uint8 batch (B, 3, H, W) at once with index arithmetic, never
a per-image Python or PIL loop, and draws its randomness from an explicit generator so a
run (and a resumed run) is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """RandomCrop(size=H, padding) with zero padding, an independent offset per image."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b, 1, 1), generator=gen)
    ox = torch.randint(0, 2 * padding + 1, (b, 1, 1), generator=gen)
    rows = oy + torch.arange(h)[None, :, None]  # (b, h, 1)
    cols = ox + torch.arange(w)[None, None, :]  # (b, 1, w)
    batch = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def hflip(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _box_mask(h: int, w: int, cy: torch.Tensor, cx: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool masks of boxes of size (bh, bw) centred at (cy, cx), clipped at the border."""
    ys, xs = torch.arange(h), torch.arange(w)
    in_y = (ys >= cy - bh // 2) & (ys < cy - bh // 2 + bh)
    in_x = (xs >= cx - bw // 2) & (xs < cx - bw // 2 + bw)
    return in_y[:, :, None] & in_x[:, None, :]


def cutout(x: torch.Tensor, size: int, gen: torch.Generator, fill: float = 0) -> torch.Tensor:
    """Set one size x size square per image to ``fill``; its centre is uniform over the image and
    the square is clipped at the border (DeVries & Taylor 2017). On uint8 images fill 0 is black;
    on normalised images (the reference's code: CutOut after Normalize) 0 is the per-channel mean."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1), generator=gen)
    cx = torch.randint(0, w, (b, 1), generator=gen)
    size_t = torch.tensor(size)
    return x.masked_fill(_box_mask(h, w, cy, cx, size_t, size_t)[:, None], fill)


def mixup(x: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * x + (1 - lam) * x[perm] on float images (Zhang et al. 2018)."""
    return x.mul(lam).add_(x[perm], alpha=1.0 - lam)


def cutmix(x: torch.Tensor, perm: torch.Tensor, lam: float, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Paste one box of x[perm] into every image (Yun et al. 2019); the box has area
    (1 - lam) * H * W, the same box for the batch; returns the images and the exact label weight
    of the original image after clipping at the border."""
    _, _, h, w = x.shape
    ratio = (1.0 - lam) ** 0.5
    bh, bw = torch.tensor(int(h * ratio)), torch.tensor(int(w * ratio))
    cy = torch.randint(0, h, (1, 1), generator=gen)
    cx = torch.randint(0, w, (1, 1), generator=gen)
    mask = _box_mask(h, w, cy, cx, bh, bw)[:, None]  # (1, 1, H, W)
    out = torch.where(mask, x[perm], x)
    return out, 1.0 - mask.sum().item() / (h * w)


@dataclass(frozen=True)
class MixedBatch:
    """Images plus the two label sets and the weight ``lam`` of ``labels_a`` in the loss."""
    images: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam: float


class ScratchAugment:
    """The scratch recipes' augmentation, on batches.

    uint8 batch -> crop(pad) -> flip -> [cutout] -> normalise -> [cutout, when ``cutout_after_normalize``]
    -> with probability ``mix_p`` MixUp or CutMix (even odds) against a shuffled copy of the batch.
    """

    def __init__(self, *, crop_padding: int, hflip_p: float, cutout_size: int, cutout_after_normalize: bool,
                 mix_p: float, mixup_alpha: float, cutmix_alpha: float, normalize: Callable[[torch.Tensor], torch.Tensor]):
        self.crop_padding, self.hflip_p, self.cutout_size = crop_padding, hflip_p, cutout_size
        self.cutout_after_normalize = cutout_after_normalize
        self.mix_p, self.mixup_alpha, self.cutmix_alpha = mix_p, mixup_alpha, cutmix_alpha
        self.normalize = normalize

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> MixedBatch:
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, gen)
        x = hflip(x, self.hflip_p, gen)
        if self.cutout_size and not self.cutout_after_normalize:
            x = cutout(x, self.cutout_size, gen)
        x = self.normalize(x)
        if self.cutout_size and self.cutout_after_normalize:
            x = cutout(x, self.cutout_size, gen)
        if torch.rand(1, generator=gen).item() >= self.mix_p:
            return MixedBatch(x, y, y, 1.0)
        # Beta draws come from a NumPy generator seeded by the torch one, keeping one seed source.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
        perm = torch.randperm(len(x), generator=gen)
        if rng.random() < 0.5:
            lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            return MixedBatch(mixup(x, perm, lam), y, y[perm], lam)
        lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        x, lam = cutmix(x, perm, lam, gen)
        return MixedBatch(x, y, y[perm], lam)


class CropFlip:
    """Random crop (zero pad) + horizontal flip of uint8 batches, no mixing (fine-tuning)."""

    def __init__(self, crop_padding: int, hflip_p: float):
        self.crop_padding, self.hflip_p = crop_padding, hflip_p

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> MixedBatch:
        return MixedBatch(hflip(random_crop(x, self.crop_padding, gen), self.hflip_p, gen), y, y, 1.0)
