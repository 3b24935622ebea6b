"""The controlled answer: one network at one input size, ImageNet initialisation vs random
initialisation, frozen (linear probe) vs trained end to end — the design of Kornblith, Shlens & Le,
"Do Better ImageNet Models Transfer Better?" (CVPR 2019).

    | init \\ training | frozen backbone + linear probe     | trained end to end          |
    | ImageNet         | L-BFGS probe ("lbfgs_probe")       | fine-tune ("finetune")      |
    | random           | random-features probe              | trained from scratch        |

Within a column both rows share the recipe (end to end: optimiser, schedule, 15 epochs, batch, augmentation,
precision; frozen: the probe protocol, ``recipes/linear_probe.py``). Both rows are tuned by the same rule
(``tuning``): the end-to-end learning rate by ``lr_search`` on the cell's own training images, the probe's L2
strength inside each probe run, each scored on a validation split held out of the training images (never the
test set) from a log grid extended until the choice is interior. What still differs between the rows of a
column (the initialisation, the rate each search chose, BatchNorm statistics in the frozen column: ImageNet's,
or re-estimated on training images by ``heads.random_init_backbone``) is listed by ``config_differences`` and
named in the bottom line. Grid values: ``config.EXPERIMENTS["controlled"]``.

    python -m studylib.recipes.finetune --profile full            # the whole grid, in order
"""

from __future__ import annotations

import pandas as pd
import torch

from .. import config, data, runs, runtime
from ..data import augment
from ..models import backbones
from . import engine, fastpath, linear_probe, tuning

INITS = ("imagenet", "random")
CELLS = (("probe", "imagenet"), ("probe", "random"), ("finetune", "imagenet"), ("finetune", "random"))
CELL_LABELS = {("probe", "imagenet"): "ImageNet init, frozen + linear probe",
               ("probe", "random"): "random init, frozen + linear probe",
               ("finetune", "imagenet"): "ImageNet init, fine-tuned end to end",
               ("finetune", "random"): "random init, trained end to end (from scratch)"}


def cell_config(training: str, init: str, profile: str = "full", *, lr: float | None = None) -> dict:
    """Everything that defines a grid cell: the column's recipe (with ``lr``, the rate that ran, for an
    end-to-end cell), the network, size, BatchNorm handling and the procedure that picks the rate. What
    differs between the two cells of a column is ``config_differences``, and the bottom line names it."""
    if (training, init) not in CELLS:
        raise KeyError(f"unknown cell {(training, init)}; cells: {CELLS}")
    g = config.grid("controlled", profile)
    out = {"training": training, "init": init, "backbone": g["backbone"], "size": g["size"]}
    if training == "probe":
        out["recipe"] = config.recipe("lbfgs_probe", profile)
        out["batchnorm"] = ("eval, ImageNet's statistics" if init == "imagenet" else
                            f"eval, statistics re-estimated on {g['bn_recalibration_images']:,} training images")
    else:
        out["recipe"] = config.recipe("finetune", profile, **({} if lr is None else {"optimizer": {"lr": float(lr)}}))
        out["batchnorm"] = "train (batch statistics; running statistics and affine parameters updated)"
        out["lr_selection"] = {"start_grid": g["lr_candidates"], "max_extensions": g["lr_max_extensions"],
                               **g["lr_search"]}
    return out


def config_differences(a: dict, b: dict) -> dict[str, tuple]:
    """{flattened key: (value in a, value in b)} for every setting where two cell configs differ."""
    fa, fb = config.flatten(a), config.flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def describe_differences(diffs: dict[str, tuple]) -> list[str]:
    """Each difference of ``config_differences`` (ImageNet cell first, random second) in words."""
    words = {"init": lambda a, b: f"the initialisation ({a} vs {b})",
             "recipe.optimizer.lr": lambda a, b: f"the learning rate ({a:.0e} vs {b:.0e}, each chosen by the same "
                                                 "validation search)",
             "batchnorm": lambda a, b: f"BatchNorm ({a} vs {b})"}
    return [words.get(k, lambda a, b: f"{k} ({a} vs {b})")(a, b) for k, (a, b) in diffs.items()]


