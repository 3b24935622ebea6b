"""Frozen-backbone feature cache.

The backbone is frozen and the transfer protocol has no augmentation, so a backbone maps each
image to the same feature vector in every epoch: its features for the 60,000 images are
computed once and the head trains on them (same result as running the images through the
backbone every epoch;
tests/test_backbones_heads.py::test_head_on_cached_features_equals_images_through_frozen_backbone checks it).

A cache lives in ``<artifacts>/<profile>/features/<backbone>-<hash(key)>/`` where the key is
everything the features depend on: backbone, weights file sha256, input resolution, upscale,
normalisation, precision, the images and labels (hashed) and this module's version. It is
computed in shards of ``SHARD`` images, each written atomically (an interrupted extraction
resumes at the first missing shard), then assembled into ``features.pt``. On read every piece
is checked against the key and the data (shape, count, labels, finite values); anything
missing, partial or stale is recomputed, never half-used.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import artifacts, config, runs, runtime, timing

FEATURES_VERSION = 1
SHARD = 5000       # images per shard file: an interruption loses at most one shard of work
# Input bytes per forward pass. Depthwise networks are memory-bound on CPU, and a pass whose activations stay
# close to the caches is fastest. benchmarks.bench_batch (2-core AMD EPYC, 2026-12-03; batches 1-512 at 224 and
# 64 px, same process): at 224 px, batch 8 extracts (bf16) 2.04x (MobileNetV2) and 1.91x (EfficientNet-Lite0) as
# many images/s as batch 64 did, and re-evaluates (fp32, BatchNorm folded) 1.90x / 1.93x; at 64 px, batch 64-128
# (bf16) and 32-64 (fp32) are fastest. Outputs at every batch size equalled batch 64's (bf16 features exactly; fp32
# logits exactly from batch 2 up, within 4e-7 at batch 1), so cached features and recorded predictions do not
# depend on it.
PASS_BYTES = 8 * 224 * 224 * 2   # batch 8 at 224 px in bf16; 4 in fp32; ~100 / ~50 at 64 px
MAX_BATCH = 512
GPU_BATCH = 64   # on a GPU: the setting before bench_batch (which measures the CPU only)
FINAL = "features.pt"  # the assembled cache (written last); shards are deleted once it exists


def batch_for(size: int | None, precision: str = "bf16", device: str | torch.device = "cpu") -> int:
    """Images per forward pass for ``size``-px inputs (None: CIFAR-10's native 32 px) under ``precision``
    on ``device``: on the CPU, PASS_BYTES over one image's input bytes (2 per value in bf16, else 4), between
    1 and MAX_BATCH; on a GPU, GPU_BATCH."""
    if torch.device(device).type != "cpu":
        return GPU_BATCH
    per_image = (size or 32) ** 2 * (2 if precision == "bf16" else 4)
    return max(1, min(MAX_BATCH, round(PASS_BYTES / per_image)))


def model_batch(model: nn.Module, precision: str = "bf16", device: str | torch.device = "cpu") -> int:
    """batch_for at the input size ``model``'s preprocessing produces (native when it does not resize)."""
    return batch_for(getattr(getattr(model, "preprocess", None), "size", None), precision, device)


@dataclass
class Cached:
    features: torch.Tensor   # (N, D), bf16 or fp32 (the extraction precision)
    labels: torch.Tensor     # (N,) int64, the split's labels (checked against the data)
    key: dict
    key_hash: str
    path: Path
    seconds: float           # extraction wall time (summed over shards, including resumed runs)
    reused: bool

    @property
    def images_per_s(self) -> float:
        return len(self.features) / self.seconds if self.seconds else float("nan")

    def summary(self) -> dict:
        return {"path": config.display_path(self.path), "n": len(self.features), "dim": self.features.shape[1],
                "dtype": str(self.features.dtype).replace("torch.", ""), "seconds": self.seconds,
                "images_per_s": self.images_per_s, "reused": self.reused, "key_hash": self.key_hash}


def weights_id(model: nn.Module) -> str:
    """The backbone weights' identity: the ImageNet file's sha256; for a random-init backbone built by
    ``heads.random_init_backbone``, its recipe (``"random:"`` + hash); else a hash of its state."""
    if model.provenance is None:
        raise ValueError(f"{model.name} was built with init=None (tests only); its features are never cached.")
    if model.provenance.get("sha256"):
        return model.provenance["sha256"]
    if model.provenance.get("recipe"):
        return "random:" + model.provenance["recipe"]
    state = model.backbone.state_dict()
    return "state:" + artifacts.hash_obj([artifacts.hash_tensor(state[k]) for k in sorted(state)])


def feature_key(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str) -> dict:
    """Everything that determines a backbone's features of ``images`` (the device and batch size do not)."""
    return {"backbone": model.name, "weights_sha256": weights_id(model), **model.preprocess.describe(),
            "precision": precision, "version": FEATURES_VERSION,
            "images": artifacts.hash_tensor(images), "labels": artifacts.hash_tensor(labels)}


@torch.inference_mode()
def extract(model: nn.Module, images: torch.Tensor, *, precision: str = "bf16", device: str = "auto",
            batch_size: int | None = None, progress: bool | None = None, desc: str = "features") -> torch.Tensor:
    """Backbone features (N, D) of uint8 ``images`` (a TransferNet in channels_last, eval mode): bf16
    under bf16 autocast, else fp32; ``batch_size`` images per pass (None: model_batch)."""
    dev = runtime.resolve_device(device)
    batch_size = batch_size or model_batch(model, precision, dev)
    model.eval().to(dev).use_channels_last()
    out_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if progress is None:
        progress = sys.stderr.isatty()
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=not progress):
        x = model.preprocess(images[start:start + batch_size].to(dev)).contiguous(memory_format=torch.channels_last)
        with runtime.autocast(dev, precision):  # the normalisation above stays fp32
            out.append(model.backbone(x).to(out_dtype).cpu())
    return torch.cat(out) if out else torch.empty(0)


