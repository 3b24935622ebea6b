"""CIFAR-10 loading and validation, seeded splits and stratified subsets.

The data is read from torchvision's `cifar-10-batches-py` layout straight into uint8
tensors (N, 3, 32, 32). It is validated by content, never by file hash: a copy with
identical pixels and labels but different pickling is accepted, and a truncated or
corrupted file is refused with an error naming it.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import artifacts, config

FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
NUM_CLASSES = 10
# CIFAR-10's class names, in label order (batches.meta's label_names): fixed by the dataset, kept here so
# that predicting needs no copy of the dataset.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
# Per-class counts of the official splits: every full split is checked against these.
FULL_PER_CLASS = {"train": 5000, "test": 1000}


class DataError(RuntimeError):
    """The CIFAR-10 folder is missing, incomplete or does not hold valid CIFAR-10."""


@dataclass(frozen=True)
class CifarSplit:
    images: torch.Tensor  # uint8 (N, 3, 32, 32), RGB
    labels: torch.Tensor  # int64 (N,), values 0..9
    classes: tuple[str, ...]
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | np.ndarray) -> "CifarSplit":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return CifarSplit(self.images[idx], self.labels[idx], self.classes, self.split)


# ---------------------------------------------------------------------------------------
# Locating the folder
# ---------------------------------------------------------------------------------------
def _as_batches_dir(path: Path) -> Path:
    """Accept either the `cifar-10-batches-py` folder itself or the folder that holds it."""
    return path if path.name == FOLDER_NAME or (path / META_FILE).exists() else path / FOLDER_NAME


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Where CIFAR-10 should be: explicit argument, else $CIFAR10_DIR, else <project>/data.

    Returns the `cifar-10-batches-py` path and a word saying where it came from.
    """
    if data_dir not in (None, ""):
        return _as_batches_dir(Path(data_dir).expanduser().resolve()), "argument"
    env = os.environ.get(config.DATA_DIR_ENV)
    if env:
        return _as_batches_dir(Path(env).expanduser().resolve()), f"${config.DATA_DIR_ENV}"
    return _as_batches_dir(config.DEFAULT_DATA_DIR), "project default"


def _download(batches_dir: Path) -> None:
    """Fetch the official archive with torchvision's downloader into the parent folder."""
    from torchvision.datasets import CIFAR10

    batches_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        CIFAR10(root=str(batches_dir.parent), train=True, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"downloading CIFAR-10 into {batches_dir.parent} failed ({exc}). Without internet, "
            f"copy an existing `{FOLDER_NAME}` folder there or point ${config.DATA_DIR_ENV} at one."
        ) from exc


# ---------------------------------------------------------------------------------------
# Reading and validating
# ---------------------------------------------------------------------------------------
def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing file {path}: the CIFAR-10 folder is incomplete; "
                        f"re-copy it or re-run with download=True (--download).")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as exc:
        raise DataError(
            f"cannot read {path} ({type(exc).__name__}: {exc}); the file is corrupted or "
            f"truncated. Delete the `{FOLDER_NAME}` folder and download or copy it again."
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR-10 batch dict.")
    # Keys may be str (latin1 pickles of py3 dicts) or bytes (the official py2 pickles).
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{path} has no {key!r} entry (keys: {sorted(batch)}); not a CIFAR-10 batch.")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' must be a uint8 array, got "
                        f"{getattr(data, 'dtype', type(data).__name__)}.")
    if data.ndim != 2 or data.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072) = 3x32x32 RGB planes; "
                        f"the file is truncated or not CIFAR-10.")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images.")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels outside 0..{NUM_CLASSES - 1} "
                        f"(min {labels.min()}, max {labels.max()}); the file is corrupted.")
    return data, labels.astype(np.int64)


def read_classes(batches_dir: Path) -> tuple[str, ...]:
    meta = _read_pickle(batches_dir / META_FILE)
    names = meta.get("label_names")
    if names is None or len(names) != NUM_CLASSES:
        raise DataError(f"{batches_dir / META_FILE}: expected {NUM_CLASSES} 'label_names', got {names!r}.")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def load_cifar10(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    check_counts: bool = True,
) -> CifarSplit:
    """Load one CIFAR-10 split ("train" or "test") as uint8 tensors, validated by content.

    ``check_counts`` asserts the official per-class counts (5,000 / 1,000); turn it off
    only for hand-made test folders.
    """
    if split not in FULL_PER_CLASS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    batches_dir, source = resolve_data_dir(data_dir)
    if not (batches_dir / META_FILE).exists():
        if download:
            _download(batches_dir)
        else:
            raise DataError(
                f"CIFAR-10 not found at {batches_dir} (from the {source}; looked for "
                f"{FOLDER_NAME}/{META_FILE}). Fix: pass data_dir=..., set ${config.DATA_DIR_ENV} to a "
                f"`{FOLDER_NAME}` folder, or download it with download=True "
                f"(`python run_all.py --download`)."
            )
    files = [batches_dir / name for name in (TRAIN_FILES if split == "train" else TEST_FILES)]
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files)
    return _read_split(str(batches_dir), split, check_counts, stamp)