# ---------------------------------------------------------------------------------------
# End-to-end training (the fine-tuning column)
# ---------------------------------------------------------------------------------------
def job(init: str, profile: str = "full", *, seed: int | None = None, lr: float | None = None,
        per_class: int | None = None, val_fraction: float | None = None, epochs: int | None = None,
        epoch_images: int | None = None, size: int | None = None, backbone: str | None = None,
        precision: str | None = None, batch_size: int | None = None, data_dir=None, device: str = "auto",
        progress: bool | None = None) -> runs.Job:
    """``backbone`` (default: the grid's) at ``size`` px, initialised from ImageNet or at random, trained end
    to end with the "finetune" recipe at learning rate ``lr``.

    ``per_class``: a stratified training subset (drawn by subset_seed); ``val_fraction``: evaluate on a
    validation split held out of it instead of the test set (learning-rate search); ``epoch_images``: the
    subset's training images repeated whole until an epoch holds at least that many (equal steps per size);
    ``precision``, ``batch_size``: another step than the recipe's (keyed; the equivalence check of
    benchmarks/check_finetune_equivalence.py trains the grid's first runs' step this way)."""
    if init not in INITS:
        raise KeyError(f"init must be one of {INITS}, got {init!r}")
    g = config.grid("controlled", profile)
    backbone, size = backbone or g["backbone"], size or g["size"]
    overrides = {k: v for k, v in {"seed": seed, "epochs": epochs, "precision": precision,
                                   "batch_size": batch_size}.items() if v is not None}
    if lr is not None:
        overrides["optimizer"] = {"lr": float(lr)}
    r = config.recipe("finetune", profile, **overrides)
    cfg = config.get_profile(profile)
    train, test = data.load_profile_data(cfg, data_dir)
    sub = data.training_subset(train.labels, per_class, cfg["subset_seed"], val_fraction=val_fraction,
                               min_epoch_images=epoch_images or 0)
    idx, val_idx, per_class = sub.epoch_indices, sub.val_indices, sub.per_class
    subset = {"per_class": per_class, "val_fraction": val_fraction, "subset_seed": cfg["subset_seed"]}
    if sub.repeats > 1:
        subset["repeats"] = sub.repeats  # keyed only where it repeats
    fit_split = train.subset(idx)
    eval_split = train.subset(val_idx) if val_idx is not None else test
    weights_key = None
    if init == "imagenet":
        weights_key = backbones.build_transfer(backbone, size=size).provenance["sha256"]
    key = {"model": backbone, "engine": runs.ENGINE_VERSION, "init": init, "size": size, "weights_sha256": weights_key,
           "recipe": {k: v for k, v in r.items() if k != "label"},
           "subset": subset, "data": {"train": data.split_key(fit_split), "eval": data.split_key(eval_split)}}
    run = runs.Run("finetune", backbone, key, profile)
    eval_name = "val" if val_idx is not None else "test"

    def fit(run: runs.Run) -> None:
        dev = runtime.resolve_device(device)
        torch.manual_seed(r["seed"])  # random backbone (random init) and head initialisation
        model = backbones.build_transfer(backbone, init=init, size=size, frozen=False).to(dev)
        path = fastpath.accelerate(model)  # speed only (benchmarks/bench_finetune.py): not in the key
        crop_flip = augment.CropFlip(r["augment"]["crop_padding"], r["augment"]["hflip_p"])
        opt = torch.optim.Adam(model.parameters(), lr=r["optimizer"]["lr"], weight_decay=r["optimizer"]["weight_decay"])
        meta = {"model": backbone, "recipe": "finetune", "init": init, "seed": r["seed"], "size": size,
                "lr": r["optimizer"]["lr"], "train_images": len(fit_split) // subset.get("repeats", 1),
                "epoch_images": len(fit_split), "weights": model.provenance,
                "strategy": CELL_LABELS[("finetune", init)]}
        plan = engine.Plan(
            epochs=r["epochs"], optimizer=opt,
            scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r["epochs"]),
            batches=lambda epoch: engine.shuffled_batches(fit_split.images, fit_split.labels, seed=r["seed"],
                                                          epoch=epoch, batch_size=r["batch_size"], augment=crop_flip,
                                                          drop_last=r["drop_last"]),
            steps_per_epoch=engine.steps_per_epoch(len(fit_split), r["batch_size"], r["drop_last"]),
            evaluate=lambda: engine.batched_logits(model, eval_split.images, device=dev, precision=r["precision"]),
            final_evaluate=lambda: engine.batched_logits(model, eval_split.images, device=dev, precision="fp32"),
            # per-epoch test accuracy only where evaluating costs less than the epoch's training
            eval_every_epoch=len(fit_split) >= len(eval_split),
            # the engine path as it ran (a compile that failed on the first step fell back to eager)
            finalize=lambda: meta.update(engine_path=path.describe()), meta=meta)
        engine.fit(run, model, plan, test_labels=eval_split.labels, train_n=len(fit_split), device=device,
                   precision=r["precision"], progress=progress, eval_name=eval_name)

    budget = epochs if epochs is not None and val_idx is None and per_class is None \
        and epochs != config.recipe("finetune", profile)["epochs"] else None
    return runs.Job(run, fit, _command(profile, init, r["seed"], per_class=per_class, lr_search=val_idx is not None,
                                       epochs=budget))


