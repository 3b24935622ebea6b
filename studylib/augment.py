"""Batched tensor augmentation for the scratch models: crop, flip, cutout, MixUp, CutMix.

Everything works on a whole uint8 batch (B, 3, H, W) at once with index arithmetic, never
a per-image Python or PIL loop, and draws its randomness from an explicit generator so a
run (and a resumed run) is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image; its centre is uniform over the image and the
    square is clipped at the border (DeVries & Taylor 2017)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1), generator=gen)
    cx = torch.randint(0, w, (b, 1), generator=gen)
    size_t = torch.tensor(size)
    return x.masked_fill(_box_mask(h, w, cy, cx, size_t, size_t)[:, None], 0)


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
    """The reference's scratch-model augmentation, on batches.

    uint8 batch -> crop(pad) -> flip -> cutout -> float, normalised -> with probability
    ``mix_p`` MixUp or CutMix (even odds) against a shuffled copy of the batch.
    """

    def __init__(self, *, crop_padding: int, hflip_p: float, cutout_size: int, mix_p: float, mixup_alpha: float,
                 cutmix_alpha: float, mean: tuple[float, ...], std: tuple[float, ...]):
        self.crop_padding, self.hflip_p, self.cutout_size = crop_padding, hflip_p, cutout_size
        self.mix_p, self.mixup_alpha, self.cutmix_alpha = mix_p, mixup_alpha, cutmix_alpha
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255.0

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> MixedBatch:
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, gen)
        x = hflip(x, self.hflip_p, gen)
        if self.cutout_size:
            x = cutout(x, self.cutout_size, gen)
        x = self.normalize(x)
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
