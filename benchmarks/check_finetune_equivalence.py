"""The 3-epoch equivalence check of the fine-tuning step: does today's step learn what the grid's first step learned?

Today's recipe trains fp32 at batch 64 on the fast path (``studylib.recipes.fastpath``: activations out of place,
contiguous tensors); the grid's first runs trained under bf16 autocast at batch 128 (channels_last). The speed
benchmark (``benchmarks.bench_finetune --check-steps 300``) compares their losses over 300 steps; this check trains
whole runs: per init, the first step for ``--epochs`` full epochs (50,000 images, its own cosine schedule) at the
learning rate the recipe's training-budget runs of that length use, beside those runs (today's step, every seed
finished). The first step's runs are keyed runs of the finetune recipe with its precision and batch size
overridden (shipped like any run), trained on today's engine path (memory layout and out-of-place activations
change speed, not values); the recipe's are the budget points of notebook 12.

A first-step run is "within the seed spread" when its test accuracy differs from the mean of today's seeds by no
more than today's seeds differ from each other (max - min). Also printed: seconds per epoch of both, measured by the
runs themselves (the end-to-end speed ratio of the two steps on the machine that trained them).

    python -m benchmarks.check_finetune_equivalence                  # trains 2 runs: ~20 min on 2 AMD cores
    python -m benchmarks.check_finetune_equivalence --no-train       # the table from finished runs only

Writes benchmarks/results/finetune_equivalence-<cpu>-<UTC date>.json.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np

from benchmarks import timing
from studylib import runtime
from studylib.recipes import finetune

FIRST_STEP = {"precision": "bf16", "batch_size": 128}  # the grid's first runs (shipped; config.RECIPES["finetune"])


def seconds_per_epoch(run) -> float:
    with open(run.path("history.csv")) as f:
        return float(np.median([float(r["seconds"]) for r in csv.DictReader(f)]))


def summary(run) -> dict:
    m = run.metrics
    return {"run": run.id, "seed": m["seed"], "test_acc": m["test_acc"], "precision": m["precision"],
            "batch": run.key["recipe"]["batch_size"], "steps": m["steps"], "seconds_per_epoch": seconds_per_epoch(run),
            "cpu": m["environment"]["cpu"], "engine_path": m.get("engine_path")}


def check(epochs: int, seeds: list[int], train: bool, data_dir=None) -> list[dict]:
    budget = finetune.budget_jobs("full", data_dir=data_dir, train=False)
    out = []
    for init in finetune.INITS:
        today = [j.run for j in budget.get((init, epochs), []) if j.run.done]
        if not today:
            print(f"{init}: no finished {epochs}-epoch budget run (python -m studylib.recipes.finetune --only budget "
                  f"--inits {init} --epochs {epochs}); skipped")
            continue
        lr = today[0].key["recipe"]["optimizer"]["lr"]
        first = []
        for seed in seeds:
            job = finetune.job(init, "full", seed=seed, lr=lr, epochs=epochs, data_dir=data_dir, **FIRST_STEP)
            run = job.ensure(train=train)
            if run.done:
                first.append(run)
        today_runs = [summary(r) for r in today]
        acc = np.array([r["test_acc"] for r in today_runs])
        spread = float(acc.max() - acc.min())
        today_epoch_s = float(np.median([r["seconds_per_epoch"] for r in today_runs]))
        for run in first:
            one = summary(run)
            diff = one["test_acc"] - float(acc.mean())
            out.append({"init": init, "epochs": epochs, "lr": lr, "today": today_runs, "first_step": one,
                        "today_mean": float(acc.mean()), "today_spread": spread, "difference": diff,
                        "within_seed_spread": abs(diff) <= spread,
                        "epoch_time_ratio": one["seconds_per_epoch"] / today_epoch_s})
            print(f"{init}, {epochs} epochs at lr {lr:g}: first step (bf16, batch 128) seed {run.metrics['seed']} "
                  f"{100 * run.metrics['test_acc']:.2f}%; today's step (fp32, batch 64) {len(today)} seeds "
                  f"{', '.join(f'{100 * a:.2f}' for a in acc)}% (mean {100 * acc.mean():.2f}, spread "
                  f"{100 * spread:.2f} pts): difference {100 * diff:+.2f} pts, "
                  f"{'within' if abs(diff) <= spread else 'OUTSIDE'} the seed spread; seconds per epoch "
                  f"{out[-1]['epoch_time_ratio']:.2f}x today's")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="a training-budget length with finished runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the first-step runs")
    ap.add_argument("--no-train", action="store_true", help="report finished runs only")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    rows = check(args.epochs, args.seeds, not args.no_train, args.data_dir)
    payload = {"epochs": args.epochs, "first_step": FIRST_STEP, "rule": "within the seed spread: |first-step test "
               "accuracy - mean of today's seeds| <= max - min of today's seeds", "checks": rows,
               "environment": runtime.environment()}
    path = timing.write_results("finetune_equivalence", payload, limits={})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