def _command(profile: str, init: str, seed: int, *, per_class: int | None = None, lr_search: bool = False,
             training: str = "finetune", epochs: int | None = None) -> str:
    """The command that trains one run of the grid: a grid cell, a learning-rate search run (the row's whole
    search), a data-efficiency point (``per_class``) or a training-budget point (``epochs``)."""
    base = f"python -m studylib.recipes.finetune --profile {profile}"
    if lr_search:
        return f"{base} --only lr --inits {init}" + (f" --per-class {per_class}" if per_class is not None else "")
    if epochs is not None:
        return f"{base} --only budget --inits {init} --seeds {seed} --epochs {epochs}"
    if per_class is not None:
        return f"{base} --only efficiency --inits {init} --seeds {seed} --per-class {per_class}"
    return f"{base} --only {training} --inits {init} --seeds {seed}"


def load(run: runs.Run) -> backbones.TransferNet:
    """The deployable network of a finished end-to-end run (ImageNet- or random-initialised)."""
    m = run.metrics
    model = backbones.build_transfer(m["model"], init=None, size=m["size"], frozen=False)
    model.load_state_dict(run.load())
    model.provenance = m["weights"]
    return model.eval().use_channels_last()  # as its recorded test pass ran


def lr_search(init: str, profile: str = "full", *, per_class: int | None = None, data_dir=None, device: str = "auto",
              train: bool = True) -> pd.DataFrame:
    """Validation accuracy of each learning rate tried for the end-to-end row ``init`` on ``per_class`` images per
    class (None: the whole training set), the cell's own training-set size: short runs (``lr_search``'s epochs;
    a data-efficiency size: the equal-step schedule its points train, ``efficiency_epochs`` x
    ``efficiency_epoch_images``) on that set minus a stratified validation split held out of it (never the test set). The grid starts at
    ``lr_candidates`` and grows by ``tuning.extend_until_interior``'s rule (at most ``lr_max_extensions``
    values added). ``train=False``: only the finished runs (the search as far as it has run)."""
    g = config.grid("controlled", profile)
    s = g["lr_search"]
    schedule = ({"epochs": s["epochs"]} if per_class is None else  # a small size: the schedule its points train
                {"epochs": g["efficiency_epochs"], "epoch_images": g["efficiency_epoch_images"]})

    def measure(lr: float) -> dict | None:
        j = job(init, profile, seed=s["seed"], lr=lr, per_class=per_class, val_fraction=s["val_fraction"],
                **schedule, data_dir=data_dir, device=device, progress=False)
        run = j.ensure() if train else j.run
        if not run.done:
            return None
        m = run.metrics
        return {"init": init, "val_acc": m["val_acc"], "train_acc": float(run.history().iloc[-1]["train_acc"]),
                "val_n": m["val_n"], "train_n": m["train_n"], "epochs": m["epochs"], "steps": m["steps"],
                "train_seconds": m["train_seconds"], "device": m["device"], "run": run.id}

    t = tuning.extend_until_interior(g["lr_candidates"], measure, column="lr", max_extensions=g["lr_max_extensions"])
    return t.reindex(columns=LR_COLUMNS)  # reindex keeps attrs["complete"]


