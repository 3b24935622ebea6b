"""How long retraining takes on this machine, estimated before it starts (``run_all.py --retrain``).

Each kind of work is timed for a few optimiser steps (or forward batches) with the engine's own
training step on this machine, then multiplied by the number of images each notebook's runs process
(from the configuration's recipes and grids). Evaluation passes are counted as a third of a training
step per image. A GPU changes the picture: the scratch, strong and fine-tuning stages are compute-bound
and take minutes on one (an H200 trained the Custom CNN's 15 epochs in about a minute).
"""

from __future__ import annotations


import pandas as pd
import torch

from . import config, models, runtime, timing
from .data.augment import MixedBatch
from .models import backbones
from .recipes import engine, fastpath

EVAL_COST = 1 / 3  # a forward pass costs about a third of a training step per image


def _time_steps(model: torch.nn.Module, size: int, batch: int, steps: int, precision: str = "bf16",
                channels_last: bool = True) -> float:
    """Training images/s of ``model`` (float inputs of ``size`` px) with the engine's epoch loop."""
    dev = runtime.resolve_device("auto")
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    plan = engine.Plan(epochs=1, optimizer=opt, batches=lambda e: (MixedBatch(x, y, y, 1.0) for _ in range(steps)),
                       evaluate=lambda: torch.empty(0), steps_per_epoch=steps)
    engine.train_one_epoch(model, engine.Plan(1, opt, lambda e: iter([MixedBatch(x, y, y, 1.0)]),
                                              lambda: torch.empty(0), 1), 0, device=dev, precision=precision,
                           channels_last=channels_last)  # warm-up (oneDNN primitive caches)
    return timing.rate(lambda: engine.train_one_epoch(model, plan, 0, device=dev, precision=precision,
                                                      channels_last=channels_last), steps * batch, warmup=0)


@torch.inference_mode()
def _time_forward(model: torch.nn.Module, size: int, batch: int, precision: str) -> float:
    dev = runtime.resolve_device("auto")
    model.eval().to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with runtime.autocast(dev, precision):
        return timing.rate(lambda: model(x), batch, warmup=1)


def rates(quick: bool = False) -> dict[str, float]:
    """Images/s of each kind of work on this machine (a few steps each; ``quick``: fewer)."""
    steps = 1 if quick else 3
    mnv2 = backbones.build_transfer("mobilenet_v2_float", init=None, frozen=False)
    return {
        "custom_cnn": _time_steps(models.build_model("custom_cnn"), 32, 128, steps),
        "vit_small": _time_steps(models.build_model("vit_small"), 32, 128, steps, channels_last=False),
        "strong": _time_steps(models.build_model("strong_cnn"), 32, 256, steps),
        # the fine-tuning recipe's step: its precision, on the fast path (contiguous, activations out of place)
        "finetune": _time_steps(fastpath.accelerate(mnv2).model.backbone, config.grid("controlled")["size"],
                                config.recipe("finetune")["batch_size"], steps,
                                precision=config.recipe("finetune")["precision"], channels_last=False),
        "extract224": _time_forward(mnv2.backbone, 224, 32, "bf16"),
        "extract224_fp32": _time_forward(mnv2.backbone, 224, 32, "fp32"),
        # a linear head on 1,323 inputs (3 x 21 x 21), as on a backbone's 1,280 pooled features
        "head": _time_steps(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 21 * 21, 10)), 21, 128,
                            steps, channels_last=False),
    }


# What each trained kind's work runs at: the rate of rates() it is timed by.
RUN_RATES = {"strong": "strong", "finetune": "finetune", "head": "head", "controlled_probe": "head",
             "calibration": "head"}


def run_seconds(run, r: dict[str, float]) -> float | None:
    """Estimated seconds of one unfinished run (``runs.Run``) on this machine from ``rates()``: training
    images per epoch x epochs, plus an evaluation pass per epoch, over the rate of its kind of work; a
    feature cache is one forward pass over its split, scaled by the input area. None for other kinds."""
    cfg = config.get_profile(run.profile)
    n_train, n_test = 10 * (cfg["train_per_class"] or 5000), 10 * (cfg["test_per_class"] or 1000)
    key = run.key
    if run.kind == "features":
        n = n_test if run.name.endswith("-test") else n_train
        rate = r["extract224_fp32" if key.get("precision") == "fp32" else "extract224"]
        return n * (key.get("size", 224) / 224) ** 2 / rate
    if run.kind == "lbfgs_probe":  # ~8 full-batch L-BFGS fits of ~200 iterations, each a forward and backward
        # float64 matmul of the training features (1,280 wide, 10 classes) at ~20 GFLOP/s: assumed, not timed here
        subset = key.get("subset") or {}
        n = 10 * subset["per_class"] if subset.get("per_class") else n_train
        return 8 * 200 * n * 1280 * 10 * 4 / 20e9
    rate = r.get(key.get("model")) if run.kind == "scratch" else r.get(RUN_RATES.get(run.kind, ""))
    if not rate:
        return None
    subset = key.get("subset") or {}
    n = 10 * subset["per_class"] if subset.get("per_class") else n_train
    n = int(n * (1 - (subset.get("val_fraction") or 0))) * subset.get("repeats", 1)
    n = max(n, subset.get("min_epoch_images") or 0)
    return key["recipe"]["epochs"] * (n + EVAL_COST * n_test) / rate


