"""End-to-end fine-tuning of an ImageNet backbone at a reduced input size (notebook 10).

The reference fine-tuned MobileNetV2 with progressive unfreezing at 224 px; that is hours on the
2-core CPU. Here the whole network (backbone with its BatchNorm in training mode + a fresh linear
head) is trained at ``size`` px with the study's engine (train.fit: Adam + cosine, 15 epochs,
batch 128, bf16 autocast), random crop (pad 4) + horizontal flip on the 32-px images before the
upscale, and compared with the frozen-backbone linear probe at the same size (studylib.probes).

    python -m studylib.finetune --profile full --device cuda --size 128
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from . import artifacts, augment, config, data, experiments, models, probes, train, transfer

FINETUNE_VERSION = 1
# Adam at the protocol's 1e-3 moves pretrained weights far in the first steps; 1e-4 is the usual
# full-network fine-tuning rate for Adam (10x below the head-only rate). Weight decay as the protocol.
HYP = {"lr": 1e-4, "weight_decay": 1e-4, "crop_padding": 4, "hflip_p": 0.5}


class FineTuneNet(nn.Module):
    """preprocess (upscale + normalise) -> backbone (trainable, BatchNorm in train mode) -> head."""

    def __init__(self, net: transfer.TransferNet):
        super().__init__()
        self.name, self.provenance = net.name, net.provenance
        self.preprocess, self.backbone, self.head = net.preprocess, net.backbone, net.head
        for p in self.backbone.parameters():
            p.requires_grad_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.preprocess(x)))


class CropFlip:
    """Random crop (zero pad) + horizontal flip of uint8 batches (studylib.augment), no mixing."""

    def __init__(self, padding: int, p: float):
        self.padding, self.p = padding, p

    def __call__(self, x, y, gen):
        x = augment.hflip(augment.random_crop(x, self.padding, gen), self.p, gen)
        return augment.MixedBatch(x, y, y, 1.0)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def finetune(name: str, profile: str, *, size: int, seed: int = 0, data_dir=None, device: str = "auto",
             force: bool = False, progress: bool | None = None) -> train.TrainResult:
    """Fine-tune backbone ``name`` end to end at ``size`` px (or reuse the finished run)."""
    cfg = config.get_profile(profile, seed=seed)
    train_split, test_split = data.load_profile_data(cfg, data_dir or None)
    torch.manual_seed(seed)
    net = probes.with_input_size(transfer.build_transfer(name), size)
    model = FineTuneNet(net)
    key = {"model": name, "size": size, "version": FINETUNE_VERSION, "hyp": HYP, "engine": train.ENGINE_VERSION,
           "seed": seed, "epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "precision": cfg["precision"],
           "weights_sha256": net.provenance["sha256"], "train_per_class": cfg["train_per_class"],
           "test_per_class": cfg["test_per_class"],
           "train_data": artifacts.hash_tensor(train_split.images), "test_data": artifacts.hash_tensor(test_split.images)}
    out_dir = artifacts.artifact_dir(profile, "finetune", name, key)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    meta = {"model": name, "profile": profile, "key": key, "size": size, "seed": seed,
            "strategy": "fine-tuned end to end", "weights": net.provenance}
    return train.fit(model, train_split.images, train_split.labels, test_split.images, test_split.labels,
                     out_dir=out_dir, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=HYP["lr"],
                     weight_decay=HYP["weight_decay"], seed=seed, prepare=_identity,
                     augment=CropFlip(HYP["crop_padding"], HYP["hflip_p"]), device=device,
                     precision=cfg["precision"], channels_last=True, meta=meta, progress=progress)


def finished(profile: str) -> list[dict]:
    """Metrics of every finished fine-tuning run of ``profile``."""
    return [artifacts.read_json(m) for m in sorted((config.artifacts_dir() / profile / "finetune").glob("*/metrics.json"))]


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Fine-tune an ImageNet backbone end to end at a reduced size")
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=None, help="default: the grid's backbone")
    ap.add_argument("--size", type=int, default=None, help="default: the grid's input size (px)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    g = experiments.grid("finetune", args.profile)
    r = finetune(args.model or g["backbone"], args.profile, size=args.size or g["size"], seed=args.seed,
                 device=args.device)
    m = r.metrics
    print(f"fine-tuned {m['model']} at {m['size']} px: {100 * m['test_acc']:.2f}% in {m['train_seconds']:.0f} s on "
          f"{m['device']} ({m['environment'].get('gpu', m['environment']['cpu'])})")


if __name__ == "__main__":
    main()