LR_COLUMNS = ["init", "lr", "val_acc", "train_acc", "val_n", "train_n", "epochs", "steps", "train_seconds", "device",
              "run"]


def lr_choice(search: pd.DataFrame) -> dict:
    """The chosen rate of a search and whether it is interior (``tuning.choice``)."""
    return tuning.choice(search, "lr")


def choose_lr(search: pd.DataFrame) -> float | None:
    """The chosen learning rate of a finished search (``lr_choice``); None while the search has not finished by
    its rule (``tuning.complete``): runs at a provisional best would be trained at a rate the search may yet move."""
    return lr_choice(search)["lr"] if tuning.complete(search) else None


# ---------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------
def probe_job(init: str, profile: str, seed: int, *, per_class: int | None = None, data_dir=None,
              device: str = "auto") -> runs.Job:
    """A probe cell: the L-BFGS linear probe (``linear_probe``) on frozen fp32 features (random init: a fresh
    random backbone per seed); ``per_class``: on a stratified training subset (the data-efficiency pair)."""
    return linear_probe.probe_job(init, profile, seed, per_class=per_class, data_dir=data_dir, device=device,
                                  strategy=CELL_LABELS[("probe", init)])


def block_probe_jobs(profile: str = "full", *, data_dir=None, device: str = "auto") -> dict:
    """{init: [Job per seed]}: the frozen cells' probe on the pooled output of an earlier block (``probe_block``),
    for both inits alike: how much the random-features baseline depends on the network's depth."""
    g = config.grid("controlled", profile)
    return {init: [linear_probe.probe_job(init, profile, s, data_dir=data_dir, device=device, block=g["probe_block"],
                                          strategy=f"{CELL_LABELS[('probe', init)]}, block {g['probe_block']}")
                   for s in probe_seeds(init, g["probe_seeds"])] for init in INITS}


def probe_seeds(init: str, seeds) -> tuple:
    """The seeds a probe cell runs: each a fresh random backbone for random init; ImageNet features and a
    convex fit do not depend on the seed, so its cell runs once (its seeds would be copies)."""
    return tuple(seeds) if init == "random" else tuple(seeds)[:1]


def probe_cells(profile: str = "full", *, data_dir=None, device: str = "auto") -> dict:
    """{init: [Job per seed]}: the grid's frozen cells (``probe_seeds``) on every training image."""
    seeds = config.grid("controlled", profile)["probe_seeds"]
    return {init: [probe_job(init, profile, s, data_dir=data_dir, device=device) for s in probe_seeds(init, seeds)]
            for init in INITS}


def cell_jobs(profile: str = "full", *, data_dir=None, device: str = "auto", train: bool = True) -> dict:
    """Every run of the grid, by cell: {(training, init): [Job per seed]}; the end-to-end cells' learning
    rates come from ``lr_search`` (searched now when ``train``; cells without a chosen rate are absent)."""
    g = config.grid("controlled", profile)
    out = {("probe", init): cell for init, cell in probe_cells(profile, data_dir=data_dir, device=device).items()}
    for init in INITS:
        lr = choose_lr(lr_search(init, profile, data_dir=data_dir, device=device, train=train))
        out[("finetune", init)] = [] if lr is None else [
            job(init, profile, seed=s, lr=lr, data_dir=data_dir, device=device) for s in g["seeds"]]
    return out


def efficiency_jobs(profile: str = "full", *, data_dir=None, device: str = "auto", train: bool = True) -> dict:
    """Both columns' pairs (ImageNet vs random init) on stratified subsets (notebook 09), by cell:
    {(training, init, images per class): [Job per seed]}. Every end-to-end point trains the same number of
    optimiser steps, whatever its size (``efficiency_epochs`` epochs of ``efficiency_epoch_images`` images, its
    subset repeated; the full-data point at those steps is the matching training-budget point), at the learning
    rate searched on that size with that schedule (``lr_search(per_class=)``; a size whose search has not
    finished is absent); step counts are recorded."""
    g = config.grid("controlled", profile)
    out = {}
    for init in INITS:
        for pc in g["efficiency_per_class"]:
            out[("probe", init, pc)] = [probe_job(init, profile, s, per_class=pc, data_dir=data_dir, device=device)
                                        for s in probe_seeds(init, g["efficiency_seeds"])]
        for pc in g["efficiency_per_class"]:
            lr = choose_lr(lr_search(init, profile, per_class=pc, data_dir=data_dir, device=device, train=train))
            if lr is not None:
                out[("finetune", init, pc)] = [job(init, profile, seed=s, lr=lr, per_class=pc,
                                                   epochs=g["efficiency_epochs"],
                                                   epoch_images=g["efficiency_epoch_images"], data_dir=data_dir,
                                                   device=device) for s in g["efficiency_seeds"]]
    return out