@functools.lru_cache(maxsize=4)
def _read_split(batches_dir: str, split: str, check_counts: bool, stamp: tuple) -> CifarSplit:
    """One split read and validated; cached per folder and file state (``stamp``): callers never
    modify the returned tensors in place."""
    batches_dir = Path(batches_dir)
    classes = read_classes(batches_dir)
    parts = [_read_batch(batches_dir / name) for name in (TRAIN_FILES if split == "train" else TEST_FILES)]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if check_counts:
        counts = np.bincount(labels, minlength=NUM_CLASSES)
        expected = FULL_PER_CLASS[split]
        if not (counts == expected).all():
            raise DataError(
                f"{batches_dir}: the {split} split has per-class counts {counts.tolist()}, expected "
                f"{expected} each; the data is incomplete or corrupted. Re-download or re-copy it."
            )
    images = torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy())
    return CifarSplit(images, torch.from_numpy(labels), classes, split)


# ---------------------------------------------------------------------------------------
# Deterministic splits and subsets
# ---------------------------------------------------------------------------------------
def stratified_subset(labels: torch.Tensor | np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` images of every class, chosen by ``seed``, in ascending order.

    The same (labels, per_class, seed) always gives the same indices, and a smaller
    ``per_class`` with the same seed is a subset of a larger one (nested data-efficiency sizes).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))  # one global shuffle -> nested subsets across sizes
    chosen = []
    for c in range(NUM_CLASSES):
        of_class = order[labels[order] == c]
        if per_class > len(of_class):
            raise ValueError(f"class {c} has {len(of_class)} images, cannot take {per_class}")
        chosen.append(of_class[:per_class])
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class TrainingSubset:
    """Which training images a run fits on (``training_subset``)."""
    indices: np.ndarray            # the training images, ascending, before repetition
    per_class: int | None          # images per class drawn; None: the whole split (keyed as such)
    repeats: int                   # ``indices`` repeated whole this many times per epoch
    val_indices: np.ndarray | None  # a stratified validation split held out of the subset, or None

    @property
    def epoch_indices(self) -> np.ndarray:
        return np.tile(self.indices, self.repeats)


def training_subset(labels: torch.Tensor | np.ndarray, per_class: int | None, subset_seed: int, *,
                    val_fraction: float | None = None, min_epoch_images: int = 0) -> TrainingSubset:
    """The one subset-and-repeat rule of every recipe: ``per_class`` images of each class (``stratified_subset``
    by ``subset_seed``, nested across sizes; None or as many as the split holds: every image), minus a
    stratified ``val_fraction`` held out by the same seed, repeated whole until an epoch holds at least
    ``min_epoch_images`` (a 15-epoch budget over 100 images would otherwise be 15 steps)."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    if per_class is not None and per_class * NUM_CLASSES < len(labels):
        idx = stratified_subset(labels, per_class, subset_seed)
    val = None
    if val_fraction:
        tr, va = train_val_split(labels[idx], val_fraction, subset_seed)
        idx, val = idx[tr], idx[va]
    whole = per_class is None or len(idx) == len(labels)
    return TrainingSubset(idx, None if whole else per_class, max(1, -(-min_epoch_images // max(len(idx), 1))), val)


def train_val_split(labels: torch.Tensor | np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split into (train indices, validation indices), both sorted."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in range(NUM_CLASSES):
        of_class = np.flatnonzero(labels == c)
        n_val = int(round(len(of_class) * val_fraction))
        val.append(rng.permutation(of_class)[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def load_profile_data(cfg: dict, data_dir=None, download: bool = False) -> tuple[CifarSplit, CifarSplit]:
    """(train, test) for a profile (``config.get_profile``): the full splits, or the profile's
    stratified subsets, drawn by the protocol's ``subset_seed`` (never a training seed, so every
    model of a profile sees the same images)."""
    train = load_cifar10("train", data_dir, download)
    test = load_cifar10("test", data_dir, download=False)
    if cfg.get("train_per_class"):
        train = train.subset(stratified_subset(train.labels, cfg["train_per_class"], cfg["subset_seed"]))
    if cfg.get("test_per_class"):
        test = test.subset(stratified_subset(test.labels, cfg["test_per_class"], cfg["subset_seed"]))
    return train, test


def split_key(split: CifarSplit) -> str:
    """Content hash of a split's images and labels (part of every run key that reads it); computed
    once per split object."""
    if "_key" not in split.__dict__:
        object.__setattr__(split, "_key", artifacts.hash_tensor(split.images) + artifacts.hash_tensor(split.labels))
    return split.__dict__["_key"]


def channel_stats(images: torch.Tensor, chunk: int = 10000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0-1 scale of a uint8 (N, 3, H, W) tensor (float64 sums)."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean**2).sqrt()
    return mean.tolist(), std.tolist()


def class_counts(splits: dict[str, CifarSplit]) -> "pd.DataFrame":
    """Images per class of each named split, long format (class, split, images)."""
    import pandas as pd

    rows = []
    for name, split in splits.items():
        counts = np.bincount(split.labels.numpy(), minlength=NUM_CLASSES)
        rows += [{"class": split.classes[c], "split": name, "images": int(n)} for c, n in enumerate(counts)]
    return pd.DataFrame(rows)
