"""Linear probes by the field's protocol (Kornblith, Shlens & Le, CVPR 2019, section 3): the controlled grid's
frozen column, for both initialisations alike.

    job = probe_job("random", "full", seed=0)                  # one random backbone (seed), all training images
    job = probe_job("imagenet", "full", seed=0, per_class=100)   # 1,000 training images
    run = job.ensure()                                         # metrics: test_acc, train_acc, l2, l2_search, ...

Per run: fp32 features of the frozen backbone (train and test alike), standardised with the training images'
mean and standard deviation; multinomial logistic regression (a 1280 x 10 linear map) minimising mean
cross-entropy + l2 / 2 * |W|^2, fitted to convergence by full-batch L-BFGS (strong Wolfe line search); l2 chosen
on a stratified validation split held out of the run's training images by ``tuning.extend_until_interior``;
then refitted on all of the run's training images at the chosen l2. The run records training accuracy beside
test accuracy, the whole l2 search and whether each fit converged (gradient norm below the tolerance).

The Adam + Dropout heads of notebook 03 (``recipes/heads.py``) stay where they are labelled the reference's
style of head; this probe answers "how good are these features for a linear classifier" without a recipe of
its own to tune.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config, data, runs
from ..models import backbones
from . import features, heads, tuning

KIND = "lbfgs_probe"


def standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(train, *others) standardised with the training features' per-dimension mean and std (a constant
    dimension, std 0, is left centred: dividing by 1)."""
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (train, *others)), mean, std