def efficiency_full_jobs(profile: str = "full", *, data_dir=None, device: str = "auto", train: bool = True) -> dict:
    """The pairs' points on every training image, keyed like ``efficiency_jobs`` (images per class of the
    protocol's training set): the grid's probe cells (frozen) and the training-budget runs of ``efficiency_epochs``
    epochs (end to end: the subsets' optimiser steps, at the full-data search's rate). Runs of other sections,
    joined to notebook 09's curves; an init whose search has not finished has no end-to-end point."""
    g = config.grid("controlled", profile)
    per_class = config.get_profile(profile)["train_per_class"] or data.FULL_PER_CLASS["train"]
    budget = budget_jobs(profile, data_dir=data_dir, device=device, train=train)
    out = {("probe", init, per_class): cell for init, cell in probe_cells(profile, data_dir=data_dir,
                                                                          device=device).items()}
    out.update({("finetune", init, per_class): budget[(init, g["efficiency_epochs"])] for init in INITS
                if (init, g["efficiency_epochs"]) in budget})
    return out


def budget_jobs(profile: str = "full", *, data_dir=None, device: str = "auto", train: bool = True) -> dict:
    """The end-to-end column against the training budget: {(init, epochs): [Job per seed]} at ``budget_epochs``,
    each run its own full schedule, at the rate its init's full-data search chose (an init whose search has not
    finished is absent). The recipe's own epoch count gives the grid's cells themselves."""
    g = config.grid("controlled", profile)
    out = {}
    for init in INITS:
        lr = choose_lr(lr_search(init, profile, data_dir=data_dir, device=device, train=train))
        if lr is None:
            continue
        for epochs, n in zip(g["budget_epochs"], g["budget_seed_counts"], strict=True):
            out[(init, epochs)] = [job(init, profile, seed=s, lr=lr, epochs=epochs, data_dir=data_dir, device=device)
                                   for s in range(n)]
    return out


TABLE_COLUMNS = ["training", "init", "cell", "model", "seed", "test_acc", "train_acc", "test_n", "train_images", "size",
                 "lr", "l2", "epochs", "steps", "train_seconds", "compute_seconds", "device", "run", "source"]


def train_accuracy(run: runs.Run) -> float:
    """A finished cell's training accuracy: a probe's on all its training images (recorded); an end-to-end
    run's over its last epoch (the running accuracy on the augmented batches as they trained)."""
    m = run.metrics
    return float(m["train_acc"]) if "train_acc" in m else float(run.history().iloc[-1]["train_acc"])