def _valid(obj, key_hash: str, n: int, labels: torch.Tensor | None = None) -> bool:
    """A stored piece is usable only if it carries our key and has the expected, finite content."""
    try:
        f = obj["features"]
        ok = obj["key_hash"] == key_hash and f.dim() == 2 and len(f) == n and bool(torch.isfinite(f.float()).all())
        return ok and (labels is None or torch.equal(obj["labels"], labels))
    except Exception:
        return False


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None  # truncated or foreign file: treated as missing


def feature_run(model: nn.Module, split, profile: str, precision: str) -> runs.Run:
    """The cache of ``model``'s features of ``split`` as a run (never shipped: it is large)."""
    key = feature_key(model, split.images, split.labels, precision)
    return runs.Run("features", f"{model.name}-{split.split}", key, profile, marker=FINAL)


def is_cached(model: nn.Module, split, profile: str, precision: str) -> bool:
    return (feature_run(model, split, profile, precision).folder / FINAL).exists()


def cached_features(model: nn.Module, split, profile: str, *, precision: str = "bf16", device: str = "auto",
                    force: bool = False, progress: bool | None = None, batch_size: int | None = None) -> Cached:
    """Features of every image of ``split`` (a data.CifarSplit) through ``model``'s frozen backbone,
    from the cache when it is complete and matches, else computed (resuming finished shards)."""
    run = feature_run(model, split, profile, precision)
    if force:
        with run.owned():
            run.reset()
    reused = _read_final(run, split)
    if reused is not None:
        return reused
    with run.owned():  # one process extracts; another reaching the same cache waits, then reads it
        return _read_final(run, split) or _compute(run, model, split, precision=precision, device=device,
                                                   progress=progress, batch_size=batch_size)


def _read_final(run: runs.Run, split) -> Cached | None:
    """The assembled cache when it is complete and matches; a stale or damaged one is removed (None)."""
    key_hash, final = artifacts.hash_obj(run.key), run.folder / FINAL
    if not final.exists():
        return None
    obj = _load(final)
    if _valid(obj, key_hash, len(split), split.labels):
        return Cached(obj["features"], split.labels, run.key, key_hash, run.folder, obj["seconds"], reused=True)
    print(f"feature cache {config.display_path(final)} is stale or damaged; rebuilding it", flush=True)
    run.reset()
    return None


def _compute(run: runs.Run, model: nn.Module, split, *, precision: str, device: str, progress: bool | None,
             batch_size: int | None) -> Cached:
    """Extract every missing shard, then assemble the cache (the caller holds the run's lock)."""
    key, key_hash, folder = run.key, artifacts.hash_obj(run.key), run.folder
    n = len(split)
    runtime.check_machine_load(f"{model.name} {split.split} features")

    parts, seconds = [], 0.0
    n_shards = (n + SHARD - 1) // SHARD
    for i, start in enumerate(range(0, n, SHARD)):
        stop = min(start + SHARD, n)
        shard_path = folder / f"shard-{start:06d}-{stop:06d}.pt"
        obj = _load(shard_path) if shard_path.exists() else None
        if not _valid(obj, key_hash, stop - start, split.labels[start:stop]):
            t0 = time.perf_counter()
            feats = extract(model, split.images[start:stop], precision=precision, device=device,
                            batch_size=batch_size, progress=progress,
                            desc=f"{model.name} {split.split} {i + 1}/{n_shards}")
            obj = {"features": feats, "labels": split.labels[start:stop].clone(), "key_hash": key_hash,
                   "seconds": time.perf_counter() - t0}
            artifacts.torch_save(shard_path, obj)
            print(f"{model.name} {split.split}: images {start:,}-{stop:,} of {n:,} in {obj['seconds']:.1f} s "
                  f"({(stop - start) / obj['seconds']:.1f} images/s)", flush=True)
        parts.append(obj["features"])
        seconds += obj["seconds"]
    feats = torch.cat(parts) if parts else torch.empty(0, 0)
    artifacts.write_json(folder / "key.json", key)
    run.write_marker({"features": feats, "labels": split.labels.clone(), "key": key, "key_hash": key_hash,
                      "seconds": seconds, "environment": runtime.environment()})
    for shard in folder.glob("shard-*.pt"):
        shard.unlink()
    return Cached(feats, split.labels, key, key_hash, folder, seconds, reused=False)


def time_extraction(model: nn.Module, images: torch.Tensor, *, precision: str = "bf16", device: str = "auto",
                    batch_size: int | None = None) -> float:
    """images/s of ``model``'s frozen backbone on ``images`` (bf16 by default; ``batch_size`` None: the cache's,
    model_batch), after one untimed warm-up batch."""
    batch_size = batch_size or model_batch(model, precision, runtime.resolve_device(device))
    extract(model, images[:batch_size], precision=precision, device=device, batch_size=batch_size, progress=False)
    return timing.rate(lambda: extract(model, images, precision=precision, device=device, batch_size=batch_size,
                                       progress=False), len(images), warmup=0)
