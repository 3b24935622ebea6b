"""Heads on frozen-backbone features: the study's transfer rows (notebook 03), the reference-code
flip variant, and every linear probe of the experiments (seeds, data efficiency, calibration,
resolution, the controlled grid's probe column).

    feats = features_of("mobilenet_v2", "full")                # which features (extracted when a head trains)
    run = head_job(feats, "head", "full").ensure()             # the study row: all training images, seed 42
    run = head_job(feats, "head", "full", seed=3, per_class=100).ensure()   # a data-efficiency probe
    model = load(run)                                          # the deployable TransferNet (backbone + head)

The backbone is frozen and in eval mode, so it maps an image to the same features every epoch:
features are computed once (``studylib.recipes.features``) and a head trains on them in seconds: the
same computation as running the images through the backbone each epoch
(tests/test_backbones_heads.py::test_head_on_cached_features_equals_images_through_frozen_backbone).
Training features are extracted under bf16 autocast, test features in fp32 (the deployed model's
precision), so a run's recorded test accuracy is what the deployed model computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import artifacts, config, data, runs, runtime
from ..data import augment
from ..measure import calibration
from ..models import backbones
from . import engine, features

# One thread while a head trains: a 128x1280 @ 1280x10 step is too small to split, and on the shared
# 2-core machine two threads made each epoch ~10x slower (1.5 s vs 15 s measured).
HEAD_THREADS = 1


@dataclass
class Features:
    """A backbone's features of the profile's data: which caches (keys known without extracting) and,
    once ``load()`` is called, the cached tensors (extracted first where absent)."""
    model: backbones.TransferNet     # backbone (+ an untrained head) at its input size
    train: data.CifarSplit
    test: data.CifarSplit
    profile: str
    flips: bool = False              # also the horizontally mirrored training images
    device: str = "auto"
    progress: bool | None = None
    train_feats: features.Cached | None = None
    test_feats: features.Cached | None = None
    flip_feats: features.Cached | None = None
    subset: torch.Tensor | None = None   # train on these training images only (their features sliced from the split's)
    subset_name: str = ""
    precision: str | None = None         # both splits' extraction precision (None: the profile's feature_precision)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def size(self) -> int:
        return self.model.preprocess.size

    def _splits(self) -> dict[str, tuple[data.CifarSplit, str]]:
        prec = config.get_profile(self.profile)["feature_precision"]
        if self.precision is not None:
            prec = {"train": self.precision, "test": self.precision}
        out = {"train": (self.train, prec["train"]), "test": (self.test, prec["test"])}
        if self.flips:
            out["flip"] = (mirrored(self.train), prec["train"])
        return out

    def key_hashes(self) -> dict[str, str]:
        """Content keys of the caches (cheap: no extraction); a subset is named after its split's cache."""
        out = {part: artifacts.hash_obj(features.feature_run(self.model, split, self.profile, prec).key)
               for part, (split, prec) in self._splits().items()}
        if self.subset is not None:
            out["train"] += f"-{self.subset_name}"
        return out

    def cache_jobs(self, command: str) -> tuple[runs.Job, ...]:
        """The feature caches a head on these features reads, as jobs (extracting one is its ``fit``), so a plan
        can compute them before the heads; a subset's training features are sliced or extracted uncached."""
        splits = self._splits()
        if self.subset is not None:
            splits.pop("train")

        def job(split: data.CifarSplit, prec: str) -> runs.Job:
            fit = lambda run: features.cached_features(self.model, split, self.profile, precision=prec,  # noqa: E731
                                                       device=self.device, progress=self.progress)
            return runs.Job(features.feature_run(self.model, split, self.profile, prec), fit, command)

        return tuple(job(split, prec) for split, prec in splits.values())

    def load(self) -> "Features":
        """Read the caches, extracting what is missing (the expensive step). With a subset: sliced from
        the whole split's cache when it exists, else only the subset's images are extracted (uncached)."""
        if self.test_feats is not None:
            return self
        splits = self._splits()
        if self.subset is not None:
            split, prec = splits.pop("train")
            if features.is_cached(self.model, split, self.profile, prec):
                whole = features.cached_features(self.model, split, self.profile, precision=prec, device=self.device)
                feats = whole.features[self.subset]
            else:
                feats = features.extract(self.model, split.images[self.subset], precision=prec, device=self.device)
            self.train_feats = features.Cached(feats, split.labels[self.subset], {}, "", Path(), 0.0, False)
        got = {part: features.cached_features(self.model, split, self.profile, precision=prec, device=self.device,
                                              progress=self.progress) for part, (split, prec) in splits.items()}
        self.train_feats = got.get("train", self.train_feats)
        self.test_feats, self.flip_feats = got["test"], got.get("flip")
        return self

    @property
    def train_labels(self) -> torch.Tensor:
        return self.train.labels if self.subset is None else self.train.labels[self.subset]

    def extraction(self) -> dict:
        """Feature-extraction cost measured when the caches were written (seconds summed over shards)."""
        parts = [p for p in (self.load().train_feats, self.test_feats, self.flip_feats) if p is not None]
        seconds, n = sum(p.seconds for p in parts), sum(len(p.features) for p in parts)
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds if seconds else float("nan")}