def table(jobs: dict) -> pd.DataFrame:
    """One row per finished cell x seed: test and training accuracy, compute seconds, device, learning rate
    (end to end) or L2 strength (probes), steps (the same columns when nothing has finished, so readers can
    select them)."""
    rows = []
    for cell_key, cell in jobs.items():
        training, init = cell_key[:2]
        for j in cell:
            if not j.run.done:
                continue
            m = j.run.metrics
            rows.append({"training": training, "init": init, "cell": CELL_LABELS[(training, init)], "model": m["model"],
                         "seed": m["seed"], "test_acc": m["test_acc"], "train_acc": train_accuracy(j.run),
                         "test_n": m["test_n"], "train_images": m.get("train_images"), "size": m["size"],
                         "lr": m.get("lr"), "l2": m.get("l2"),
                         "epochs": m["epochs"], "steps": m["steps"], "train_seconds": m["train_seconds"],
                         # compute of the cell: training, plus extracting the features a probe trains on
                         "compute_seconds": m["train_seconds"] + sum(f.get("seconds", 0)
                                                                     for f in m.get("features", {}).values()),
                         "device": runtime.device_label(m), "run": j.run.id, "source": "shipped" if j.run.shipped else "store"})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def main(argv=None) -> None:
    """Train (or reuse) the controlled grid: probes, learning-rate search, end-to-end cells, data efficiency."""
    ap = runs.command_parser(main.__doc__, argv)
    ap.add_argument("--only", nargs="*", choices=("probe", "lr", "finetune", "efficiency", "budget"),
                    default=("probe", "lr", "finetune", "efficiency", "budget"))
    ap.add_argument("--inits", nargs="*", choices=INITS, default=list(INITS))
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="default: the grid's")
    ap.add_argument("--per-class", type=int, nargs="*", default=None,
                    help="data efficiency: only these labelled images per class (default: the grid's)")
    ap.add_argument("--block", type=int, default=None,
                    help="with --only probe: the earlier-block probes (must be the grid's probe_block)")
    ap.add_argument("--epochs", type=int, nargs="*", default=None,
                    help="training budget: only these epoch counts (default: the grid's budget_epochs)")
    args = runs.parse_command(ap, argv)
    g = config.grid("controlled", args.profile)
    if args.block is not None and args.block != g["probe_block"]:
        ap.error(f"--block {args.block}: the grid probes block {g['probe_block']} (config probe_block)")
    kw = dict(device=args.device)
    if "probe" in args.only and args.block:  # --block N: the earlier-block probes (config probe_block)
        for init, cell in block_probe_jobs(args.profile, **kw).items():
            for j in cell if init in args.inits else ():
                if args.seeds is None or j.run.key["seed"] in args.seeds:
                    m = j.ensure(train=True).metrics
                    print(f"probe {init} seed {m['seed']}, block {args.block}: {100 * m['test_acc']:.2f}%", flush=True)
    elif "probe" in args.only:
        for init in args.inits:
            for seed in args.seeds if args.seeds is not None else probe_seeds(init, g["probe_seeds"]):
                run = probe_job(init, args.profile, seed, **kw).ensure(train=True)
                print(f"probe {init} seed {seed}: {100 * run.metrics['test_acc']:.2f}%", flush=True)
    lrs = {}
    sizes = args.per_class if "lr" in args.only and args.per_class else [None]
    if {"lr", "finetune"} & set(args.only):
        for init in args.inits:
            for pc in sizes:  # --only lr --per-class N: the search of that data-efficiency size
                search = lr_search(init, args.profile, per_class=pc, **kw)
                lrs[init] = choose_lr(search)
                print(search.to_string(index=False), f"\nchosen lr for {init} ({lr_choice(search)}), "
                      f"{'all' if pc is None else pc * 10} training images", flush=True)
    if "finetune" in args.only:
        for seed in args.seeds if args.seeds is not None else g["seeds"]:
            for init in args.inits:
                run = job(init, args.profile, seed=seed, lr=lrs[init], **kw).ensure(train=True)
                print(f"end to end {init} seed {seed}: {100 * run.metrics['test_acc']:.2f}% "
                      f"({run.metrics['train_seconds'] / 60:.1f} min)", flush=True)
    if "budget" in args.only:  # longest last: each budget point is a run of its own (resumable)
        for (init, epochs), cell in sorted(budget_jobs(args.profile, **kw).items(), key=lambda kv: kv[0][1]):
            if init not in args.inits or (args.epochs is not None and epochs not in args.epochs):
                continue
            for j in cell:
                if args.seeds is None or j.run.key["recipe"]["seed"] in args.seeds:
                    m = j.ensure(train=True).metrics
                    print(f"budget {epochs} epochs, {init} seed {m['seed']}: {100 * m['test_acc']:.2f}% "
                          f"({m['train_seconds'] / 60:.1f} min)", flush=True)
    if "efficiency" in args.only:
        for (training, init, pc), cell in efficiency_jobs(args.profile, **kw).items():
            if init not in args.inits or (args.per_class is not None and pc not in args.per_class):
                continue
            for j in cell:
                if args.seeds is None or j.run.key.get("recipe", {}).get("seed") in args.seeds:
                    m = j.ensure(train=True).metrics
                    print(f"{training} {init} seed {m['seed']}, {pc * 10:,} images: {100 * m['test_acc']:.2f}%",
                          flush=True)


if __name__ == "__main__":
    main()