def work(profile: str) -> list[dict]:
    """Per notebook that trains: which kind of work and how many images it processes (training images per
    epoch x epochs, plus evaluation passes) over its runs."""
    cfg = config.get_profile(profile)
    n_train = 10 * (cfg["train_per_class"] or 5000)
    n_test = 10 * (cfg["test_per_class"] or 1000)
    r = config.recipe("study", profile)
    per_scratch = 2 * (r["epochs"] * n_train + EVAL_COST * r["epochs"] * n_test)  # two recipes
    s = config.recipe("strong", profile)
    g, de = config.grid("controlled", profile), config.grid("data_efficiency", profile)
    ft = config.recipe("finetune", profile)
    ls = g["lr_search"]
    grid_imgs = (len(g["seeds"]) * 2 * ft["epochs"] * (n_train + EVAL_COST * n_test)
                 # each init's search: the starting grid plus one extension, on the training set less validation
                 + 2 * (len(g["lr_candidates"]) + 1) * ls["epochs"] * n_train * (1 - ls["val_fraction"])
                 # each data-efficiency size: its search and its points, at equal steps (efficiency_epoch_images)
                 + (len(g["efficiency_seeds"]) + len(g["lr_candidates"]) + 1) * 2 * sum(
                     g["efficiency_epochs"] * (max(10 * pc, g["efficiency_epoch_images"]) + EVAL_COST * n_test)
                     for pc in g["efficiency_per_class"])
                 # the training-budget points of both inits (the recipe's own epochs are the cells above)
                 + 2 * sum(n * e * (n_train + EVAL_COST * n_test)
                           for e, n in zip(g["budget_epochs"], g["budget_seed_counts"]) if e != ft["epochs"]))
    points = sum(max(10 * pc, de["min_epoch_images"]) for pc in de["train_per_class"]) * len(de["scratch_seeds"])
    res = config.grid("resolution", profile)
    res_imgs = sum((s_ / 224) ** 2 * (10 * (res["train_per_class"] or 5000) + n_test)
                   for s_ in res["sizes"]) * len(res["backbones"])
    return [
        {"notebook": "02", "work": "Custom CNN, 2 recipes", "kind": "custom_cnn", "images": per_scratch},
        {"notebook": "03", "work": "224-px features, 3 backbones (train, mirrored train, fp32 test)",
         "kind": "extract224", "images": 3 * (2 * n_train + 2 * n_test)},
        {"notebook": "04", "work": "ViT, 2 recipes", "kind": "vit_small", "images": per_scratch},
        {"notebook": "08", "work": f"strong recipe, {len(config.grid('strong', profile)['seeds'])} seeds",
         "kind": "strong", "images": len(config.grid("strong", profile)["seeds"]) * s["epochs"] * n_train},
        {"notebook": "09", "work": "Custom CNN data-efficiency points", "kind": "custom_cnn",
         "images": points * r["epochs"]},
        {"notebook": "10", "work": "probe features at every size", "kind": "extract224", "images": res_imgs},
        {"notebook": "12", "work": f"controlled grid at {g['size']} px (fine-tuning cells, searches, small-data pairs, "
                                   "budget points)",
         "kind": "finetune", "images": grid_imgs},
    ]


def stages(profile: str, notebooks: list[str], retrain: list[str] | None) -> pd.DataFrame:
    """Estimated minutes per retrained notebook on this machine (measured rates x the configured work)."""
    selected = [w for w in work(profile) if any(nb.startswith(w["notebook"]) for nb in notebooks)
                and (not retrain or any(w["notebook"].startswith(n) for n in retrain))]
    r = rates(quick=not config.comparable(profile))  # a smoke profile's estimate needs no precise rates
    rows = [{**w, "images/s here": r[w["kind"]], "minutes here": w["images"] / r[w["kind"]] / 60} for w in selected]
    return pd.DataFrame(rows)


def format_table(t: pd.DataFrame) -> str:
    env = runtime.environment()
    head = f"Estimated retraining time on this machine ({env['cpu']}, {env['threads']} threads; a few timed steps each):"
    if t.empty:
        return head + " nothing selected trains."
    lines = [head] + [f"  {r.notebook}  {r.work:<70} {r['minutes here']:7.1f} min  ({r['images/s here']:.0f} images/s)"
                      for _, r in t.iterrows()]
    lines.append(f"  total {t['minutes here'].sum():.0f} min. On a CUDA GPU (--device is auto) the scratch, strong and "
                 "fine-tuning stages take minutes; feature extraction scales with the GPU too.")
    return "\n".join(lines)
