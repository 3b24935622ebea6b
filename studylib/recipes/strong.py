"""A strong from-scratch CIFAR-10 recipe in the spirit of airbench94 (Keller Jordan 2024,
github.com/KellerJordan/cifar10-airbench), on the study's engine. NOT the reference's recipe: its
own network (``models/strong.py``), optimiser, schedule and augmentation, inside the study's
15-epoch budget (it uses 10). Hyper-parameters: ``config.RECIPES["strong"]``.

  * Nesterov SGD with a per-1024-examples learning rate, decoupled weight decay, a 64x learning rate
    on BatchNorm biases, label smoothing 0.2, a linear warm-up/warm-down schedule per step;
  * Lookahead-style weight averaging every 5 steps;
  * alternating flips + 2-pixel reflect translation;
  * test-time augmentation (flip + 1-pixel translations) as a *variant*: the run's test accuracy is
    without TTA (compared with models that have none), ``test_acc_tta`` beside it.

    python -m studylib.recipes.strong --profile full --device cuda --seeds 0 1 2
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config, data, models, runs, runtime
from ..data.augment import MixedBatch
from ..data.preprocess import Normalize
from ..models.strong import TTA, init_whitening
from . import engine

NAME = "strong_cnn"


def normalizer() -> Normalize:
    return Normalize(config.CIFAR10_MEAN, config.CIFAR10_STD)


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``pad`` and crop back at a random offset per image (on the batch's device)."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, x.shape[1], h, w)
    return out.gather(3, cols)


@torch.no_grad()
def tta_logits(model: nn.Module, images: torch.Tensor, *, device: torch.device, level: int, precision: str,
               batch_size: int = 2000) -> torch.Tensor:
    """float32 logits of a deployable model (uint8 in) with airbench's TTA at ``level`` (``models.strong.TTA``, the
    module the deployed row uses), the network under the recipe's autocast."""
    model.eval()
    tta = TTA(model, level, context=lambda: runtime.autocast(device, precision))
    return torch.cat([tta(images[start:start + batch_size].to(device)).cpu()
                      for start in range(0, len(images), batch_size)])


@torch.no_grad()
def ema_update(model: nn.Module, ema: dict, decay: float) -> None:
    """Lookahead (airbench): ema <- lerp(ema, weights, 1 - decay); weights <- ema (float tensors only)."""
    for (k, e), p in zip(ema.items(), model.state_dict().values()):
        if p.dtype.is_floating_point:
            e.lerp_(p, 1 - decay)
            p.copy_(e)