def fit(x: torch.Tensor, y: torch.Tensor, l2: float, *, classes: int = 10, max_iter: int = 500,
        tolerance: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(W (d, classes), b (classes,), info) minimising mean CE(x W + b, y) + l2 / 2 |W|^2 by full-batch L-BFGS.
    info: iterations, final loss, gradient norm (max abs) and whether it fell below ``tolerance``."""
    # float64: in float32 the loss stops changing (relative 1e-7) before the gradient reaches the tolerance
    x, y = x.double(), y.long()
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    loss = closure()
    grad = max(w.grad.abs().max().item(), b.grad.abs().max().item())
    return w.detach().float(), b.detach().float(), {"iterations": int(opt.state[w]["n_iter"]), "loss": loss.item(),
                                    "grad_max": grad, "converged": grad <= tolerance}


def accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return float(((x.float() @ w + b).argmax(1) == y).float().mean())


def probe_features(init: str, profile: str, seed: int, *, data_dir=None, device: str = "auto",
                   precision: str | None = None, block: int | None = None) -> heads.Features:
    """The grid's backbone at the grid's size, ImageNet-initialised or random (seeded; BatchNorm statistics
    re-estimated on the profile's ``bn_recalibration_images`` training images), on the profile's data;
    ``block``: the pooled output of its first ``block`` feature blocks instead of the whole backbone."""
    g = config.grid("controlled", profile)
    model = None
    if init == "random":
        cfg = config.get_profile(profile)
        train, _ = data.load_profile_data(cfg, data_dir)
        n = min(g["bn_recalibration_images"], len(train))
        bn_idx = torch.as_tensor(np.sort(np.random.default_rng(cfg["subset_seed"]).permutation(len(train))[:n]))
        model = heads.random_init_backbone(g["backbone"], size=g["size"], seed=seed, bn_images=train.images[bn_idx],
                                           profile=profile)
    if block is not None:
        model = truncated(model or backbones.build_transfer(g["backbone"], size=g["size"]), block)
    return heads.features_of(g["backbone"], profile, size=g["size"], model=model, data_dir=data_dir, device=device,
                             progress=False, precision=precision)


def truncated(model: backbones.TransferNet, block: int) -> backbones.TransferNet:
    """``model`` cut after its first ``block`` feature blocks (MobileNetV2's ``features[:block]``), globally
    average-pooled: a frozen network of its own, named so its features are keyed apart from the whole
    backbone's. A random backbone's BatchNorm statistics are estimated first (on its first whole forward)."""
    with torch.no_grad():
        model.eval().features(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))  # runs random_init_backbone's estimate
    body = nn.Sequential(model.backbone.features[:block], nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        width = body(model.preprocess(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))).shape[1]
    return backbones.TransferNet(f"{model.name}@block{block}", model.preprocess, body, nn.Linear(width, 10),
                                 {**model.provenance, "block": block}, frozen=True)


def probe_job(init: str, profile: str, seed: int, *, per_class: int | None = None, data_dir=None,
              device: str = "auto", strategy: str = "frozen backbone + linear probe", block: int | None = None) -> runs.Job:
    """The grid's frozen cell ``init`` (a fresh random backbone per ``seed`` for random init; ImageNet features do
    not depend on the seed) on all training images or ``per_class`` per class; ``strategy`` labels it;
    ``block``: probing the pooled output of the first ``block`` feature blocks (``truncated``)."""
    r = config.recipe(KIND, profile)
    cfg = config.get_profile(profile)
    feats = probe_features(init, profile, seed, data_dir=data_dir, device=device, precision=r["features"], block=block)
    sub = data.training_subset(feats.train.labels, per_class, cfg["subset_seed"])
    idx, per_class = sub.indices, sub.per_class
    key = {"model": feats.name, "init": init, "size": feats.size, "weights_sha256": features.weights_id(feats.model),
           "recipe": {k: v for k, v in r.items() if k != "label"}, "seed": seed,
           "subset": {"per_class": per_class, "subset_seed": cfg["subset_seed"]}, "features": feats.key_hashes()}
    run = runs.Run(KIND, feats.name, key, profile)

    def compute(run: runs.Run) -> None:
        t0 = time.perf_counter()
        feats.load()
        y_all = feats.train.labels
        x_all = feats.train_feats.features[torch.as_tensor(idx)].float()
        y_train = y_all[torch.as_tensor(idx)]
        x_test, y_test = feats.test_feats.features.float(), feats.test.labels
        fit_i, val_i = data.train_val_split(y_train, r["val_fraction"], cfg["subset_seed"])
        (x_fit, x_val), _, _ = standardise(x_all[fit_i], x_all[val_i])
        fits = {}

        def measure(l2: float) -> dict:
            w, b, info = fit(x_fit, y_train[fit_i], l2, max_iter=r["max_iter"], tolerance=r["tolerance"])
            fits[l2] = info
            return {"val_acc": accuracy(x_val, y_train[val_i], w, b), "fit_acc": accuracy(x_fit, y_train[fit_i], w, b),
                    **info}

        search = tuning.extend_until_interior(r["l2_start"], measure, column="l2", max_extensions=r["max_extensions"])
        chosen = tuning.choice(search, "l2")
        (x_train, x_test_s), mean, std = standardise(x_all, x_test)
        w, b, info = fit(x_train, y_train, chosen["l2"], max_iter=r["max_iter"], tolerance=r["tolerance"])
        logits = x_test_s.float() @ w + b
        metrics = {"test_acc": accuracy(x_test_s, y_test, w, b), "test_n": len(y_test),
                   "train_acc": accuracy(x_train, y_train, w, b), "train_images": len(idx), "train_n": len(idx),
                   "l2": chosen["l2"], "l2_interior": chosen["interior"], "l2_edge": chosen["edge"],
                   "l2_search": search.to_dict("records"), "val_images": len(val_i), "fit": info,
                   "model": feats.name, "init": init, "seed": seed, "size": feats.size, "recipe": KIND,
                   "strategy": strategy, "weights": feats.model.provenance,
                   "features": {"train": feats.train_feats.summary(), "test": feats.test_feats.summary()},
                   "epochs": 0, "steps": info["iterations"], "train_seconds": time.perf_counter() - t0,
                   "device": "cpu", "precision": r["features"]}
        run.finish(metrics, predictions=runs.predictions_from_logits(logits, y_test),
                   files={runs.WEIGHTS_FILE: {"weight": w.T.contiguous(), "bias": b, "mean": mean, "std": std}})

    command = f"python -m studylib.recipes.finetune --profile {profile} --only probe --inits {init} --seeds {seed}"
    if block is not None:
        command += f" --block {block}"
    elif per_class is not None:
        command = (f"python -m studylib.recipes.finetune --profile {profile} --only efficiency --inits {init} "
                   f"--seeds {seed} --per-class {per_class}")
    return runs.Job(run, compute, command, needs=feats.cache_jobs(command))


def load_head(run: runs.Run) -> torch.nn.Module:
    """The probe as one Linear layer on raw (unstandardised) features: W' = W / std, b' = b - (mean / std) W."""
    s = run.load()
    head = torch.nn.Linear(s["weight"].shape[1], s["weight"].shape[0])
    with torch.no_grad():
        head.weight.copy_(s["weight"] / s["std"])
        head.bias.copy_(s["bias"] - (s["weight"] / s["std"]) @ s["mean"])
    return head