def mirrored(split: data.CifarSplit) -> data.CifarSplit:
    return data.CifarSplit(split.images.flip(-1).contiguous(), split.labels, split.classes, f"{split.split}_flip")


def features_of(name: str, profile: str = "full", *, size: int | None = None,
                model: backbones.TransferNet | None = None, flips: bool = False, train_per_class: int | None = None,
                data_dir=None, device: str = "auto", progress: bool | None = None, weights_dir=None,
                precision: str | None = None) -> Features:
    """Backbone ``name`` (ImageNet weights; or ``model``, e.g. a random-init backbone) at ``size`` px on
    the profile's training and test images. Nothing is extracted until ``.load()``.

    ``train_per_class``: only a stratified subset of the training split (drawn by the protocol's
    subset_seed); sliced from a complete cache of the whole split when one exists."""
    cfg = config.get_profile(profile)
    model = model or backbones.build_transfer(name, size=size, weights_dir=weights_dir)
    train, test = data.load_profile_data(cfg, data_dir)
    feats = Features(model, train, test, profile, flips, device, progress, precision=precision)
    if train_per_class is not None:
        feats.subset = torch.as_tensor(data.stratified_subset(train.labels, train_per_class, cfg["subset_seed"]))
        feats.subset_name = f"sub{train_per_class}"
    return feats


def random_init_backbone(name: str, *, size: int, seed: int, bn_images: torch.Tensor, batch_size: int = 250,
                         profile: str | None = None) -> backbones.TransferNet:
    """Backbone ``name`` with its architecture's random initialisation (``seed``) and BatchNorm
    statistics re-estimated on ``bn_images`` (uint8 training images; an untrained network has no
    statistics of its own, and with the initial mean 0 / variance 1 its activations vanish or explode
    with depth). No labels are used. Its provenance records both.

    Its identity (``features.weights_id``) is this recipe: architecture, size, seed, the images' hash,
    batch size and torch version, not the bits it produces, which another CPU may round differently. So
    keying its features and probes needs no forward pass: the statistics are estimated on the
    backbone's first forward pass (10-30 s on 2 CPU cores), or read back from the artifact store
    (kind ``random_backbone``) when ``profile`` is given and an earlier run kept them there."""
    key = {"backbone": name, "size": size, "seed": seed, "bn_images": artifacts.hash_tensor(bn_images),
           "batch_size": batch_size, "torch": torch.__version__}
    run = runs.Run("random_backbone", name, key, profile, marker="backbone.pt") if profile is not None else None
    torch.manual_seed(seed)
    model = backbones.build_transfer(name, init="random", size=size)
    model.provenance = {**model.provenance, "seed": seed, "recipe": artifacts.hash_obj(key),
                        "bn_statistics": f"re-estimated on {len(bn_images):,} training images (no labels)"}
    if run is not None and run.done:
        model.backbone.load_state_dict(torch.load(run.path("backbone.pt"), map_location="cpu", weights_only=True))
        return model

    def estimate(backbone: nn.Module, _args) -> None:
        if getattr(backbone, "bn_estimated", False):  # once (a flag on the module: copies carry it too)
            return
        backbone.bn_estimated = True
        dev = next(backbone.parameters()).device
        bns = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over every batch below
        backbone.train()
        # fp32 whatever the caller's autocast (features are extracted under bf16)
        with torch.no_grad(), torch.autocast(dev.type, enabled=False):
            for start in range(0, len(bn_images), batch_size):
                backbone(model.preprocess(bn_images[start:start + batch_size].to(dev)))
        backbone.eval()
        if run is not None:
            run.write_marker({k: v.cpu() for k, v in backbone.state_dict().items()})

    model.backbone.register_forward_pre_hook(estimate)
    return model


