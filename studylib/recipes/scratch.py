"""The scratch rows: the reference's Custom CNN and ViT-Small, trained with a scratch recipe of
``config.RECIPES`` ("study" or "reference_code") by the engine.

    run = job("custom_cnn", "reference_code", "full").ensure()    # reuse, train, or print the command
    python -m studylib.recipes.scratch custom_cnn vit_small --recipe reference_code --profile full
"""

from __future__ import annotations

import torch

from .. import config, data, models, runs, runtime
from ..data.augment import ScratchAugment
from ..data.preprocess import Normalize
from . import engine

MODELS = ("custom_cnn", "vit_small")
RECIPES = ("study", "reference_code")
# channels_last speeds the CNN's bf16 convolutions up on CPU ~1.4x but slows fp32 ones ~3x (measured on the
# 2-core CPU when the engine was written); the ViT has a single conv, so it stays contiguous.
CHANNELS_LAST = {"custom_cnn": True, "vit_small": False}


def use_channels_last(name: str, precision: str) -> bool:
    return CHANNELS_LAST[name] and precision == "bf16"


def normalizer(r: dict) -> Normalize:
    return Normalize(r["normalize"]["mean"], r["normalize"]["std"])


def architecture(name: str, r: dict) -> dict:
    """Keyword arguments of the registered builder that recipe ``r`` sets for model ``name``."""
    return dict(r[name])


def build(name: str, r: dict) -> models.Normalized:
    """Model ``name`` as recipe ``r`` builds it, behind its input normalisation (the deployable form)."""
    return models.Normalized(models.build_model(name, **architecture(name, r)), normalizer(r))


def run_key(name: str, r: dict, train: data.CifarSplit, test: data.CifarSplit, subset: dict | None = None) -> dict:
    """Everything that determines a scratch run's result (the device does not)."""
    other = [m for m in MODELS if m != name]
    recipe = {k: v for k, v in r.items() if k not in ("label", *other)}
    return {"model": name, "engine": runs.ENGINE_VERSION, "recipe": recipe,
            "data": {"train": data.split_key(train), "test": data.split_key(test)}, **({"subset": subset} if subset else {})}


def job(name: str, recipe: str = "study", profile: str = "full", *, seed: int | None = None, per_class: int | None = None,
        min_epoch_images: int = 0, epochs: int | None = None, data_dir=None, device: str = "auto",
        progress: bool | None = None) -> runs.Job:
    """Model ``name`` trained from scratch with ``recipe``. ``per_class``: on a stratified subset of the
    training images (drawn by the protocol's subset_seed, nested across sizes), repeated whole until an
    epoch holds ``min_epoch_images`` (data-efficiency points); ``epochs``: instead of the recipe's (its
    schedule over its own length; the data-efficiency curve's step budget)."""
    if name not in MODELS:
        raise KeyError(f"{name!r} is not a scratch model; choose one of {MODELS}")
    if recipe not in RECIPES:
        raise KeyError(f"{recipe!r} is not a scratch recipe; choose one of {RECIPES}")
    overrides = {k: v for k, v in (("seed", seed), ("epochs", epochs)) if v is not None}
    r = config.recipe(recipe, profile, **overrides)
    cfg = config.get_profile(profile)
    train, test = data.load_profile_data(cfg, data_dir)
    subset = None
    sub = data.training_subset(train.labels, per_class, cfg["subset_seed"], min_epoch_images=min_epoch_images)
    if sub.per_class is not None:
        subset = {"per_class": sub.per_class, "subset_seed": cfg["subset_seed"], "repeats": sub.repeats}
        train = train.subset(sub.epoch_indices)
    run = runs.Run("scratch", name, run_key(name, r, train, test, subset), profile)

    def fit(run: runs.Run) -> None:
        dev = runtime.resolve_device(device)
        channels_last = use_channels_last(name, r["precision"])
        torch.manual_seed(r["seed"])  # initialisation
        model = build(name, r)
        net, norm = model.net.to(dev), model.preprocess
        if channels_last:
            net.to(memory_format=torch.channels_last)
        aug = ScratchAugment(**r["augment"], normalize=norm)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=r["optimizer"]["lr"],
                               weight_decay=r["optimizer"]["weight_decay"])
        plan = engine.Plan(
            epochs=r["epochs"], optimizer=opt,
            scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r["epochs"]),
            batches=lambda epoch: engine.shuffled_batches(train.images, train.labels, seed=r["seed"], epoch=epoch,
                                                          batch_size=r["batch_size"], augment=aug,
                                                          drop_last=r["drop_last"]),
            steps_per_epoch=engine.steps_per_epoch(len(train), r["batch_size"], r["drop_last"]),
            evaluate=lambda: engine.batched_logits(net, test.images, prepare=norm, device=dev,
                                                   precision=r["precision"], channels_last=channels_last),
            # as deployed: fp32, contiguous weights (channels_last only speeds up bf16 training)
            final_evaluate=lambda: engine.batched_logits(net.to(memory_format=torch.contiguous_format), test.images,
                                                         prepare=norm, device=dev, precision="fp32"),
            meta={"model": name, "recipe": recipe, "recipe_label": r["label"], "seed": r["seed"],
                  "strategy": "from scratch", "train_images": len(train) // (subset or {"repeats": 1})["repeats"]})
        engine.fit(run, net, plan, test_labels=test.labels, train_n=len(train), device=device,
                   precision=r["precision"], channels_last=channels_last, progress=progress)

    command = (f"python -m studylib.recipes.scratch {name} --recipe {recipe} --profile {profile} --seed {r['seed']}"
               + (f" --per-class {per_class} --min-epoch-images {min_epoch_images}" if subset else "")
               + (f" --epochs {epochs}" if epochs is not None else "") + " --device auto")
    return runs.Job(run, fit, command)


def load(run: runs.Run) -> models.Normalized:
    """The deployable model of a finished scratch run (its recipe's architecture and normalisation)."""
    m = run.metrics
    r = config.recipe(m["recipe"], run.profile, seed=m["seed"])
    model = build(m["model"], r)
    model.net.load_state_dict(run.load())
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """Train (or reuse) scratch models outside the notebooks, e.g. on a GPU machine."""
    ap = runs.command_parser(main.__doc__, argv)
    ap.add_argument("models", nargs="+", choices=MODELS)
    ap.add_argument("--recipe", choices=RECIPES, default="study")
    ap.add_argument("--seed", type=int, nargs="*", default=[None], help="default: the recipe's seed")
    ap.add_argument("--per-class", type=int, nargs="*", default=[None], help="data-efficiency points (images per class)")
    ap.add_argument("--min-epoch-images", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--force", action="store_true")
    args = runs.parse_command(ap, argv)
    for name in args.models:
        for seed, per_class in [(s, p) for s in args.seed for p in args.per_class]:
            j = job(name, args.recipe, args.profile, seed=seed, per_class=per_class,
                    min_epoch_images=args.min_epoch_images, epochs=args.epochs, data_dir=args.data_dir,
                    device=args.device)
            reused = j.run.done and not args.force
            run = j.ensure(force=args.force, train=True)
            m = run.metrics
            print(f"{name} ({args.recipe}, seed {m['seed']}, {m['train_images']:,} images): test accuracy {100 * m['test_acc']:.2f}% after "
                  f"{m['epochs']} epochs, {m['train_seconds']:.0f} s on {runtime.device_label(m)} "
                  f"({'reused' if reused else 'trained'}) -> {config.display_path(run.source)}", flush=True)


if __name__ == "__main__":
    main()