def job(profile: str = "full", *, seed: int | None = None, per_class: int | None = None, min_epoch_images: int = 0,
        data_dir=None, device: str = "auto", progress: bool | None = None) -> runs.Job:
    """The strong recipe, seed ``seed``; ``per_class``: on a stratified subset (drawn by the protocol's
    subset_seed) repeated until an epoch holds ``min_epoch_images`` (same steps as the full run)."""
    h = config.recipe("strong", profile, **({} if seed is None else {"seed": seed}))
    cfg = config.get_profile(profile)
    train, test = data.load_profile_data(cfg, data_dir)
    sub = data.training_subset(train.labels, per_class, cfg["subset_seed"], min_epoch_images=min_epoch_images)
    idx, per_class, reps = sub.indices, sub.per_class, sub.repeats
    key = {"model": NAME, "engine": runs.ENGINE_VERSION, "recipe": {k: v for k, v in h.items() if k != "label"},
           "data": {"train": data.split_key(train), "test": data.split_key(test)},
           "subset": {"per_class": per_class, "subset_seed": cfg["subset_seed"], "repeats": reps}}
    run = runs.Run("strong", NAME, key, profile)

    def fit(run: runs.Run) -> None:
        dev = runtime.resolve_device(device)
        fit_idx = torch.as_tensor(np.tile(idx, reps))
        x_all, y_all = train.images[fit_idx].to(dev), train.labels[fit_idx].to(dev)
        n = len(fit_idx)
        bs = min(h["batch_size"], n)
        steps = n // bs  # the last partial batch is dropped, as airbench
        total_steps = steps * h["epochs"]
        torch.manual_seed(h["seed"])
        norm = normalizer()
        model = models.Normalized(models.build_model(NAME, widths=tuple(h["widths"]), bn_momentum=h["bn_momentum"],
                                                     scaling_factor=h["scaling_factor"]), norm)
        net = model.net.to(dev).to(memory_format=torch.channels_last)
        init_whitening(net[0], norm(train.images[torch.as_tensor(idx[:h["whiten_images"]])].to(dev)), h["whiten_eps"])

        kilostep_scale = 1024 * (1 + 1 / (1 - h["momentum"]))
        lr = h["lr"] / kilostep_scale                       # per summed-loss example, for torch SGD
        wd = h["weight_decay"] * bs / kilostep_scale
        lr_biases = lr * h["bias_scaler"]
        norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
        other = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
        opt = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                               dict(params=other, lr=lr, weight_decay=wd / lr)], momentum=h["momentum"], nesterov=True)
        warm = int(total_steps * h["warmup_frac"])

        # airbench94's triangle (Jordan 2024: start 0.2, end 0.07 of the peak rate): up linearly from 0.2x to 1x over
        # the warm-up, then down linearly to 0.07x (= 1 - 0.93) at the last step
        def lr_factor(step: int) -> float:
            if step < warm:
                return 0.2 + 0.8 * step / warm
            return 1.0 - 0.93 * (step - warm) / max(total_steps - warm, 1)

        ema = {k: v.clone() for k, v in net.state_dict().items()}
        ema_decay = 0.95 ** h["ema_every"] * (torch.arange(total_steps + 1) / max(total_steps, 1)) ** 3
        loss_fn = nn.CrossEntropyLoss(label_smoothing=h["label_smoothing"], reduction="none")
        gen = torch.Generator().manual_seed(h["seed"])
        flip_mask = torch.rand(n, generator=gen) < 0.5  # alternating flips: epoch e flips mask XOR (e odd)

        def batches(epoch: int):
            order = torch.randperm(n, generator=gen)
            flips = (flip_mask ^ bool(epoch % 2)).to(dev)
            for s in range(steps):
                b = order[s * bs:(s + 1) * bs].to(dev)
                x = x_all[b]
                x = torch.where(flips[b][:, None, None, None], x.flip(-1), x)
                x = random_translate(norm(x), h["translate"], gen)
                yield MixedBatch(x, y_all[b], y_all[b], 1.0)

        def after_step(step: int) -> None:
            if step % h["ema_every"] == 0:
                ema_update(net, ema, float(ema_decay[step]))

        def before_epoch(epoch: int) -> None:
            net[0].bias.requires_grad_(epoch < h["whiten_bias_epochs"])

        plan = engine.Plan(
            epochs=h["epochs"], optimizer=opt, batches=batches, steps_per_epoch=steps,
            scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lr_factor), schedule_per="step",
            loss=lambda logits, batch: loss_fn(logits, batch.labels_a).sum(), loss_is_sum=True,
            before_epoch=before_epoch, after_step=after_step, finalize=lambda: ema_update(net, ema, 1.0),
            evaluate=lambda: tta_logits(model, test.images, device=dev, level=0, precision=h["precision"]),
            final_evaluate=lambda: tta_logits(model, test.images, device=dev, level=0, precision="fp32"),
            eval_every_epoch=False,
            state=lambda: {"ema": ema, "gen": gen.get_state(), "flip_mask": flip_mask},
            load_state=lambda st: (ema.update(st["ema"]), gen.set_state(st["gen"]), flip_mask.copy_(st["flip_mask"])),
            meta={"model": NAME, "recipe": "strong", "seed": h["seed"], "train_images": len(idx), "repeats": reps,
                  "strategy": "from scratch, strong recipe (not the reference's)"})

        def with_tta(plain: torch.Tensor) -> dict:
            tta = tta_logits(model, test.images, device=dev, level=h["tta_level"], precision="fp32")
            runs.save_predictions(run.folder / "predictions_tta.npz", **runs.predictions_from_logits(tta, test.labels))
            return {"test_acc_tta": (tta.argmax(1) == test.labels).float().mean().item(), "tta_level": h["tta_level"]}

        engine.fit(run, net, plan, test_labels=test.labels, train_n=n, device=device, precision=h["precision"],
                   channels_last=True, progress=progress, extra_metrics=with_tta)

    command = f"python -m studylib.recipes.strong --profile {profile} --seeds {h['seed']} --device auto" + (
        f" --per-class {per_class} --min-epoch-images {min_epoch_images}" if per_class else "")
    return runs.Job(run, fit, command)


def load(run: runs.Run) -> models.Normalized:
    """The deployable strong network (no TTA) of a finished run."""
    h = config.recipe("strong", run.profile, seed=run.metrics["seed"])
    model = models.Normalized(models.build_model(NAME, widths=tuple(h["widths"]), bn_momentum=h["bn_momentum"],
                                                 scaling_factor=h["scaling_factor"]), normalizer())
    model.net.load_state_dict(run.load())
    return model.eval()


def main(argv=None) -> None:
    """Train (or reuse) strong-recipe runs: ``--seeds 0 1 2 [--per-class 10 100]``."""
    ap = runs.command_parser(main.__doc__, argv)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, nargs="*", default=[], help="data-efficiency points (images per class)")
    ap.add_argument("--min-epoch-images", type=int, default=None, help="default: the grid's")
    ap.add_argument("--force", action="store_true")
    args = runs.parse_command(ap, argv)
    mei = args.min_epoch_images if args.min_epoch_images is not None else config.grid("strong", args.profile)[
        "min_epoch_images"]
    for seed in args.seeds:
        for pc in [None, *args.per_class]:
            run = job(args.profile, seed=seed, per_class=pc, min_epoch_images=mei if pc else 0,
                      device=args.device).ensure(force=args.force, train=True)
            m = run.metrics
            print(f"{NAME} seed {seed} ({m['train_images']:,} images x{m['repeats']}): {100 * m['test_acc']:.2f}% "
                  f"without TTA, {100 * m['test_acc_tta']:.2f}% with, {m['train_seconds']:.1f} s on "
                  f"{runtime.device_label(m)}", flush=True)


if __name__ == "__main__":
    main()