# ---------------------------------------------------------------------------------------
# One head
# ---------------------------------------------------------------------------------------
def head_key(feats: Features, r: dict, *, per_class, val_fraction, min_epoch_images: int, subset_seed: int) -> dict:
    hashes = feats.key_hashes()
    return {"model": feats.name, "engine": runs.ENGINE_VERSION, "size": feats.size,
            "weights_sha256": features.weights_id(feats.model),
            "recipe": {k: v for k, v in r.items() if k != "label"},
            "subset": {"per_class": per_class, "val_fraction": val_fraction, "min_epoch_images": min_epoch_images,
                       "subset_seed": subset_seed},
            "features": {part: hashes[part] for part in (("train", "test", "flip") if r["hflip"] else ("train", "test"))}}


def head_job(feats: Features, recipe: str = "head", profile: str = "full", *, seed: int | None = None,
             per_class: int | None = None, val_fraction: float | None = None, min_epoch_images: int = 0,
             device: str = "auto", progress: bool | None = None, kind: str = "head") -> runs.Job:
    """A fresh head of ``feats.name`` trained on its features with head recipe ``recipe``.

    ``per_class``: a stratified training subset (nested across sizes); ``val_fraction``: a stratified
    validation split held out of it (its logits are kept for temperature scaling); ``min_epoch_images``:
    small subsets repeated so an epoch has at least this many images."""
    r = config.recipe(recipe, profile, **({} if seed is None else {"seed": seed}))
    if r["hflip"] and not feats.flips:
        raise ValueError(f"recipe {recipe!r} trains on mirrored views: use features_of(..., flips=True)")
    subset_seed = config.get_profile(profile)["subset_seed"]
    y = feats.train_labels
    sub = data.training_subset(y, per_class, subset_seed, val_fraction=val_fraction, min_epoch_images=min_epoch_images)
    idx, val_idx = sub.indices, sub.val_indices
    per_class = sub.per_class  # None for the whole training split: the same run as the row's, keyed once
    if len(idx) >= min_epoch_images:
        min_epoch_images = 0  # no repetition: keyed as such so equal runs are shared across experiments
    fit_idx = torch.as_tensor(sub.epoch_indices)
    key = head_key(feats, r, per_class=per_class, val_fraction=val_fraction, min_epoch_images=min_epoch_images,
                   subset_seed=subset_seed)
    run = runs.Run(kind, feats.name, key, profile)

    def fit(run: runs.Run) -> None:
        feats.load()
        dev = runtime.resolve_device(device)
        torch.manual_seed(r["seed"])  # head initialisation
        head = backbones.make_head(feats.name).to(dev)
        train_x = feats.train_feats.features
        flip_x = feats.flip_feats.features if r["hflip"] else None

        def view(i: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> augment.MixedBatch:
            x = train_x[i] if flip_x is None else torch.where((torch.rand(len(i), generator=gen) < 0.5)[:, None],
                                                              flip_x[i], train_x[i])
            return augment.MixedBatch(x.float(), yb, yb, 1.0)

        opt = torch.optim.Adam(head.parameters(), lr=r["optimizer"]["lr"], weight_decay=r["optimizer"]["weight_decay"])
        plan = engine.Plan(
            epochs=r["epochs"], optimizer=opt,
            scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r["epochs"]),
            batches=lambda epoch: engine.shuffled_batches(fit_idx, y[fit_idx], seed=r["seed"], epoch=epoch,
                                                          batch_size=r["batch_size"], augment=view,
                                                          drop_last=r["drop_last"]),
            steps_per_epoch=engine.steps_per_epoch(len(fit_idx), r["batch_size"], r["drop_last"]),
            evaluate=lambda: engine.batched_logits(head, feats.test_feats.features.float(), device=dev,
                                                   precision=r["precision"]),
            meta={"model": feats.name, "recipe": recipe, "seed": r["seed"], "size": feats.size,
                  "strategy": "frozen backbone + linear head", "weights": feats.model.provenance,
                  "train_images": len(idx), "repeats": len(fit_idx) // max(len(idx), 1),
                  "val_images": 0 if val_idx is None else len(val_idx),
                  "features": {"train": feats.train_feats.summary(), "test": feats.test_feats.summary()}})

        def extra(test_logits: torch.Tensor) -> dict:
            out = {"params_total": sum(p.numel() for p in feats.model.backbone.parameters())
                   + sum(p.numel() for p in head.parameters()),
                   "params_trainable": sum(p.numel() for p in head.parameters())}
            if val_idx is not None:  # temperature fitted on the held-out validation split, never the test set
                val_logits = engine.batched_logits(head, train_x[torch.as_tensor(val_idx)].float(), device=dev,
                                                   precision=r["precision"])
                out["calibration"] = calibration.report(val_logits, y[torch.as_tensor(val_idx)], test_logits,
                                                        feats.test.labels)
            return out

        with runtime.num_threads(HEAD_THREADS):
            engine.fit(run, head, plan, test_labels=feats.test.labels, train_n=len(fit_idx), device=device,
                       precision=r["precision"], progress=progress, extra_metrics=extra)

    command = f"python -m studylib.recipes.experiments --profile {profile}"  # the CLI that ensures every head
    return runs.Job(run, fit, command, needs=feats.cache_jobs(command))


