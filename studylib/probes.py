"""Linear probes beyond the reference protocol: seeds, data efficiency, calibration, resolution.

Every probe is a fresh linear head of the study (``transfer.make_head``) trained by
``transfer.fit_head`` (the protocol's Adam + cosine, 15 epochs, batch 128) on cached frozen-backbone
features (``studylib.features``), so a head costs seconds on the CPU. A probe run is one folder in
``<artifacts>/<profile>/probes/<name>-<hash>/`` keyed by the features, the subset, the seed and
the code version; finished runs are reused.

    pdata = load_features("mobilenet_v2", "full")            # cached features, extracted if absent
    run = train_probe(pdata, "full", seed=0, per_class=100)  # 1,000 stratified training images
    run["metrics"]["test_acc"], run["test_logits"]
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import artifacts, calibration, config, data, evaluate, experiments, features, train, transfer

# Bump when a change here alters a probe result (part of every probe's key).
PROBES_VERSION = 1


@dataclass
class ProbeData:
    name: str
    size: int                      # backbone input resolution (pixels)
    train: data.CifarSplit
    test: data.CifarSplit
    train_feats: features.Cached
    test_feats: features.Cached
    model: transfer.TransferNet    # backbone with an untrained head (deployment uses the 03 runs)

    def extraction(self) -> dict:
        """Feature-extraction cost measured when the cache was written (seconds summed over shards)."""
        seconds = self.train_feats.seconds + self.test_feats.seconds
        n = len(self.train) + len(self.test)
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds if seconds else float("nan"),
                "environment": _cache_environment(self.train_feats)}


def _cache_environment(cached: features.Cached) -> dict:
    try:
        return torch.load(cached.path / "features.pt", map_location="cpu", weights_only=False).get("environment", {})
    except Exception:
        return {}


def with_input_size(model: transfer.TransferNet, size: int) -> transfer.TransferNet:
    """``model`` with its upscale target changed to ``size`` pixels (the normalisation unchanged).

    The feature cache key holds the size, so features at each resolution are cached separately."""
    if size < 32:
        raise ValueError(f"input size must be at least the CIFAR-10 image size (32), got {size}")
    pre = model.preprocess
    mean, std = pre.mean.flatten().tolist(), pre.std.flatten().tolist()
    model.preprocess = transfer.Preprocess(size, mean, std, pre.mode, pre.antialias)
    return model


def load_features(name: str, profile: str, *, size: int | None = None, train_per_class: int | None = None,
                  data_dir=None, device: str = "auto", progress: bool | None = None) -> ProbeData:
    """Profile data plus frozen-backbone features of ``name`` at ``size`` pixels (default: the
    protocol's input size), read from the cache or extracted (and cached) now.

    ``train_per_class``: only a stratified subset of the training split (chosen by the protocol
    seed); its features are sliced from a complete cache of the whole split when one exists, else
    extracted for the subset alone. The test split is always the profile's whole test split.
    """
    cfg = config.get_profile(profile)
    model = transfer.build_transfer(name)
    if size is not None:
        with_input_size(model, size)
    train_split, test_split = data.load_profile_data(cfg, data_dir or None)
    kw = dict(precision=cfg["feature_precision"], device=device, progress=progress)
    if train_per_class is None:
        train_feats = features.cached_features(model, train_split, profile, **kw)
    else:
        idx = torch.as_tensor(data.stratified_subset(train_split.labels, train_per_class, cfg["seed"]))
        if _cache_complete(model, train_split, profile, cfg["feature_precision"]):
            whole = features.cached_features(model, train_split, profile, **kw)
            train_feats = dataclasses.replace(whole, features=whole.features[idx], labels=whole.labels[idx],
                                              key_hash=f"{whole.key_hash}-sub{train_per_class}",
                                              seconds=whole.seconds * len(idx) / len(train_split))
            train_split = train_split.subset(idx)
        else:
            train_split = train_split.subset(idx)
            train_feats = features.cached_features(model, train_split, profile, **kw)
    test_feats = features.cached_features(model, test_split, profile, **kw)
    return ProbeData(name, model.preprocess.size, train_split, test_split, train_feats, test_feats, model)


def time_extraction(pdata: ProbeData, n_images: int = 512, device: str = "auto") -> float:
    """images/s of the frozen backbone at ``pdata.size`` on the first ``n_images`` test images (bf16,
    the cache's batch size), timed now: sizes timed one after another in one process compare fairly
    on a shared machine, unlike cache timings written at different times."""
    images = pdata.test.images[:n_images]
    features.extract(pdata.model, images[:features.BATCH], device=device, progress=False)  # warm-up
    t0 = time.perf_counter()
    features.extract(pdata.model, images, device=device, progress=False)
    return len(images) / (time.perf_counter() - t0)


def _cache_complete(model, split, profile: str, precision: str) -> bool:
    key = features.feature_key(model, split.images, split.labels, precision)
    folder = artifacts.artifact_dir(profile, "features", f"{model.name}-{split.split}", key)
    return (folder / "features.pt").exists()


def repeat_to(indices: np.ndarray, min_images: int) -> np.ndarray:
    """``indices`` repeated whole so that an epoch holds at least ``min_images`` (unchanged when larger)."""
    reps = max(1, math.ceil(min_images / max(len(indices), 1)))
    return np.tile(indices, reps)


def probe_key(pdata: ProbeData, cfg: dict, *, per_class, val_fraction, min_epoch_images: int) -> dict:
    keys = ("seed", "epochs", "batch_size", "optimizer", "schedule")
    return {"model": pdata.name, "size": pdata.size, "probes": PROBES_VERSION, "transfer": transfer.TRANSFER_VERSION,
            "engine": train.ENGINE_VERSION, **{k: cfg[k] for k in keys}, "per_class": per_class,
            "val_fraction": val_fraction, "min_epoch_images": min_epoch_images,
            "train_features": pdata.train_feats.key_hash, "test_features": pdata.test_feats.key_hash}


def train_probe(pdata: ProbeData, profile: str, *, seed: int, per_class: int | None = None,
                val_fraction: float | None = None, min_epoch_images: int = 0, device: str = "auto",
                progress: bool | None = None) -> dict:
    """Train (or reuse) one linear head on the features of ``pdata``.

    ``per_class``: a stratified subset of that many training images per class, chosen by ``seed``
    (nested across sizes). ``val_fraction``: hold out a stratified validation split of the
    (subset of the) training set; its logits are saved for temperature scaling. ``seed`` also sets
    the head initialisation and batch order. Returns metrics, test logits and, with a validation
    split, validation logits and labels.
    """
    cfg = config.get_profile(profile, seed=seed)
    y = pdata.train.labels
    idx = np.arange(len(y))
    if per_class is not None:
        idx = data.stratified_subset(y, per_class, seed)
    val_idx = None
    if val_fraction:
        tr, va = data.train_val_split(y[idx], val_fraction, seed)
        idx, val_idx = idx[tr], idx[va]
    if per_class is not None and len(idx) == len(y):
        per_class = None  # the whole training split: the same run as the protocol's, keyed once
    if len(idx) >= min_epoch_images:
        min_epoch_images = 0  # no repetition: keyed as such so equal runs are shared across experiments
    fit_idx = torch.as_tensor(repeat_to(idx, min_epoch_images))
    key = probe_key(pdata, cfg, per_class=per_class, val_fraction=val_fraction, min_epoch_images=min_epoch_images)
    out_dir = artifacts.artifact_dir(profile, "probes", pdata.name, key)
    feats = pdata.train_feats.features
    meta = {"model": pdata.name, "profile": profile, "key": key, "strategy": "frozen backbone + linear head (probe)",
            "train_images": len(idx), "repeats": len(fit_idx) // max(len(idx), 1), "size": pdata.size,
            "val_images": 0 if val_idx is None else len(val_idx)}
    # One thread while a head trains: a 128x1280 @ 1280x10 step is too small to split, and on the
    # shared 2-core machine two threads made each epoch ~10x slower (1.5 s vs 15 s measured).
    with evaluate.num_threads(1):
        res = transfer.fit_head(pdata.name, cfg, feats[fit_idx], y[fit_idx], pdata.test_feats.features,
                                pdata.test.labels, out_dir, device=device, meta=meta, progress=progress)
    out = {"metrics": res.metrics, "out_dir": out_dir, "reused": res.reused,
           "test_logits": torch.load(out_dir / "test_logits.pt", map_location="cpu"), "test_labels": pdata.test.labels}
    if val_idx is not None:
        vpath = out_dir / "val_logits.pt"
        if vpath.exists():
            out["val_logits"] = torch.load(vpath, map_location="cpu")
        else:
            out["val_logits"] = train.predict_logits(res.model, feats[torch.as_tensor(val_idx)], transfer._as_float,
                                                     train.resolve_device(device), transfer.HEAD_PRECISION)
            artifacts.torch_save(vpath, out["val_logits"])
        out["val_labels"] = y[torch.as_tensor(val_idx)]
    return out


# ---------------------------------------------------------------------------------------
# Experiments: tidy tables of many probes
# ---------------------------------------------------------------------------------------
def _available(names, profile, data_dir, device, progress, size=None):
    """ProbeData per backbone with weights; backbones without genuine weights are skipped (listed)."""
    from . import weights

    got, skipped = {}, {}
    for name in names:
        try:
            got[name] = load_features(name, profile, size=size, data_dir=data_dir, device=device, progress=progress)
        except weights.WeightsUnavailable as exc:
            skipped[name] = f"not run: no pretrained weights ({exc})"
    return got, skipped


def seeds_table(profile: str, names=None, *, data_dir=None, device: str = "auto", progress=None) -> pd.DataFrame:
    """Protocol linear probes (all training images) over the experiment's seeds: one row per head."""
    names = names or experiments.PROBES
    g = experiments.grid("seeds", profile)
    pds, _ = _available(names, profile, data_dir, device, progress)
    rows = []
    for name, pdata in pds.items():
        for seed in tqdm(g["seeds"], desc=f"{name} seeds", leave=False, disable=not _bar(progress)):
            m = train_probe(pdata, profile, seed=seed, device=device, progress=False)["metrics"]
            rows.append({"model": name, "seed": seed, "test_acc": m["test_acc"], "train_images": m["train_images"],
                         "test_n": m["test_n"], "train_seconds": m["train_seconds"], "device": m["device"]})
    return pd.DataFrame(rows)


def data_efficiency_table(profile: str, names=None, *, data_dir=None, device: str = "auto", progress=None) -> pd.DataFrame:
    """Linear-probe test accuracy per (backbone, images per class, seed) on the experiment's grid."""
    names = names or experiments.PROBES
    g = experiments.grid("data_efficiency", profile)
    pds, _ = _available(names, profile, data_dir, device, progress)
    rows = []
    for name, pdata in pds.items():
        points = [(pc, s) for pc in g["train_per_class"] for s in g["seeds"]]
        for per_class, seed in tqdm(points, desc=f"{name} data efficiency", leave=False, disable=not _bar(progress)):
            m = train_probe(pdata, profile, seed=seed, per_class=per_class, min_epoch_images=g["min_epoch_images"],
                            device=device, progress=False)["metrics"]
            rows.append({"model": name, "per_class": per_class, "train_images": m["train_images"], "seed": seed,
                         "test_acc": m["test_acc"], "steps": m["epochs"] * math.ceil(m["train_n"] / m["key"]["batch_size"]),
                         "device": m["device"]})
    return pd.DataFrame(rows)


def calibration_runs(profile: str, names=None, *, data_dir=None, device: str = "auto", progress=None) -> list[dict]:
    """Per backbone and seed: a head trained without the validation split, T fitted on that split,
    test ECE / NLL before and after (calibration.before_after), plus the logits for the plots."""
    names = names or experiments.PROBES
    g = experiments.grid("calibration", profile)
    pds, _ = _available(names, profile, data_dir, device, progress)
    out = []
    for name, pdata in pds.items():
        for seed in tqdm(g["seeds"], desc=f"{name} calibration", leave=False, disable=not _bar(progress)):
            run = train_probe(pdata, profile, seed=seed, val_fraction=g["val_fraction"], device=device, progress=False)
            res = calibration.before_after(run["val_logits"], run["val_labels"], run["test_logits"],
                                           run["test_labels"], g["n_bins"])
            out.append({"model": name, "seed": seed, **res, "run": run})
    return out


def _bar(progress) -> bool:
    return sys.stderr.isatty() if progress is None else bool(progress)


def main(argv=None) -> None:
    """``python -m studylib.probes --profile full``: train (or reuse) every probe of notebooks 08 and 11."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", nargs="*", choices=("seeds", "data_efficiency", "calibration"),
                    default=("seeds", "data_efficiency", "calibration"))
    args = ap.parse_args(argv)
    if "seeds" in args.only:
        print(seeds_table(args.profile, device=args.device).groupby("model").test_acc.agg(["mean", "std", "count"]))
    if "data_efficiency" in args.only:
        t = data_efficiency_table(args.profile, device=args.device)
        print(t.groupby(["model", "train_images"]).test_acc.agg(["mean", "std", "count"]))
    if "calibration" in args.only:
        rows = pd.DataFrame([{k: v for k, v in r.items() if k != "run"} for r in calibration_runs(args.profile, device=args.device)])
        print(rows.groupby("model")[["temperature", "ece_before", "ece_after", "nll_before", "nll_after"]].mean())


if __name__ == "__main__":
    main()