def load(run: runs.Run, model: backbones.TransferNet | None = None, weights_dir=None) -> backbones.TransferNet:
    """The deployable model of a finished head run: the backbone with the very weights the run used
    (checked by sha256) and the trained head."""
    m = run.metrics
    model = model or backbones.build_transfer(m["model"], size=m["size"], weights_dir=weights_dir)
    used = m["weights"]["sha256"]
    if model.provenance["sha256"] != used:
        raise RuntimeError(f"{m['model']}: run {run.id} used weights sha256 {used[:12]}, but the file found now "
                           f"({model.provenance['file']}) has {model.provenance['sha256'][:12]}; retrain its head "
                           "(python run_all.py --retrain 03).")
    model.head.load_state_dict(run.load())
    return model.eval().use_channels_last()  # as its features were extracted


# ---------------------------------------------------------------------------------------
# The study's transfer rows and the probe experiments
# ---------------------------------------------------------------------------------------
def row_job(name: str, profile: str = "full", recipe: str = "head", *, data_dir=None, device: str = "auto",
            progress: bool | None = None, weights_dir=None) -> runs.Job:
    """The study row of backbone ``name`` (all training images, the recipe's seed); raises
    ``weights.WeightsUnavailable`` when there are no genuine ImageNet weights."""
    feats = features_of(name, profile, flips=config.RECIPES[recipe]["hflip"], data_dir=data_dir, device=device,
                        progress=progress, weights_dir=weights_dir)
    return head_job(feats, recipe, profile, device=device, progress=progress)


def available_features(name: str, profile: str, **kw) -> Features | None:
    """``features_of(name, profile, **kw)``, or None for a backbone without genuine ImageNet weights, after
    printing that its rows are not run and the command that gets the weights: a notebook reports such a
    row, it never fails on it."""
    from .. import weights

    try:
        return features_of(name, profile, **kw)
    except weights.WeightsUnavailable as exc:
        print(f"{name}: not run: {exc}")
        return None


def resolution_jobs(profile: str = "full", *, data_dir=None, device: str = "auto") -> dict:
    """Notebook 10's probes (grid ``resolution``): {(backbone, size): (Features, [(seed, Job)])}, each job
    naming the command that computes it; a backbone without genuine ImageNet weights is left out (printed)."""
    g = config.grid("resolution", profile)
    out = {}
    for name in g["backbones"]:
        for size in g["sizes"]:
            feats = available_features(name, profile, size=size, train_per_class=g["train_per_class"],
                                       data_dir=data_dir, device=device, progress=False)
            if feats is None:
                break
            jobs = []
            for seed in g["seeds"]:
                job = head_job(feats, "head", profile, seed=seed, device=device, progress=False)
                job.command = f"python -m studylib.recipes.experiments --profile {profile} --only resolution"
                jobs.append((seed, job))
            out[(name, size)] = (feats, jobs)
    return out
